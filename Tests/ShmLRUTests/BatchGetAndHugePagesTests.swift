import CShm
import Glibc
import ShmLRU
import ShmLRUTestSupport
import Testing

/// Batched gets (`get(_:into:stride:lengths:)`, `get(_:_:)`, `bytes(_:)`) return
/// what single gets return, in both promotion modes, and with exact LRU promote
/// the hits in the batch's order.
@Suite struct BatchGetTests {
    static let modes: [ShmLRU.Promotion] = [.onEveryRead, .atMostEvery(.seconds(600))]

    @Test(arguments: [0, 1])
    func batchesAgreeWithSingleGets(mode: Int) throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 48, capacity: 64, options: .init(promotion: Self.modes[mode]))
            for hash in UInt32(1)...60 { try cache.set(hash, encodeValue(hash: hash, version: hash, length: 16 + Int(hash % 30))) }
            // 37 keys (more than one window), hits and misses mixed, a repeat.
            let hashes: [UInt32] = (0..<37).map { UInt32(($0 * 7) % 80) } + [3]
            let stride = 48
            var buffer = [UInt8](repeating: 0xEE, count: hashes.count * stride)
            var lengths = [Int](repeating: 99, count: hashes.count)
            let hits = try hashes.withUnsafeBufferPointer { keys in
                try buffer.withUnsafeMutableBytes { bytes in
                    try lengths.withUnsafeMutableBufferPointer { try cache.get(keys, into: bytes, stride: stride, lengths: $0) }
                }
            }
            var expectedHits = 0
            for (i, hash) in hashes.enumerated() {
                let single = try cache.bytes(hash)
                if let single {
                    expectedHits += 1
                    #expect(lengths[i] == single.count, "key \(hash)")
                    #expect(Array(buffer[(i * stride)..<(i * stride + lengths[i])]) == single, "key \(hash)")
                    #expect(decodeValue(single, hash: hash) == hash)
                } else {
                    #expect(lengths[i] == -1, "key \(hash) is a miss")
                }
            }
            #expect(hits == expectedHits)
            #expect(hits > 0 && hits < hashes.count)
            // The closure and array forms.
            let values = try cache.bytes(hashes)
            for (i, hash) in hashes.enumerated() { #expect(values[i] == (try cache.bytes(hash)), "key \(hash)") }
            var seen: [Int] = []
            let lent = try cache.get(hashes) { index, value in
                seen.append(index)
                #expect(decodeValue(Array(value), hash: hashes[index]) == hashes[index])
            }
            #expect(lent == hits)
            #expect(seen == hashes.indices.filter { lengths[$0] >= 0 })
            #expect(try cache.verify().isClean)
        }
    }

    /// Exact LRU: the batch's hits become the most recent, the last one first.
    @Test func exactBatchPromotesInOrder() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 4)
            for hash in UInt32(1)...4 { try cache.set(hash, "v\(hash)") }
            _ = try cache.bytes([1, 99, 2])  // order now, most recent first: 2, 1, 4, 3
            #expect(try cache.set(5, "v5").evictedHash == 3)
            #expect(try cache.set(6, "v6").evictedHash == 4)
            #expect(try cache.set(7, "v7").evictedHash == 1)
        }
    }

    @Test func badArgumentsAreTypedErrorsAndReadNothing() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 32, capacity: 8)
            try cache.set(1, [UInt8](repeating: 1, count: 32))
            let keys: [UInt32] = [1, 2]
            var lengths = [Int](repeating: 7, count: 1)
            var buffer = [UInt8](repeating: 0, count: 64)
            _ = keys.withUnsafeBufferPointer { keys in
                buffer.withUnsafeMutableBytes { bytes in
                    lengths.withUnsafeMutableBufferPointer { lengths in
                        expectShmError(.invalidArgument) { try cache.get(keys, into: bytes, stride: 32, lengths: lengths) }
                    }
                }
            }
            #expect(lengths == [7])
            var two = [Int](repeating: 7, count: 2)
            keys.withUnsafeBufferPointer { keys in
                buffer.withUnsafeMutableBytes { bytes in
                    two.withUnsafeMutableBufferPointer { lengths in
                        // Too small a buffer for the stride, then a value longer than the stride.
                        expectShmError(.invalidArgument) { try cache.get(keys, into: bytes, stride: 40, lengths: lengths) }
                        expectShmError(.invalidArgument) { try cache.get(keys, into: bytes, stride: 16, lengths: lengths) }
                    }
                }
            }
            #expect(try cache.verify().isClean)
        }
    }
}

/// Huge-page segments: a typed error when the system has none free; when this
/// process may reserve them (root), a cache on them works across processes, and
/// the pool is put back as it was.
@Suite(.serialized) struct HugePagesTests {
    static let poolPath = "/proc/sys/vm/nr_hugepages"

    static func readPool() -> Int? {
        guard let file = fopen(poolPath, "r") else { return nil }
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 32)
        guard fgets(&line, 32, file) != nil else { return nil }
        return Int(String(decoding: line.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }

    static func writePool(_ pages: Int) -> Bool {
        guard let file = fopen(poolPath, "w") else { return false }
        let ok = fputs("\(pages)\n", file) >= 0
        return fclose(file) == 0 && ok
    }

    @Test func noFreeHugePagesIsATypedError() throws {
        try withKey { key in
            let free = ShmRegion.hugePagesFree
            // Ask for more than are free: the same error whatever the pool holds.
            let byteCount = (free + 1) * ShmRegion.hugePageSize
            do throws(ShmError) {
                let region = try ShmRegion.create(key: key, byteCount: byteCount, hugePages: true)
                try? region.remove()
                Issue.record("created \(byteCount) bytes of huge pages with \(free) free")
            } catch {
                #expect(error.code == .hugePagesUnavailable, "\(error)")
                #expect(error.detail?.contains("nr_hugepages") == true, "\(error)")
            }
            #expect(!ShmRegion.exists(key: key))
        }
    }

    @Test func cacheOnHugePagesWorksAcrossProcesses() throws {
        let pages = 2
        guard getuid() == 0, let before = Self.readPool() else { return }  // only root may grow the pool
        guard Self.writePool(before + pages) else { return }
        defer { _ = Self.writePool(before) }
        guard ShmRegion.hugePagesFree >= pages else { return }  // the kernel could not find the memory
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 64, capacity: 1_000, hugePages: true)
            defer { try? cache.region.remove() }
            #expect(cache.region.byteCount % ShmRegion.hugePageSize == 0)
            for hash in UInt32(1)...100 { try cache.set(hash, encodeValue(hash: hash, version: 1, length: 40)) }
            let run = try runHelper(["lru-script", key.description, "set:500:peer", "get:7"])
            #expect(run.status == 0, "\(run.errorOutput)")
            #expect(run.values["get.7"] != nil)
            #expect(try cache.string(500) == "peer")
            #expect(try cache.verify().isClean)
        }
    }
}
