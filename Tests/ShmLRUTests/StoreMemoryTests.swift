import CShm
import Glibc
@testable import ShmLRU
import ShmLRUTestSupport
import Testing

/// Stores sized by memory (`Configuration(memory:maxValueSize:)`): values of any
/// size, chained over the value heap's chunks; eviction that makes exactly the
/// room needed; lock-free reads of large values that are never torn; recovery
/// after a writer killed inside a large write; hostile heap bytes.
@Suite("Store sized by memory", .serialized)
struct StoreMemoryTests {
    static let mib = 1 << 20

    /// Bytes of a self-describing value of key `id` (at least 12 bytes: smaller lengths are raw bytes).
    func value(_ id: UInt32, _ version: UInt32, _ length: Int) -> [UInt8] {
        length < 12 ? [UInt8](repeating: UInt8(truncatingIfNeeded: id), count: length) : encodeValue(hash: id, version: version, length: length)
    }

    func heap(_ store: ShmStore) -> _ValueHeap { store._heap! }

    @Test("every size round-trips, in this process and another: 0 B to maxValueSize")
    func sizes() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(memory: 48 * Self.mib, maxValueSize: 16 * Self.mib))
            let inline = ShmStore.Configuration.memoryRecordSize - 24 - 2  // key "s0" is 2 bytes
            let sizes = [0, 1, 12, inline, inline + 1, 1008, 1009, 2016, 2017, 64 * 1024, Self.mib, 16 * Self.mib]
            for (index, size) in sizes.enumerated() {
                let name = "s" + String(UnicodeScalar(UInt8(97 + index)))
                #expect(name.utf8.count == 2)
                let bytes = value(UInt32(index), 1, size)
                try store.set(name, bytes: bytes)
                let read = try store.bytes(name)
                #expect(read?.count == size && read == bytes, "size \(size)")
                var buffer = [UInt8](repeating: 0, count: size + 1)
                #expect(try buffer.withUnsafeMutableBytes { try store.bytes(name, into: $0) } == size)
                #expect(buffer[0..<size].elementsEqual(bytes), "size \(size) into a buffer")
                if size >= 12 {
                    let run = try runHelper(["mem-check", key.description, name, "\(index)", "\(size)"])
                    #expect(run.status == 0 && run.values["version"] == "1", "size \(size): \(run.errorOutput)")
                }
                if size < 2016 { #expect(try store.contains(name)) }
            }
            let report = try store.verify()
            #expect(report.isClean, "\(report.problems)")
            let usage = try store.memoryUsage()
            #expect(usage.entries == sizes.count)
            #expect(usage.liveBytes == sizes.reduce(0, +) + 2 * sizes.count)
            #expect(usage.budgetBytes == 48 * Self.mib)
            #expect(usage.segmentBytes <= usage.budgetBytes)
            let spilled = sizes.filter { $0 > inline }.map { _ValueHeap.chunks(for: $0) }.reduce(0, +)
            #expect(usage.heapChunks - usage.freeHeapChunks == spilled)
            // Replacing each by a small value frees every chunk.
            for index in sizes.indices { try store.set("s" + String(UnicodeScalar(UInt8(97 + index))), bytes: [1, 2, 3]) }
            #expect(try store.memoryUsage().freeHeapChunks == usage.heapChunks)
            #expect(try store.verify().isClean)
        }
    }

    @Test("a value over maxValueSize, or a key too long, is .valueTooLarge and changes nothing")
    func tooLarge() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(memory: 4 * Self.mib, maxValueSize: 64 * 1024))
            let old = value(1, 1, 5000)
            try store.set("k", bytes: old)
            let before = try store.memoryUsage()
            expectError(.valueTooLarge) { try store.set("k", bytes: [UInt8](repeating: 1, count: 64 * 1024 + 1)) }
            expectError(.valueTooLarge) { try store.set(String(repeating: "x", count: 209), bytes: [1]) }
            try store.set(String(repeating: "y", count: 208), bytes: value(2, 1, 3000))
            do { let same = try store.bytes("k") == old; #expect(same, "try store.bytes('k') differs") }
            #expect(try store.memoryUsage().freeHeapChunks == before.freeHeapChunks - _ValueHeap.chunks(for: 3000))
            #expect(store.count == 2)
        }
    }

    @Test("every way an entry goes frees its chunks: remove, update to nil, expiry, eviction, replacement by a small value")
    func everyRemovalFreesChunks() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(memory: 4 * Self.mib, maxValueSize: 512 * 1024))
            let total = try store.memoryUsage().heapChunks
            func free() throws -> Int { try store.memoryUsage().freeHeapChunks }
            try store.set("a", bytes: value(1, 1, 50_000))
            #expect(try free() == total - _ValueHeap.chunks(for: 50_000))
            #expect(try store.remove("a"))
            #expect(try free() == total)
            try store.set("b", [String](repeating: "a large Codable value", count: 3000))
            #expect(try store.get("b", as: [String].self)?.count == 3000)
            #expect(try free() < total)
            try store.update("b", as: [String].self) { _ in nil }
            #expect(try free() == total)
            try store.set("c", bytes: value(3, 1, 40_000), expiry: .after(.milliseconds(1)))
            usleep(5_000)
            #expect(try store.purgeExpired() == 1)
            #expect(try free() == total)
            try store.set("d", bytes: value(4, 1, 40_000), expiry: .after(.milliseconds(1)))
            usleep(5_000)
            #expect(try store.bytes("d") == nil)  // reclaimed when met
            #expect(try free() == total)
            try store.set("e", bytes: value(5, 1, 40_000))
            try store.set("e", bytes: [9])
            #expect(try free() == total)
            for id in UInt32(0)..<60 { try store.set("e\(id)", bytes: value(id, 1, 100_000)) }  // ~38 fit: evictions
            let live = try store.memoryUsage()
            let present = try (0..<60).filter { try store.contains("e\($0)") }.count
            #expect(present < 60 && present > 0)
            #expect(live.heapChunks - live.freeHeapChunks == present * _ValueHeap.chunks(for: 100_000))
            #expect(try store.verify().isClean)
        }
    }

    @Test("a budget too small for the tables or for two maxValueSize values is .invalidSize")
    func tooSmall() throws {
        try withStoreKey { key in
            expectError(.invalidSize) { _ = try ShmStore.create(key: key, configuration: .init(memory: 64 * 1024)) }
            expectError(.invalidSize) { _ = try ShmStore.create(key: key, configuration: .init(memory: 3 * Self.mib, maxValueSize: 2 * Self.mib)) }
            expectError(.invalidSize) { _ = try ShmStore.create(key: key, configuration: .init(memory: 8 * Self.mib, maxValueSize: 0)) }
            expectError(.invalidSize) { _ = try ShmStore.create(key: key, configuration: .init(memory: -1)) }
            #expect(!ShmRegion.exists(key: key))
            // Just enough: two values of maxValueSize.
            let store = try ShmStore.create(key: key, configuration: .init(memory: 3 * Self.mib, maxValueSize: Self.mib))
            try store.set("a", bytes: value(1, 1, Self.mib))
            try store.set("a", bytes: value(1, 2, Self.mib))
            try store.set("b", bytes: value(2, 1, Self.mib))
            do { let same = try store.bytes("b") == value(2, 1, Self.mib); #expect(same, "try store.bytes('b') differs") }
            #expect(try store.verify().isClean)
        }
    }

    @Test("a large set into a full heap evicts exactly the entries needed", arguments: [ShmLRU.EvictionPolicy.lru, .sieve, .s3fifo])
    func evictsExactlyEnough(policy: ShmLRU.EvictionPolicy) throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(memory: 4 * Self.mib, maxValueSize: Self.mib, policy: policy))
            let each = 8 * 1024  // 9 chunks
            let perValue = _ValueHeap.chunks(for: each)
            let total = try store.memoryUsage().heapChunks
            let filled = total / perValue
            for id in 0..<filled { try store.set("f\(id)", bytes: value(UInt32(id), 1, each)) }
            #expect(store.count == filled)
            let free = try store.memoryUsage().freeHeapChunks
            #expect(free == total - filled * perValue)
            let big = 300 * 1024
            let needed = _ValueHeap.chunks(for: big)
            let expected = (needed - free + perValue - 1) / perValue
            try store.set("big", bytes: value(9999, 1, big))
            #expect(store.count == filled - expected + 1, "evicted \(filled + 1 - store.count), needed \(expected)")
            #expect(try store.memoryUsage().freeHeapChunks == free + expected * perValue - needed)
            do { let same = try store.bytes("big") == value(9999, 1, big); #expect(same, "try store.bytes('big') differs") }
            #expect(try store.verify().isClean)
        }
    }

    @Test("an update of a large value never evicts the entry itself", arguments: [ShmLRU.EvictionPolicy.lru, .sieve, .s3fifo])
    func updateNeverEvictsItself(policy: ShmLRU.EvictionPolicy) throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(memory: 3 * Self.mib, maxValueSize: Self.mib, policy: policy))
            try store.set("self", bytes: value(7, 1, 900 * 1024))
            var id: UInt32 = 0
            while try store.memoryUsage().freeHeapChunks >= 20 {
                try store.set("o\(id)", bytes: value(id, 1, 16 * 1024))
                id += 1
            }
            #expect(try store.bytes("self") != nil, "filling evicted the big entry (allowed), set it again")
            for version in UInt32(2)...6 {
                if try store.bytes("self") == nil { try store.set("self", bytes: value(7, version, 900 * 1024)) }
                let recoveries = store.cache.stats.recoveries
                try store.set("self", bytes: value(7, version, Self.mib - Int(version)))
                #expect(heap(store).busy == 0, "the update evicted its own entry")
                #expect(store.cache.stats.recoveries == recoveries, "the update evicted its own entry, then repaired")
                do { let same = try store.bytes("self") == value(7, version, Self.mib - Int(version)); #expect(same, "try store.bytes('self') differs") }
                try store.set("o\(id)", bytes: value(id, 1, 16 * 1024))
                id += 1
            }
            #expect(try store.verify().isClean)
        }
    }

    @Test("SIEVE whose hand would pick the entry being updated passes over it")
    func sieveHandOnTheUpdatedEntry() throws {
        try withStoreKey { key in
            // The entry is the oldest (the SIEVE tail) and every entry is marked
            // used: the hand clears every mark, wraps to the tail and would evict it.
            let store = try ShmStore.create(key: key, configuration: .init(memory: 3 * Self.mib, maxValueSize: Self.mib, policy: .sieve))
            try store.set("self", bytes: value(7, 1, 600 * 1024))
            var names = ["self"]
            while try store.memoryUsage().freeHeapChunks >= 20 {
                names.append("o\(names.count)")
                try store.set(names.last!, bytes: value(UInt32(names.count), 1, 16 * 1024))
            }
            for name in names { #expect(try store.bytes(name) != nil, "\(name) before the update") }
            let recoveries = store.cache.stats.recoveries
            let new = value(7, 2, Self.mib)
            try store.set("self", bytes: new)
            // Had the entry been evicted, the update would have found its record
            // gone: a repair (counted in the data segment's recoveries) and a retry.
            #expect(heap(store).busy == 0)
            #expect(store.cache.stats.recoveries == recoveries, "the update evicted its own entry, then repaired")
            do { let same = try store.bytes("self") == new; #expect(same, "the updated entry lost its new value") }
            #expect(store.count < names.count)
            #expect(try store.verify().isClean)
        }
    }

    @Test("4 processes churn mixed sizes (64 B...64 KiB): no torn or foreign value, verify() clean")
    func churn() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(memory: 6 * Self.mib, maxValueSize: 128 * 1024))
            let runs = try (0..<4).map { seed in try spawnHelper(["mem-churn", key.description, "\(seed + 11)", "3000", "200"]) }
            var reads = 0
            for run in runs.map({ $0.wait() }) {
                #expect(run.status == 0, "\(run.errorOutput)")
                reads += Int(run.values["hits"] ?? "0") ?? 0
            }
            #expect(reads > 0)
            for id in UInt32(0)..<200 {
                if let bytes = try store.bytes("m\(id)") { #expect(decodeValue(bytes, hash: id) != nil, "m\(id)") }
            }
            let report = try store.verify()
            #expect(report.isClean, "\(report.problems)")
            let usage = try store.memoryUsage()
            #expect(usage.liveBytes > 0 && usage.liveBytes <= usage.budgetBytes)
        }
    }

    @Test("a reader copying a 1 MiB value while another process replaces it gets old or new, whole")
    func readerWhileWriterReplaces() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(memory: 8 * Self.mib, maxValueSize: 2 * Self.mib))
            try store.set("big", bytes: value(5, 0, Self.mib))
            let writer = try spawnHelper(["mem-replace", key.description, "big", "5", "150", "\(Self.mib)"])
            var reads = 0
            var versions = Set<UInt32>()
            var exited = false
            var status: Int32 = 0
            while !exited {
                exited = waitpid(writer.pid, &status, WNOHANG) == writer.pid
                guard let bytes = try store.bytes("big") else {
                    Issue.record("the key vanished")
                    break
                }
                guard let version = decodeValue(bytes, hash: 5) else {
                    Issue.record("torn or foreign 1 MiB read (\(bytes.count) bytes)")
                    break
                }
                versions.insert(version)
                reads += 1
            }
            if !exited { _ = writer.wait() } else { #expect(status == 0) }
            #expect(reads > 0)
            #expect(decodeValue(try store.bytes("big") ?? [], hash: 5) == 150)
            #expect(try store.verify().isClean)
            print("memory store: \(reads) reads of a 1 MiB value under replacement saw \(versions.count) versions")
        }
    }

    @Test("a writer killed inside a large write: the old value stays whole, the heap is rebuilt", arguments: ["heap.chunks", "heap.written", "heap.linked", "set.written", "set.linked"])
    func killInsideLargeWrite(point: String) throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(memory: 8 * Self.mib, maxValueSize: Self.mib))
            let old = value(3, 1, 300 * 1024)
            try store.set("big", bytes: old)
            try store.set("small", bytes: [1, 2, 3])
            let total = try store.memoryUsage().heapChunks
            let run = try runHelper(["mem-set-fault", key.description, "\(point)@1", "big", "3", "2", "\(500 * 1024)"])
            #expect(run.status == 128 + SIGKILL, "\(run.output) \(run.errorOutput)")
            let report = try store.verify()  // takes the dead holder's lock, repairs, rebuilds the heap
            #expect(report.isClean, "\(report.problems)")
            let now = try store.bytes("big")
            let version = now.flatMap { decodeValue($0, hash: 3) }
            if point.hasPrefix("set.") || point == "heap.linked" {
                // Both records whole: the data segment's repair keeps the newer (ShmLRU+Replace.swift).
                #expect(version == 1 || version == 2)
            } else {
                #expect(now?.count == old.count && version == 1, "the old value must survive a kill before the new record is written")
            }
            #expect(try store.bytes("small") == [1, 2, 3])
            let usage = try store.memoryUsage()
            #expect(usage.heapChunks - usage.freeHeapChunks == _ValueHeap.chunks(for: now?.count ?? 0))
            #expect(usage.heapChunks == total)
            try store.set("big", bytes: value(3, 9, 700 * 1024))
            #expect(try store.verify().isClean)
        }
    }

    @Test("hostile heap bytes (free list, counts, chunk links and stamps) give misses or typed errors, never a crash")
    func hostileHeap() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(memory: 4 * Self.mib, maxValueSize: 256 * 1024))
            let h = heap(store)
            let s = store._store
            let forgeries: [(String, () -> Void)] = [
                ("free head out of range", { s.store(h.offset + _ValueHeap.F.freeHead, 0xFFFF_FF00) }),
                ("free count huge", { s.store(h.offset + _ValueHeap.F.freeCount, 0xFFFF_FFF0) }),
                ("free list cycle", { s.store(h.chunk(h.freeHead) - s.base + _ValueHeap.C.next, h.freeHead) }),
                ("chain link out of range", { s.store(h.chunk(0) - s.base + _ValueHeap.C.next, 0x7FFF_FFFF) }),
                ("chain link to itself", { s.store(h.chunk(1) - s.base + _ValueHeap.C.next, 1) }),
                ("stamp changed", { s.store64(h.chunk(2) - s.base + _ValueHeap.C.stamp, 12345) }),
                ("used too large", { s.store(h.chunk(0) - s.base + _ValueHeap.C.used, 5000) }),
                ("busy", { s.store(h.offset + _ValueHeap.F.busy, 7) }),
                ("stamp counter reset", { s.store64(h.offset + _ValueHeap.F.stamp, 0) }),
            ]
            for (name, forge) in forgeries {
                for id in UInt32(0)..<4 { try store.set("h\(id)", bytes: value(id, 1, 20_000 + Int(id))) }
                forge()
                for id in UInt32(0)..<4 {
                    do {
                        if let bytes = try store.bytes("h\(id)") {
                            #expect(decodeValue(bytes, hash: id) != nil || name.contains("cycle"), "\(name): h\(id) read wrong")
                        }
                    } catch let error as ShmError {
                        #expect(error.code == .corrupted, "\(name): \(error)")
                    }
                }
                for id in UInt32(0)..<8 {
                    do { try store.set("h\(id)", bytes: value(id, 2, 30_000)) } catch let error as ShmError {
                        #expect(error.code == .corrupted || error.code == .full, "\(name): \(error)")
                    }
                }
                _ = try? store.verify()
                // A busy heap (as a dead holder leaves it) makes the next locker rebuild it.
                s.store(h.offset + _ValueHeap.F.busy, 1)
                _ = try store.contains("h0") || true
                _ = try store.remove("none")
                let report = try store.verify()
                #expect(report.isClean, "\(name): \(report.problems)")
                for id in UInt32(0)..<8 {
                    if let bytes = try store.bytes("h\(id)") { #expect(decodeValue(bytes, hash: id) != nil, "\(name): h\(id) after rebuild") }
                }
            }
        }
    }

    @Test("a listener gets a large value whole")
    func listenerLargeValue() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(memory: 4 * Self.mib, maxValueSize: 256 * 1024))
            let changes = store.listen("big")
            let bytes = value(4, 1, 200_000)
            try store.set("big", bytes: bytes)
            let seen = await collect(changes, count: 1)
            let same = seen.first?.bytes == bytes
            #expect(same, "the listener got \(seen.first?.bytes?.count ?? -1) bytes")
        }
    }

    @Test("a listener behind a large value's replacements gets whole values, never older than the entry's")
    func listenerBehindReplacements() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(memory: 4 * Self.mib, maxValueSize: 256 * 1024))
            let changes = store.listen("big")
            // v3 reuses v1's chunks: a pump that reads v1's entry after that finds the
            // stamps changed and delivers the key's value then (v3).
            for version in UInt32(1)...6 { try store.set("big", bytes: value(4, version, 150_000 + Int(version))) }
            let seen = await collect(changes, count: 6)
            #expect(seen.count == 6)
            var last: UInt32 = 0
            for change in seen {
                guard let bytes = change.bytes, let version = decodeValue(bytes, hash: 4) else {
                    Issue.record("a torn or missing large value in a change (\(change.bytes?.count ?? -1) bytes)")
                    continue
                }
                #expect(version >= last, "versions go back: \(version) after \(last)")
                last = version
            }
            #expect(last == 6)
        }
    }

    @Test("attach reads the memory configuration; open with it attaches, another one is refused")
    func attachAndOpen() throws {
        try withStoreKey { key in
            let configuration = ShmStore.Configuration(memory: 4 * Self.mib, maxValueSize: 256 * 1024)
            let store = try ShmStore.create(key: key, configuration: configuration)
            try store.set("x", bytes: value(1, 1, 100_000))
            let peer = try ShmStore.attach(key: key)
            #expect(peer.configuration.memory == 4 * Self.mib)
            #expect(peer.configuration.maxValueSize == 256 * 1024)
            do { let same = try peer.bytes("x") == value(1, 1, 100_000); #expect(same, "try peer.bytes('x') differs") }
            let opened = try ShmStore.open(key: key, configuration: configuration)
            #expect(try opened.bytes("x") != nil)
            expectError(.incompatibleSegment) {
                _ = try ShmStore.open(key: key, configuration: .init(memory: 4 * Self.mib, maxValueSize: 128 * 1024))
            }
            // A store sized by records has no heap: values must fit a record.
            try withStoreKey { other in
                let records = try ShmStore.create(key: other, configuration: .init(capacity: 8, recordSize: 256))
                expectError(.valueTooLarge) { try records.set("k", bytes: [UInt8](repeating: 0, count: 300)) }
                #expect(try records.memoryUsage().heapChunks == 0)
            }
        }
    }
}
