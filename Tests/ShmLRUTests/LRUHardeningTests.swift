import CShm
import Glibc
@testable import ShmLRU
import ShmLRUTestSupport
import Testing

/// Regression tests for issue 11 on the cache and its handles: each test is
/// named after its finding and failed on the code before the fix.
@Suite(.serialized) struct LRUHardeningTests {
    /// Finding 4: a writer stopped (SIGSTOP) inside its critical section, with
    /// the index sequence odd (mid-delete) or a record's sequence odd (mid-write),
    /// made every lock-free read wait out the lock timeout and throw. Now a read
    /// never waits for the lock: it answers (a hit, or at worst a miss). The
    /// writer is a helper stopped at a fault-injection point; the cache here has a
    /// 3 s lock timeout, and every read must return without `.lockTimeout`.
    @Test(arguments: [("index.shifting", "remove"), ("record.torn", "set")])
    func stoppedWriterDoesNotMakeLockFreeReadsWait(point: String, operation: String) throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 64, capacity: 16, index: .shared)
            for hash: UInt32 in 1...8 { try cache.set(hash, encodeValue(hash: hash, version: 1, length: 24)) }
            let arguments = operation == "set" ? ["set", "2", "9", "40"] : ["remove", "2"]
            let writer = try spawnHelper(["rel-op", key.description, "\(point)@1:stop"] + arguments)
            defer {
                writer.kill(SIGKILL)
                _ = writer.wait()
            }
            #expect(eventually(timeout: .seconds(30)) { processState(writer.pid) == "T" }, "the writer never stopped at \(point)")
            let reader = try ShmLRU.attach(
                key: key, options: .init(promotion: .atMostEvery(.milliseconds(5)), lockTimeout: .seconds(3)))
            var hits = 0
            for round in 0..<3 {
                for hash: UInt32 in 1...8 {
                    do {
                        if let bytes = try reader.bytes(hash) {
                            #expect(decodeValue(bytes, hash: hash) != nil, "round \(round): hash \(hash) read torn")
                            hits += 1
                        }
                    } catch {
                        Issue.record("\(point): a lock-free read of \(hash) threw \(error) while the writer is stopped")
                    }
                }
            }
            // Mid-write of one record, the others are not moving: they still hit.
            if point == "record.torn" { #expect(hits >= 3 * 7, "\(hits) hits") }
        }
    }

    /// Finding 5: `detach()` racing an operation of another thread used to unmap
    /// the segment under it (SIGSEGV). Now the handle is marked detached first
    /// (later operations throw `.detached`), locked operations in flight are
    /// waited for, and the mapping is replaced by zero pages, never left unmapped.
    /// A helper races two threads against a detach, 150 rounds for each kind.
    @Test(arguments: ["exact", "interval", "store"])
    func detachRacingOperationsDoesNotReadUnmappedMemory(kind: String) throws {
        try withStoreKey { key in
            var keep: AnyObject
            if kind == "store" {
                keep = try ShmStore.create(key: key, configuration: .init(capacity: 64, recordSize: 64))
            } else {
                keep = try ShmLRU.create(key: key, recordSize: 64, capacity: 64, index: .shared)
            }
            defer { _ = keep }
            let run = try runHelper(["detach-race", key.description, kind, relStress ? "1000" : "150"])
            #expect(run.status == 0, "status \(run.status): \(run.errorOutput.prefix(2000))")
            #expect(run.values["rounds"] != nil)
        }
    }

    /// Finding 5, listeners: `ShmRegion.detachAll()` detaches a store behind its
    /// back; its pump notices, ends the listeners, and never reads unmapped memory
    /// (in a helper: detachAll detaches everything of its process).
    @Test func detachAllEndsListenersWithoutUnmappingUnderThePump() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 16, recordSize: 64))
            defer { try? store.detach() }
            let run = try runHelper(["store-listen-detach-all", key.description])
            #expect(run.status == 0, "status \(run.status): \(run.errorOutput)")
            #expect(run.values["ended"] == "1")
            #expect(run.values["afterwards"] == "detached")
        }
    }

    /// Finding 8: a forged mutex owner (0x7ffffffe in the lock's owner word)
    /// bricked the cache: every call failed, the next ones with a misleading
    /// EDEADLK, and `repair()` could not run. The cache's lock is now
    /// `_SegmentLock`: an owner word naming no live thread (0x7ffffffe, a thread
    /// that cannot exist) is taken over by the next locker, which rebuilds the
    /// structure; a live holder is never overridden (a clear `.lockTimeout`).
    @Test func forgedMutexOwnerDoesNotBrickTheCache() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 64, capacity: 8, options: .init(lockTimeout: .seconds(1)))
            try cache.set(1, "one")
            let word = (cache.region._attachment.base + _Layout.H.lock).assumingMemoryBound(to: UInt64.self)
            for forged: UInt64 in [0x7fff_fffe, 0x3fff_fff0, 0xFFFF_FFFF_7fff_fffe] {
                cshm_store_release_u64(word, forged)
                try cache.set(2, "two")  // taken over and repaired, not refused
                #expect(try cache.string(1) == "one", "forged \(forged)")
                #expect(try cache.verify().isClean, "forged \(forged)")
            }
            try cache.repair()
            #expect(try cache.verify().isClean)

            // A live holder (a helper inside withValue) is not overridden by repair().
            let holder = try spawnHelper(["lru-hold-lock", key.description, "1"])
            defer {
                holder.kill(SIGKILL)
                _ = holder.wait()
            }
            #expect(holder.readLine() == "value=one")
            #expect(holder.readLine() == "ready=1")
            expectError(.lockTimeout) { try cache.repair() }
            holder.kill(SIGKILL)
            _ = holder.wait()
            try cache.repair()
            #expect(try cache.string(2) == "two")
        }
    }

    /// Finding 9: attach trusted a segment planted by another user (a 0666
    /// segment of `nobody` at an application's key). Now attach refuses a
    /// segment whose owner is neither this user nor root, unless that owner is
    /// named. Needs root (to give a segment to uid 65534 with IPC_SET).
    @Test(.enabled(if: geteuid() == 0, "only root can hand a segment to another user"))
    func attachRefusesASegmentOwnedByAnotherUser() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64), permissions: 0o666)
            defer { try? store.detach() }
            try store.set("planted", 1)
            for segment in [store.key, store.cache.key] { try giveSegment(segment, to: 65534) }
            do throws(ShmError) {
                _ = try ShmRegion.attach(key: key)
                Issue.record("attached a segment of uid 65534")
            } catch {
                #expect(error.code == .permissionDenied && error.detail?.contains("65534") == true, "\(error)")
            }
            expectError(.permissionDenied) { _ = try ShmLRU.attach(key: store.cache.key) }
            expectError(.permissionDenied) { _ = try ShmStore.attach(key: key) }
            // Named, it is accepted.
            let trusted = try ShmStore.attach(key: key, allowingOwner: 65534)
            #expect(try trusted.get("planted", as: Int.self) == 1)
            try trusted.detach()
            let region = try ShmRegion.attach(key: key, allowingOwner: 65534)
            _ = try region.detach()
            // Read-only inspection (shm-lru list/stat) still reads it.
            #expect(try ShmLRU.probe(key: store.cache.key).recordSize == 64)
            relReport("a store given to uid 65534: attach refused, accepted with allowingOwner: 65534")
        }
    }
}

/// Gives a segment to another user (root only): `shmctl(IPC_SET)` of its owner uid.
func giveSegment(_ key: ShmKey, to uid: uid_t) throws {
    let id = shmget(key.rawValue, 0, 0)
    guard id >= 0 else { throw ShmError(.systemCall, "shmget", errno: errno) }
    var info = shmid_ds()
    guard shmctl(id, IPC_STAT, &info) == 0 else { throw ShmError(.systemCall, "shmctl(IPC_STAT)", errno: errno) }
    info.shm_perm.uid = uid
    guard shmctl(id, IPC_SET, &info) == 0 else { throw ShmError(.systemCall, "shmctl(IPC_SET)", errno: errno) }
}

/// The state letter of a process (/proc/PID/stat): R, S, T (stopped)…
func processState(_ pid: pid_t) -> Character? {
    guard let file = fopen("/proc/\(pid)/stat", "r") else { return nil }
    defer { fclose(file) }
    var buffer = [CChar](repeating: 0, count: 512)
    guard fgets(&buffer, Int32(buffer.count), file) != nil else { return nil }
    let line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    guard let close = line.lastIndex(of: ")") else { return nil }
    return line[line.index(after: close)...].first { $0 != " " }
}
