import Glibc
import ShmLRU
import Testing

/// /proc/sys/vm/overcommit_memory (0 heuristic, 1 always, 2 never), or -1.
func overcommitPolicy() -> Int {
    guard let file = fopen("/proc/sys/vm/overcommit_memory", "r") else { return -1 }
    defer { fclose(file) }
    var value: Int32 = -1
    return withUnsafeMutablePointer(to: &value) { pointer in
        withVaList([pointer]) { vfscanf(file, "%d", $0) } == 1 ? Int(pointer.pointee) : -1
    }
}

/// Issue 2: `ShmRegion` — create/attach, typed views, errors, attach counts, cleanup.
@Suite struct RegionTests {
    // MARK: Create, attach, typed views

    @Test func createAttachAndSize() throws {
        try withKey { key in
            let region = try ShmRegion.create(key: key, count: 1_000, of: Float.self)
            #expect(region.key == key)
            #expect(region.byteCount == 4_000)
            #expect(region.count(of: Float.self) == 1_000)
            #expect(region.count(of: Double.self) == 500)
            #expect(region.count(of: UInt8.self) == 4_000)
            #expect(!region.isReadOnly)
            #expect(region.isAttached)
            #expect(ShmRegion.exists(key: key))
            let same = try ShmRegion.attach(key: key)
            #expect(same.id == region.id)
            #expect(same.byteCount == 4_000)  // the seed's getSegmentSize
            let readOnly = try ShmRegion.attach(key: key, readOnly: true)
            #expect(readOnly.isReadOnly)
            // A fresh segment is zero-filled.
            #expect(try readOnly.withUnsafeBufferPointer(of: UInt8.self) { $0.allSatisfy { $0 == 0 } })
        }
    }

    /// Every element kind of shm-typed-array (and the 64-bit integers), written
    /// through one attachment and read through another.
    @Test func typedViewsRoundTrip() throws {
        func roundTrip<T: ShmElement & Equatable>(_ type: T.Type, _ values: [T]) throws {
            try withKey { key in
                let writer = try ShmRegion.create(key: key, count: values.count, of: T.self)
                #expect(writer.count(of: T.self) == values.count)
                try writer.withUnsafeMutableBufferPointer(of: T.self) { buffer in
                    #expect(buffer.count == values.count)
                    for (i, value) in values.enumerated() { buffer[i] = value }
                }
                let reader = try ShmRegion.attach(key: key, readOnly: true)
                let read = try reader.withUnsafeBufferPointer(of: T.self) { Array($0) }
                #expect(read == values, "\(T.shmTypeName)")
                let array = reader.array(of: T.self)
                #expect(Array(array) == values, "\(T.shmTypeName) through ShmArray")
                #expect(array.count == values.count)
                #expect(try array.element(at: values.count - 1) == values.last!)
                // ShmArray writes, read back through the other attachment.
                let writable = writer.array(of: T.self)
                writable[0] = values[values.count - 1]
                try writable.setElement(values[0], at: values.count - 1)
                #expect(array[0] == values[values.count - 1])
                #expect(array[values.count - 1] == values[0])
            }
        }
        try roundTrip(UInt8.self, [0, 1, 127, 128, 255])
        try roundTrip(Int8.self, [-128, -1, 0, 1, 127])
        try roundTrip(Int16.self, [.min, -1, 0, 1, .max])
        try roundTrip(UInt16.self, [0, 1, 0x8000, .max])
        try roundTrip(Int32.self, [.min, -1, 0, 1, .max])
        try roundTrip(UInt32.self, [0, 1, 0x8000_0000, .max])
        try roundTrip(Float.self, [-1.5, 0, 10, .greatestFiniteMagnitude, .infinity])
        try roundTrip(Double.self, [-1.5, 0, 10, .pi, -.infinity])
        try roundTrip(Int64.self, [.min, -1, 0, .max])
        try roundTrip(UInt64.self, [0, 1, .max])
    }

    @Test func rawBytesViews() throws {
        try withKey { key in
            let region = try ShmRegion.create(key: key, byteCount: 10)
            try region.withUnsafeMutableBytes { bytes in
                #expect(bytes.count == 10)
                for i in 0..<10 { bytes[i] = UInt8(i * 3) }
            }
            let other = try ShmRegion.attach(key: key)
            #expect(other.withUnsafeBytes { Array($0) } == (0..<10).map { UInt8($0 * 3) })
            // The UInt8 view of a 10-byte region has 10 elements, the Int32 view 2 (whole elements only).
            #expect(other.count(of: Int32.self) == 2)
            #expect(try other.withUnsafeBufferPointer(of: Int32.self) { $0.count } == 2)
        }
    }

    // MARK: Between real processes

    /// Issue 2's "done when": a second process reads a Float written by the first.
    @Test func floatWrittenByOneProcessIsReadByAnother() throws {
        try withKey { key in
            let region = try ShmRegion.create(key: key, count: 16, of: Float.self)
            // helper process -> helper process and this process
            let write = try runHelper(["region-write-float", key.description, "5", "2.75"])
            #expect(write.status == 0, "\(write.errorOutput)")
            let read = try runHelper(["region-read-float", key.description, "5"])
            #expect(read.status == 0, "\(read.errorOutput)")
            #expect(read.values["value"] == "2.75")
            #expect(try region.array(of: Float.self).element(at: 5) == 2.75)
            // this process -> helper process
            region.array(of: Float.self)[9] = -1234.5
            let read2 = try runHelper(["region-read-float", key.description, "9"])
            #expect(read2.values["value"] == "-1234.5", "\(read2.errorOutput)")
            // The helper reports a bad index as an error, and writes nothing.
            let bad = try runHelper(["region-write-float", key.description, "16", "1"])
            #expect(bad.status == 1)
            #expect(bad.errorOutput.contains("invalidArgument"), "\(bad.errorOutput)")
        }
    }

    // MARK: Errors

    @Test func createOfAnExistingKeyFails() throws {
        try withKey { key in
            let region = try ShmRegion.create(key: key, byteCount: 64)
            let error = expectShmError(.exists) { _ = try ShmRegion.create(key: key, byteCount: 64) }
            #expect(error?.errno == EEXIST)
            #expect(error?.operation.contains("create") == true)
            // Nothing changed: the segment is the original one, still 64 bytes.
            #expect(try ShmRegion.attach(key: key).id == region.id)
            expectShmError(.exists) { _ = try ShmLRU.create(key: key, recordSize: 8, capacity: 4) }
        }
    }

    @Test func attachOfAMissingKeyFails() throws {
        let key = uniqueKey()
        let error = expectShmError(.notFound) { _ = try ShmRegion.attach(key: key) }
        #expect(error?.errno == ENOENT)
        #expect(error?.operation.contains("attach") == true)
        expectShmError(.notFound) { _ = try ShmRegion.attach(key: key, readOnly: true) }
        expectShmError(.notFound) { _ = try ShmLRU.attach(key: key) }
        expectShmError(.notFound) { try ShmRegion.remove(key: key) }
        #expect(!ShmRegion.exists(key: key))
    }

    @Test func invalidSizes() throws {
        let key = uniqueKey()
        defer { try? ShmRegion.remove(key: key) }
        expectShmError(.invalidSize) { _ = try ShmRegion.create(key: key, byteCount: 0) }
        expectShmError(.invalidSize) { _ = try ShmRegion.create(key: key, byteCount: -1) }
        expectShmError(.invalidSize) { _ = try ShmRegion.create(key: key, count: 0, of: Float.self) }
        expectShmError(.invalidSize) { _ = try ShmRegion.create(key: key, count: -5, of: Double.self) }
        // Over the limit: one element more than maxCount, and a byte count the kernel refuses.
        expectShmError(.invalidSize) {
            _ = try ShmRegion.create(key: key, count: ShmRegion.maxCount(of: Double.self) + 1, of: Double.self)
        }
        // Int.max bytes pass shmmax here (it is larger still), and the kernel refuses the
        // memory (ENOMEM) — unless it overcommits without limit (vm.overcommit_memory = 1).
        if overcommitPolicy() != 1 {
            let error = expectShmError(.invalidSize) { _ = try ShmRegion.create(key: key, byteCount: Int.max) }
            #expect(error?.errno != nil)
        }
        #expect(!ShmRegion.exists(key: key), "a refused create leaves nothing")
    }

    @Test func limits() {
        #expect(ShmRegion.maxByteCount > 0)
        #expect(ShmRegion.maxCount(of: UInt8.self) == ShmRegion.maxByteCount)
        #expect(ShmRegion.maxCount(of: Float.self) == ShmRegion.maxByteCount / 4)
        #expect(ShmRegion.maxCount(of: Double.self) == ShmRegion.maxByteCount / 8)
        #expect(Shm.LengthMax == ShmRegion.maxByteCount)
    }

    @Test func keyZeroAndBadArguments() throws {
        expectShmError(.invalidArgument) { _ = try ShmRegion.create(key: 0, byteCount: 64) }
        expectShmError(.invalidArgument) { _ = try ShmRegion.attach(key: 0) }
        expectShmError(.invalidArgument) { try ShmRegion.remove(key: 0) }
        expectShmError(.invalidArgument) { _ = try ShmLRU.create(key: 0, recordSize: 8, capacity: 4) }
        #expect(!ShmRegion.exists(key: 0))
        let key = uniqueKey()
        defer { try? ShmRegion.remove(key: key) }
        expectShmError(.invalidArgument) { _ = try ShmRegion.create(key: key, byteCount: 64, permissions: 0o1777) }
        #expect(!ShmRegion.exists(key: key))
    }

    @Test func writesThroughAReadOnlyAttachmentFail() throws {
        try withKey { key in
            let writer = try ShmRegion.create(key: key, count: 4, of: Int32.self)
            writer.array(of: Int32.self)[2] = 77
            let reader = try ShmRegion.attach(key: key, readOnly: true)
            expectShmError(.readOnly) { try reader.withUnsafeMutableBytes { $0[0] = 1 } }
            expectShmError(.readOnly) { try reader.withUnsafeMutableBufferPointer(of: Int32.self) { $0[0] = 1 } }
            expectShmError(.readOnly) { try reader.array(of: Int32.self).setElement(1, at: 0) }
            expectShmError(.readOnly, "an LRU needs a read-write attachment") { _ = try ShmLRU(attaching: reader) }
            expectShmError(.readOnly) { _ = try ShmLRU(initializing: reader, recordSize: 4) }
            // Nothing was written; reads work.
            #expect(try reader.withUnsafeBufferPointer(of: Int32.self) { Array($0) } == [0, 0, 77, 0])
            #expect(try reader.array(of: Int32.self).element(at: 2) == 77)
        }
    }

    @Test func useAfterDetachFails() throws {
        try withKey { key in
            let region = try ShmRegion.create(key: key, count: 8, of: UInt16.self)
            let peer = try ShmRegion.attach(key: key)
            let array = region.array(of: UInt16.self)
            #expect(try region.detach() == 1)  // the peer attachment remains
            #expect(!region.isAttached)
            expectShmError(.detached) { try region.withUnsafeBufferPointer(of: UInt16.self) { _ in } }
            expectShmError(.detached) { try region.withUnsafeMutableBufferPointer(of: UInt16.self) { _ in } }
            expectShmError(.detached) { try region.withUnsafeMutableBytes { _ in } }
            expectShmError(.detached) { _ = try array.element(at: 0) }
            expectShmError(.detached) { try array.setElement(1, at: 0) }
            expectShmError(.detached) { _ = try ShmLRU(initializing: region, recordSize: 4) }
            expectShmError(.detached) { _ = try ShmLRU(attaching: region) }
            #expect(array.isEmpty, "a detached view has no elements")
            #expect(region.withUnsafeBytes { $0.count } == 0, "a detached region lends no bytes")
            // Detaching again changes nothing and reports the count.
            #expect(try region.detach() == 1)
            #expect(try peer.detach() == 0)
        }
    }

    @Test func elementIndexOutOfRange() throws {
        try withKey { key in
            let region = try ShmRegion.create(key: key, count: 3, of: Float.self)
            let array = region.array(of: Float.self)
            expectShmError(.invalidArgument) { _ = try array.element(at: 3) }
            expectShmError(.invalidArgument) { _ = try array.element(at: -1) }
            expectShmError(.invalidArgument) { try array.setElement(1, at: 3) }
            expectShmError(.invalidArgument) { try array.setElement(1, at: Int.min) }
            #expect(Array(array) == [0, 0, 0])
        }
    }

    /// Tests run as root, which SysV permissions do not stop: the helper drops to
    /// nobody (65534) before it touches a segment created with mode 0600.
    @Test func permissionDenied() throws {
        try withKey { key in
            _ = try ShmLRU.create(key: key, recordSize: 16, capacity: 4)
            #expect(kernelSegment(key)?.mode == 0o600)
            let run = try runHelper(["region-attach-as-nobody", key.description])
            #expect(run.status == 0, "\(run.errorOutput)")
            #expect(run.values["uid"] == "65534")
            #expect(run.values["attach"] == "permissionDenied")
            #expect(run.values["attachReadOnly"] == "permissionDenied")
            #expect(run.values["lruAttach"] == "permissionDenied")
            #expect(run.values["remove"] == "permissionDenied")
            #expect(run.values["errno"] == String(EACCES))
            #expect(run.values["operation"]?.contains(key.description) == true)
            #expect(ShmRegion.exists(key: key), "the refused remove removed nothing")
        }
    }

    /// A segment created with 0644 lets others read: nobody may attach read-only.
    @Test func permissionsAreTheCallersWhenAsked() throws {
        try withKey { key in
            _ = try ShmRegion.create(key: key, byteCount: 128, permissions: 0o644)
            #expect(kernelSegment(key)?.mode == 0o644)
            let run = try runHelper(["region-attach-as-nobody", key.description])
            #expect(run.status == 0, "\(run.errorOutput)")
            #expect(run.values["attach"] == "permissionDenied")
            #expect(run.values["attachReadOnly"] == "none")
        }
    }

    @Test func defaultModeIs0600() throws {
        try withKey { key in
            let region = try ShmRegion.create(key: key, byteCount: 100)
            let listed = try #require(kernelSegment(key))
            #expect(listed.mode == 0o600)
            #expect(listed.size == 100)
            #expect(listed.id == region.id)
            #expect(listed.attachCount == 1)
        }
        let random = try ShmRegion.create(byteCount: 100)
        defer { try? random.remove() }
        #expect(kernelSegment(random.key)?.mode == 0o600)
    }

    // MARK: Keys

    @Test func ftokKeys() throws {
        let path = "/tmp/shmlru-ftok-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(path, O_CREAT | O_WRONLY, 0o600)
        #expect(fd >= 0)
        close(fd)
        defer { unlink(path) }
        let a = try ShmKey(path: path, id: 7)
        let b = try ShmKey(path: path, id: 7)
        let c = try ShmKey(path: path, id: 8)
        #expect(a == b, "one path and id give one key")
        #expect(a != c, "another id gives another key")
        #expect(a.rawValue == ftok(path, 7), "the key is ftok's")
        #expect(!a.isPrivate)
        defer { try? ShmRegion.remove(key: a) }
        let region = try ShmRegion.create(key: a, byteCount: 64)
        #expect(try ShmRegion.attach(key: b).id == region.id)
        // Errors: a missing path, id 0.
        expectShmError(.notFound) { _ = try ShmKey(path: path + "-missing", id: 1) }
        expectShmError(.invalidArgument) { _ = try ShmKey(path: path, id: 0) }
        // Parsing as the tools print keys.
        #expect(ShmKey(parsing: a.description) == a)
        #expect(ShmKey(parsing: "42") == ShmKey(42))
        #expect(ShmKey(parsing: "0x2A") == ShmKey(42))
        #expect(ShmKey(parsing: "-1") == ShmKey(0xFFFF_FFFF))
        #expect(ShmKey(parsing: "nonsense") == nil)
    }

    @Test func randomKeys() throws {
        let a = try ShmRegion.create(byteCount: 64)
        defer { try? a.remove() }
        let b = try ShmRegion.create(count: 4, of: Double.self)
        defer { try? b.remove() }
        #expect(!a.key.isPrivate)
        #expect(a.key != b.key)
        #expect(ShmRegion.exists(key: a.key))
        #expect(try ShmRegion.attach(key: b.key).byteCount == 32)
        let cache = try ShmLRU.create(recordSize: 8, capacity: 2)
        defer { try? cache.region.remove() }
        #expect(!cache.key.isPrivate)
        #expect(try ShmLRU.attach(key: cache.key).capacity == 2)
    }

    // MARK: Attach counts, detach, remove

    /// The kernel's attach count, across processes: the helper attaches twice and
    /// detaches both; each detach reports what remains (this process's included).
    @Test func detachReturnsTheRemainingAttachCount() throws {
        try withKey { key in
            let region = try ShmRegion.create(key: key, byteCount: 4096)
            #expect(try region.attachCount == 1)
            let run = try runHelper(["region-detach-counts", key.description])
            #expect(run.status == 0, "\(run.errorOutput)")
            #expect(run.values["afterFirstAttach"] == "2")
            #expect(run.values["afterSecondAttach"] == "3")
            #expect(run.values["firstDetach"] == "2")
            #expect(run.values["secondDetachAgain"] == "2")
            #expect(run.values["lastDetach"] == "1")
            #expect(try region.attachCount == 1)
            // The creator's last detach destroys it: 0, and the key is free again.
            #expect(try region.detach() == 0)
            #expect(!ShmRegion.exists(key: key))
        }
    }

    /// A peer holding the segment keeps it alive across the creator's detach.
    @Test func detachWhileAPeerHoldsIt() throws {
        try withKey { key in
            let region = try ShmRegion.create(key: key, byteCount: 4096)
            let holder = try spawnHelper(["region-hold", key.description])
            defer {
                holder.kill(SIGKILL)
                _ = holder.wait()
            }
            var ready = false
            while let line = holder.readLine() {
                if line == "attachCount=2" { ready = true }
                if line == "ready=1" { break }
            }
            #expect(ready)
            #expect(try region.attachCount == 2)
            #expect(try region.detach() == 1)
            #expect(ShmRegion.exists(key: key), "the peer still uses it")
            holder.kill(SIGKILL)
            let run = holder.wait()
            #expect(run.status == 128 + SIGKILL)
            // The kernel detached the killed holder.
            #expect(kernelSegment(key)?.attachCount == 0)
        }
    }

    /// No leak: a creator that detaches while a peer is attached, then exits
    /// normally, still removes its segment (the peer keeps its mapping until it detaches).
    @Test func creatorThatDetachedEarlyStillRemovesAtExit() throws {
        try withKey { key in
            let creator = try spawnHelper(["region-create-detach-exit", key.description, "4096"])
            var ready = false
            while let line = creator.readLine() {
                if line == "ready=1" {
                    ready = true
                    break
                }
            }
            #expect(ready)
            let peer = try ShmRegion.attach(key: key)
            #expect(try peer.attachCount == 2)
            peer.array(of: UInt8.self)[0] = 1  // tell the creator to detach and exit
            let run = creator.wait()
            #expect(run.status == 0, "\(run.errorOutput)")
            #expect(run.values["remaining"] == "1", "the creator's detach counts the peer")
            #expect(!ShmRegion.exists(key: key), "the creator removed its segment at exit")
            // The peer's mapping still works until it detaches.
            peer.array(of: UInt8.self)[1] = 9
            #expect(peer.array(of: UInt8.self)[1] == 9)
            #expect(try peer.detach() == 0)
        }
    }

    @Test func removeFreesTheKeyAtOnce() throws {
        try withKey { key in
            let region = try ShmRegion.create(key: key, byteCount: 64)
            let other = try ShmRegion.attach(key: key)
            try region.remove()
            #expect(!ShmRegion.exists(key: key))
            expectShmError(.notFound) { _ = try ShmRegion.attach(key: key) }
            // Still mapped by both until they detach.
            region.array(of: UInt8.self)[3] = 42
            #expect(other.array(of: UInt8.self)[3] == 42)
            try region.remove()  // twice: nothing to do
            // The key may be used again at once.
            let fresh = try ShmRegion.create(key: key, byteCount: 32)
            #expect(fresh.id != region.id)
            #expect(fresh.array(of: UInt8.self)[3] == 0)
        }
    }

    /// detachAll and totalSize are process-wide, so they are checked in a helper
    /// process (this one runs other tests in parallel).
    @Test func detachAllAndTotalSize() throws {
        try withKey { key1 in
            try withKey { key2 in
                let run = try runHelper(["region-detach-all", key1.description, key2.description])
                #expect(run.status == 0, "\(run.errorOutput)")
                let v = run.values
                #expect(v["totalBefore"] == "0")
                #expect(v["totalAttached"] == String(4096 + 3 * 4096 + 4096))
                #expect(v["detached"] == "3")
                #expect(v["totalAfter"] == "0")
                #expect(v["aAttached"] == "false")
                #expect(v["bAttached"] == "false")
                #expect(v["againAttached"] == "false")
                #expect(v["exists1"] == "false", "detachAll removes what the process created")
                #expect(v["exists2"] == "true", "but not a persistent segment")
                #expect(v["detachedAgain"] == "0")
                #expect(ShmRegion.exists(key: key2))
            }
        }
    }

    // MARK: Cleanup at exit

    @Test func createdSegmentIsRemovedAtNormalExit() throws {
        try withKey { key in
            let run = try runHelper(["region-create", key.description, "8192"])
            #expect(run.status == 0, "\(run.errorOutput)")
            #expect(run.values["id"] != nil)
            #expect(!ShmRegion.exists(key: key))
        }
    }

    @Test func persistentSegmentStays() throws {
        try withKey { key in
            let run = try runHelper(["region-create", key.description, "8192", "persistent"])
            #expect(run.status == 0, "\(run.errorOutput)")
            #expect(ShmRegion.exists(key: key))
            #expect(kernelSegment(key)?.attachCount == 0)
            #expect(try ShmRegion.attach(key: key).byteCount == 8192)
            try ShmRegion.remove(key: key)
            #expect(!ShmRegion.exists(key: key))
        }
    }

    /// SIGKILL runs no exit handler: the segment survives its creator (as the README
    /// says), and is listed and removed by key.
    @Test func sigkilledCreatorLeavesItsSegment() throws {
        try withKey { key in
            let creator = try spawnHelper(["region-create-hold", key.description, "4096"])
            var ready = false
            while let line = creator.readLine() {
                if line == "ready=1" {
                    ready = true
                    break
                }
            }
            #expect(ready)
            creator.kill(SIGKILL)
            let run = creator.wait()
            #expect(run.status == 128 + SIGKILL)
            #expect(ShmRegion.exists(key: key))
            #expect(kernelSegment(key)?.attachCount == 0)
            try ShmRegion.remove(key: key)
            #expect(!ShmRegion.exists(key: key))
        }
    }
}
