import Glibc
import ShmLRU
import ShmLRUTestSupport
import Testing

/// Issue 3: every error path of the LRU gives a typed error and changes nothing;
/// values are binary-safe; no 16-bit limits.
@Suite struct LRUErrorTests {
    /// What a cache looks like from outside: its dump and its counters.
    func snapshot(_ cache: ShmLRU) throws -> (String, ShmLRU.Stats) {
        (try cache.dumpJSON(), cache.stats)
    }

    @Test(arguments: ShmLRU.IndexKind.allCases)
    func valueTooLargeWritesNothing(_ index: ShmLRU.IndexKind) throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 4, index: index)
            try cache.set(1, "one")
            let before = try snapshot(cache)
            let big = [UInt8](repeating: 0xAB, count: 17)
            let e1 = expectShmError(.valueTooLarge) { try cache.set(1, big) }  // update
            #expect(e1?.detail?.contains("17") == true)
            expectShmError(.valueTooLarge) { try cache.set(2, big) }  // insert
            expectShmError(.valueTooLarge) { try cache.set(3, String(repeating: "x", count: 1_000)) }
            expectShmError(.valueTooLarge) { try cache.set(3, [UInt8](repeating: 0, count: 1 << 24)) }
            #expect(try snapshot(cache) == before)
            #expect(try cache.string(1) == "one")
            #expect(try cache.bytes(2) == nil)
            #expect(try cache.verify().isClean)
        }
    }

    @Test(arguments: ShmLRU.IndexKind.allCases)
    func fullAndRefusingChangesNothing(_ index: ShmLRU.IndexKind) throws {
        try withKey { key in
            let cache = try ShmLRU.create(
                key: key, recordSize: 8, capacity: 3, index: index, options: .init(whenFull: .refuse))
            for hash: UInt32 in 1...3 { try cache.set(hash, "v\(hash)") }
            let before = try snapshot(cache)
            let error = expectShmError(.full) { try cache.set(4, "v4") }
            #expect(error?.operation.contains("set(4") == true)
            #expect(try snapshot(cache) == before)
            #expect(try cache.bytes(4) == nil)
            // Updates still work when full; a delete makes room.
            #expect(try cache.set(2, "two").updated)
            try cache.remove(1)
            #expect(try cache.set(4, "v4").evictedHash == nil)
            #expect(try cache.string(4) == "v4")
            #expect(try cache.verify().isClean)
        }
    }

    @Test func fullEvictsTheLeastRecentlyUsedByDefault() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 8, capacity: 3)
            for hash: UInt32 in 1...3 { try cache.set(hash, "v\(hash)") }
            _ = try cache.string(1)  // 2 is now the least recently used
            let result = try cache.set(4, "v4")
            #expect(result.evictedHash == 2)
            #expect(!result.updated)
            #expect(try cache.bytes(2) == nil)
            #expect(cache.stats.evictions == 1)
        }
    }

    @Test(arguments: ShmLRU.IndexKind.allCases)
    func offsetsThatAreNotRecords(_ index: ShmLRU.IndexKind) throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 10, capacity: 5, index: index)
            let first = try cache.set(1, "a").offset
            let second = try cache.set(2, "b").offset
            let stride = second - first
            #expect(stride >= 32 + 10)
            let end = first + 5 * stride
            #expect(end <= cache.region.byteCount)
            let bad = [
                0, 8, 64, 128, 511, first - stride, first - 1, first + 1, first + stride / 2, second - 4, end, end + stride,
                cache.region.byteCount, cache.region.byteCount + 1, -1, -stride, Int.min, Int.max,
            ]
            let before = try snapshot(cache)
            for offset in bad {
                expectShmError(.invalidOffset, "offset \(offset)") { _ = try cache.bytes(atOffset: offset) }
                expectShmError(.invalidOffset, "offset \(offset)") { _ = try cache.string(atOffset: offset) }
                expectShmError(.invalidOffset, "offset \(offset)") { _ = try cache.hash(atOffset: offset) }
                expectShmError(.invalidOffset, "offset \(offset)") { try cache.remove(atOffset: offset) }
                expectShmError(.invalidOffset, "offset \(offset)") { try cache.setShareKey(9, atOffset: offset) }
                expectShmError(.invalidOffset, "offset \(offset)") { _ = try cache.withValue(atOffset: offset) { _ in 0 } }
            }
            #expect(try snapshot(cache) == before)
            // A valid offset of a record never used is not live: .alreadyDeleted, not a crash.
            expectShmError(.alreadyDeleted) { _ = try cache.bytes(atOffset: end - stride) }
            #expect(try cache.verify().isClean)
        }
    }

    @Test(arguments: ShmLRU.IndexKind.allCases)
    func doubleDelete(_ index: ShmLRU.IndexKind) throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 10, capacity: 5, index: index)
            let offset = try cache.set(7, "seven").offset
            try cache.set(8, "eight")
            #expect(try cache.remove(atOffset: offset) == 7)
            let before = try snapshot(cache)
            let error = expectShmError(.alreadyDeleted) { try cache.remove(atOffset: offset) }
            #expect(error?.operation.contains("\(offset)") == true)
            expectShmError(.alreadyDeleted) { _ = try cache.bytes(atOffset: offset) }
            expectShmError(.alreadyDeleted) { _ = try cache.hash(atOffset: offset) }
            expectShmError(.alreadyDeleted) { try cache.setShareKey(1, atOffset: offset) }
            #expect(try cache.remove(7) == false, "by hash: absent, not an error")
            #expect(try snapshot(cache) == before)
            // By hash, twice.
            #expect(try cache.remove(8))
            #expect(try cache.remove(8) == false)
            #expect(cache.count == 0)
            #expect(try cache.verify().isClean)
        }
    }

    @Test func badArguments() throws {
        try withKey { key in
            expectShmError(.invalidSize) { _ = try ShmLRU.create(key: key, recordSize: 0, capacity: 4) }
            expectShmError(.invalidSize) { _ = try ShmLRU.create(key: key, recordSize: 8, capacity: 0) }
            expectShmError(.invalidSize) { _ = try ShmLRU.create(key: key, recordSize: -1, capacity: 4) }
            expectShmError(.invalidSize) { _ = try ShmLRU.create(key: key, recordSize: 1 << 24, capacity: 4) }
            expectShmError(.invalidSize) { _ = try ShmLRU.create(key: key, recordSize: 8, capacity: 1 << 30) }
            #expect(!ShmRegion.exists(key: key), "a refused create leaves no segment")
            expectShmError(.invalidArgument, "interval promotion needs the shared index") {
                _ = try ShmLRU.create(
                    key: key, recordSize: 8, capacity: 4, index: .processLocal,
                    options: .init(promotion: .atMostEvery(.milliseconds(1))))
            }
            #expect(!ShmRegion.exists(key: key), "a refused create removes its segment")
            let cache = try ShmLRU.create(key: key, recordSize: 8, capacity: 4)
            try cache.set(1, "12345678")
            expectShmError(.invalidArgument) { try cache.evict(lastUsedBefore: .now, limit: -1) }
            var small = [UInt8](repeating: 0, count: 7)
            expectShmError(.invalidArgument) {
                _ = try small.withUnsafeMutableBytes { buffer throws(ShmError) in try cache.get(1, into: buffer) }
            }
            #expect(try cache.string(1) == "12345678")
        }
    }

    @Test func initializingARegion() throws {
        try withKey { key in
            let region = try ShmRegion.create(key: key, byteCount: 4096)
            expectShmError(.invalidSize, "not even one record fits") { _ = try ShmLRU(initializing: region, recordSize: 5000) }
            expectShmError(.invalidSize, "more than fits") { _ = try ShmLRU(initializing: region, recordSize: 8, capacity: 1000) }
            expectShmError(.invalidSize) { _ = try ShmLRU(initializing: region, recordSize: 8, capacity: 0) }
            let cache = try ShmLRU(initializing: region, recordSize: 8)
            #expect(cache.capacity > 50)
            #expect(cache.region.byteCount == 4096)
            expectShmError(.exists, "a second initializer is refused") { _ = try ShmLRU(initializing: region, recordSize: 8) }
            try cache.set(1, "x")
            let peer = try ShmLRU(attaching: try ShmRegion.attach(key: key))
            #expect(peer.capacity == cache.capacity)
            #expect(try peer.string(1) == "x")
        }
    }

    @Test func useAfterDetach() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 8, capacity: 4)
            let offset = try cache.set(1, "one").offset
            let peer = try ShmLRU.attach(key: key)
            #expect(try cache.detach() == 1)
            expectShmError(.detached) { try cache.set(2, "two") }
            expectShmError(.detached) { _ = try cache.bytes(1) }
            expectShmError(.detached) { _ = try cache.bytes(atOffset: offset) }
            expectShmError(.detached) { try cache.remove(1) }
            expectShmError(.detached) { try cache.remove(atOffset: offset) }
            expectShmError(.detached) { _ = try cache.verify() }
            expectShmError(.detached) { _ = try cache.dumpJSON() }
            expectShmError(.detached) { try cache.evict(lastUsedBefore: .now) }
            expectShmError(.detached) { try cache.reloadIndex() }
            expectShmError(.detached) { _ = try cache.contains(1) }
            // The lock-free read path too.
            let fast = try ShmLRU.attach(key: key, options: .init(promotion: .atMostEvery(.seconds(1))))
            try fast.detach()
            expectShmError(.detached) { _ = try fast.bytes(1) }
            // Snapshots of a detached handle read nothing from the gone mapping.
            #expect(cache.count == 0)
            #expect(cache.stats.count == 0)
            #expect(cache.stats.capacity == 4)
            #expect(try peer.string(1) == "one")
        }
    }

    // MARK: Foreign, zeroed, truncated, other layouts

    func attachExpecting(_ code: ShmError.Code, _ key: ShmKey, recordSize: Int? = nil, _ comment: Comment) {
        expectShmError(code, comment) {
            _ = try ShmLRU.attach(key: key, recordSize: recordSize, options: .init(attachWait: .milliseconds(20)))
        }
    }

    /// A segment of `bytes` whose start is a copy of a real cache's first `copy` bytes, edited by `edit`.
    func withCopiedHeader(
        bytes: Int, copy: Int = 512, index: ShmLRU.IndexKind = .shared, edit: (UnsafeMutableRawBufferPointer) -> Void = { _ in },
        _ body: (ShmKey) throws -> Void
    ) throws {
        try withKey { source in
            let cache = try ShmLRU.create(key: source, recordSize: 16, capacity: 100, index: index)
            try cache.set(1, "one")
            try withKey { key in
                let region = try ShmRegion.create(key: key, byteCount: bytes)
                try region.withUnsafeMutableBytes { target in
                    cache.region.withUnsafeBytes { from in
                        target.copyMemory(from: UnsafeRawBufferPointer(rebasing: from[0..<min(copy, target.count, from.count)]))
                    }
                    edit(target)
                }
                try body(key)
            }
        }
    }

    @Test func foreignZeroedAndTruncatedSegments() throws {
        // Random bytes.
        try withKey { key in
            let region = try ShmRegion.create(key: key, byteCount: 64 * 1024)
            var random = SplitMix64(seed: 42)
            try region.withUnsafeMutableBytes { for i in 0..<$0.count { $0[i] = UInt8.random(in: 0...255, using: &random) } }
            attachExpecting(.incompatibleSegment, key, "random bytes")
        }
        // Zeroed: nothing was ever initialized (waits attachWait, then gives up).
        try withKey { key in
            _ = try ShmRegion.create(key: key, byteCount: 64 * 1024)
            attachExpecting(.incompatibleSegment, key, "zeroed")
        }
        // Smaller than a header.
        try withKey { key in
            _ = try ShmRegion.create(key: key, byteCount: 100)
            attachExpecting(.incompatibleSegment, key, "tiny")
        }
        // A valid header in a segment too small for what it claims (truncated).
        let full = try withKey { key in try ShmLRU.create(key: key, recordSize: 16, capacity: 100).region.byteCount }
        try withCopiedHeader(bytes: full - 1) { key in attachExpecting(.corrupted, key, "truncated by one byte") }
        try withCopiedHeader(bytes: 600) { key in attachExpecting(.corrupted, key, "header only") }
        // The same header in a segment of the right size attaches.
        try withCopiedHeader(bytes: full, copy: full) { key in
            let cache = try ShmLRU.attach(key: key)
            #expect(try cache.string(1) == "one")
            #expect(try cache.verify().isClean)
        }
    }

    @Test func otherLayouts() throws {
        // Another record size, asked for explicitly.
        try withKey { key in
            _ = try ShmLRU.create(key: key, recordSize: 16, capacity: 10)
            attachExpecting(.incompatibleSegment, key, recordSize: 32, "another record size")
            #expect(try ShmLRU.attach(key: key, recordSize: 16).recordSize == 16)
        }
        func edited(_ comment: Comment, _ code: ShmError.Code, _ edit: @escaping (UnsafeMutableRawBufferPointer) -> Void) throws {
            try withCopiedHeader(bytes: 1 << 16, copy: 1 << 16, edit: edit) { key in attachExpecting(code, key, comment) }
        }
        func store32(_ b: UnsafeMutableRawBufferPointer, _ offset: Int, _ value: UInt32) {
            b.storeBytes(of: value, toByteOffset: offset, as: UInt32.self)
        }
        func add32(_ b: UnsafeMutableRawBufferPointer, _ offset: Int, _ delta: UInt32) {
            store32(b, offset, b.load(fromByteOffset: offset, as: UInt32.self) &+ delta)
        }
        try edited("wrong version", .incompatibleSegment) { add32($0, 8, 1) }
        try edited("version 0", .incompatibleSegment) { store32($0, 8, 0) }
        try edited("wrong magic", .incompatibleSegment) { $0[0] ^= 0xFF }
        try edited("header size", .corrupted) { add32($0, 12, 8) }
        try edited("record size grown", .corrupted) { add32($0, 16, 8) }
        try edited("record size 0", .corrupted) { store32($0, 16, 0) }
        try edited("stride", .corrupted) { add32($0, 20, 8) }
        try edited("capacity grown", .corrupted) { add32($0, 24, 1) }
        try edited("capacity huge", .corrupted) { store32($0, 24, .max) }
        try edited("capacity 0", .corrupted) { store32($0, 24, 0) }
        try edited("index kind", .corrupted) { store32($0, 28, 7) }
        try edited("index kind flipped", .corrupted) { store32($0, 28, 0) }
        try edited("index offset", .corrupted) { add32($0, 32, 64) }
        try edited("index slots", .corrupted) { add32($0, 40, 1) }
        try edited("index bits", .corrupted) { add32($0, 44, 1) }
        try edited("records offset", .corrupted) { add32($0, 48, 64) }
        try edited("segment size", .corrupted) { add32($0, 56, 8) }
    }

    /// Random edits of the immutable header line: attach either works or throws a
    /// typed error; never a crash, never a wrong layout used.
    @Test func randomHeaderEditsGiveTypedErrors() throws {
        var random = SplitMix64(seed: 7)
        var outcomes: [String: Int] = [:]
        for round in 0..<200 {
            let position = Int.random(in: 0..<64, using: &random)
            let byte = UInt8.random(in: 0...255, using: &random)
            try withCopiedHeader(bytes: 1 << 16, copy: 1 << 16, edit: { $0[position] = byte }) { key in
                do {
                    let cache = try ShmLRU.attach(key: key, options: .init(attachWait: .milliseconds(1)))
                    #expect(cache.recordSize == 16 && cache.capacity == 100, "round \(round): attached with another layout")
                    outcomes["attached", default: 0] += 1
                } catch let error as ShmError {
                    #expect([.incompatibleSegment, .corrupted].contains(error.code), "round \(round): \(error)")
                    outcomes[error.code.rawValue, default: 0] += 1
                }
            }
        }
        #expect(outcomes["corrupted", default: 0] > 0)
        #expect(outcomes["incompatibleSegment", default: 0] > 0)
    }

    // MARK: Values

    @Test(arguments: ShmLRU.IndexKind.allCases)
    func valuesAreBinarySafe(_ index: ShmLRU.IndexKind) throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 256, capacity: 8, index: index)
            let allBytes = (0...255).map { UInt8($0) }
            let nuls = [UInt8](repeating: 0, count: 100)
            let offsetAll = try cache.set(1, allBytes).offset  // exactly recordSize
            try cache.set(2, nuls)
            try cache.set(3, [UInt8]())  // length 0: present, empty
            try cache.set(4, "a\u{0}b\u{0}")
            try cache.set(5, [0, 0xFF, 0, 0xC3])  // not UTF-8
            #expect(try cache.bytes(1) == allBytes)
            #expect(try cache.bytes(atOffset: offsetAll) == allBytes)
            #expect(try cache.bytes(2) == nuls)
            #expect(try cache.bytes(3) == [])
            #expect(try cache.string(3) == "")
            #expect(try cache.bytes(6) == nil, "a miss is nil, an empty value is not")
            #expect(try cache.string(4) == "a\u{0}b\u{0}")
            #expect(try cache.bytes(4)?.count == 4)
            #expect(try cache.bytes(5) == [0, 0xFF, 0, 0xC3])
            #expect(try cache.withValue(1) { $0.count } == 256)
            var buffer = [UInt8](repeating: 0xEE, count: 256)
            #expect(try buffer.withUnsafeMutableBytes { b throws(ShmError) in try cache.get(3, into: b) } == 0)
            #expect(try buffer.withUnsafeMutableBytes { b throws(ShmError) in try cache.get(1, into: b) } == 256)
            #expect(buffer == allBytes)
            // A shorter value replaces a longer one completely.
            try cache.set(1, [9])
            #expect(try cache.bytes(1) == [9])
            #expect(try cache.verify().isClean)
        }
    }

    // MARK: Limits beyond 16 bits

    @Test(arguments: ShmLRU.IndexKind.allCases)
    func evictionLimits(_ index: ShmLRU.IndexKind) throws {
        try withKey { key in
            let records = 70_000
            let cache = try ShmLRU.create(key: key, recordSize: 4, capacity: records, index: index)
            for hash in 0..<UInt32(records) { try cache.set(hash, [UInt8(truncatingIfNeeded: hash)]) }
            #expect(cache.count == records)
            let cutoff = ShmInstant.now
            #expect(try cache.evict(lastUsedBefore: cutoff, limit: 0) == [])
            #expect(cache.count == records)
            let first = try cache.evict(lastUsedBefore: cutoff, limit: 300)
            #expect(first == Array(0..<300), "the 300 least recently used, oldest first")
            let second = try cache.evict(lastUsedBefore: cutoff, limit: 66_000)
            #expect(second.count == 66_000)
            #expect(second.first == 300 && second.last == 66_299)
            #expect(cache.count == records - 66_300)
            #expect(try cache.bytes(66_299) == nil)
            #expect(try cache.bytes(66_300) == [UInt8(truncatingIfNeeded: 66_300)])
            // A cutoff before every use evicts nothing; an unlimited one the rest.
            #expect(try cache.evict(lastUsedBefore: ShmInstant(nanoseconds: 0)) == [])
            #expect(try cache.evict(lastUsedBefore: .now).count == records - 66_300)
            #expect(cache.count == 0)
            #expect(cache.stats.evictions == UInt64(records - cache.count))
            #expect(try cache.verify().isClean)
        }
    }

    /// The seed caps at 65,535 records and its last record runs past the region.
    @Test func aMillionRecords() throws {
        try withKey { key in
            let records = 1_000_000
            let cache = try ShmLRU.create(key: key, recordSize: 8, capacity: records)
            #expect(cache.capacity == records)
            var lastOffset = 0
            for hash in 0..<UInt32(records) {
                lastOffset = try cache.set(hash &* 2_654_435_761, bytes(of: hash)).offset
            }
            #expect(cache.count == records)
            #expect(cache.stats.count == records)
            #expect(cache.stats.free == 0)
            let report = try cache.verify()
            #expect(report.isClean, "\(report)")
            #expect(report.liveRecords == records)
            #expect(report.indexEntries == records)
            #expect(report.freeRecords == 0)
            // The last record lies wholly inside the segment.
            #expect(lastOffset + 32 + 8 <= cache.region.byteCount)
            #expect(try cache.bytes(atOffset: lastOffset) == bytes(of: UInt32(records - 1)))
            #expect(try cache.bytes(UInt32(records - 1) &* 2_654_435_761) == bytes(of: UInt32(records - 1)))
            // Every value is there.
            for hash in stride(from: 0, to: UInt32(records), by: 997) {
                #expect(try cache.bytes(hash &* 2_654_435_761) == bytes(of: hash))
            }
            // One more evicts the least recently used (hash 0; 997's multiples were read).
            #expect(try cache.set(0xFFFF_FFFF, [1]).evictedHash == 1 &* 2_654_435_761)
            // Another process attaches and counts exactly.
            let peer = try runHelper(["lru-script", key.description, "count"])
            #expect(peer.status == 0, "\(peer.errorOutput)")
            #expect(peer.values["count"] == String(records))
        }
    }

    func bytes(of value: UInt32) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } + [0, 0, 0, 0] }
}

extension LRUErrorTests {
    /// The lock is not recursive: calling the cache from inside `withValue` is a
    /// typed error at once (EDEADLK), not a self-deadlock.
    @Test func reentryFromWithValueIsAnError() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 8, capacity: 4, options: .init(lockTimeout: .seconds(30)))
            try cache.set(1, "one")
            var inner: ShmError? = nil
            let length = try cache.withValue(1) { value -> Int in
                inner = expectShmError(.systemCall) { try cache.set(2, "two") }
                return value.count
            }
            #expect(length == 3)
            #expect(inner?.errno == EDEADLK)
            #expect(try cache.bytes(2) == nil)
            #expect(try cache.verify().isClean)
        }
    }
}
