import Foundation
import ShmLRU
import Testing

/// Issue 3: the debug dump is valid JSON in both directions; stats add up.
@Suite struct DumpAndStatsTests {
    func parse(_ json: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> [String: Any] {
        let object = try JSONSerialization.jsonObject(with: Data(json.utf8))
        return try #require(object as? [String: Any], sourceLocation: sourceLocation)
    }

    func records(_ dump: [String: Any]) throws -> [[String: Any]] {
        try #require(dump["records"] as? [[String: Any]])
    }

    func hashes(_ records: [[String: Any]]) -> [UInt32] {
        records.compactMap { ($0["hash"] as? NSNumber)?.uint32Value }
    }

    @Test(arguments: ShmLRU.IndexKind.allCases)
    func dumpIsValidJSONBothWays(_ index: ShmLRU.IndexKind) throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 32, capacity: 8, index: index)
            // Empty.
            let empty = try parse(try cache.dumpJSON())
            #expect(try records(empty).isEmpty)
            #expect((empty["count"] as? NSNumber)?.intValue == 0)
            #expect(try records(try parse(try cache.dumpJSON(backwards: true))).isEmpty)

            let values: [UInt32: [UInt8]] = [
                1: Array("plain".utf8),
                2: Array("quote \" backslash \\ slash /".utf8),
                3: Array("new\nline\ttab\r\u{1}\u{1F}".utf8),
                4: Array("nul\u{0}inside".utf8),
                5: Array("émoji 🎉".utf8),
                6: [0xFF, 0xFE, 0x00, 0x80],  // not UTF-8
                7: [],
            ]
            for hash in values.keys.sorted() { try cache.set(hash, values[hash]!, shareKey: hash * 10) }
            _ = try cache.bytes(3)  // order now 3,7,6,5,4,2,1
            let forwardDump = try parse(try cache.dumpJSON())
            let backwardDump = try parse(try cache.dumpJSON(backwards: true))
            #expect(forwardDump["order"] as? String == "mostRecentFirst")
            #expect(backwardDump["order"] as? String == "leastRecentFirst")
            #expect(forwardDump["complete"] as? Bool == true)
            #expect(forwardDump["key"] as? String == key.description)
            #expect((forwardDump["capacity"] as? NSNumber)?.intValue == 8)
            #expect((forwardDump["recordSize"] as? NSNumber)?.intValue == 32)
            #expect((forwardDump["count"] as? NSNumber)?.intValue == 7)
            #expect(forwardDump["indexKind"] as? String == index.rawValue)
            let forward = try records(forwardDump)
            let backward = try records(backwardDump)
            #expect(hashes(forward) == [3, 7, 6, 5, 4, 2, 1])
            #expect(hashes(backward) == hashes(forward).reversed())
            #expect(forward.map { ($0["offset"] as? NSNumber)?.intValue } == backward.reversed().map { ($0["offset"] as? NSNumber)?.intValue })

            // Each record: its value (text or hex), share key, length, and links that name its neighbours.
            var previousStamp = UInt64.max
            for (i, record) in forward.enumerated() {
                let hash = try #require((record["hash"] as? NSNumber)?.uint32Value)
                let expected = values[hash]!
                #expect((record["length"] as? NSNumber)?.intValue == expected.count)
                #expect((record["shareKey"] as? NSNumber)?.uint32Value == hash * 10)
                if let text = record["value"] as? String {
                    #expect(Array(text.utf8) == expected, "value of \(hash)")
                    #expect(record["valueHex"] == nil)
                } else {
                    #expect(hash == 6, "only the non-UTF-8 value is hex")
                    #expect(record["valueHex"] as? String == "fffe0080")
                }
                let prev = record["prevOffset"]
                let next = record["nextOffset"]
                if i == 0 { #expect(prev is NSNull) } else { #expect((prev as? NSNumber)?.intValue == (forward[i - 1]["offset"] as? NSNumber)?.intValue) }
                if i == forward.count - 1 { #expect(next is NSNull) } else { #expect((next as? NSNumber)?.intValue == (forward[i + 1]["offset"] as? NSNumber)?.intValue) }
                let stamp = try #require((record["lastUsedNs"] as? NSNumber)?.uint64Value)
                #expect(stamp <= previousStamp, "most recent first")
                previousStamp = stamp
                // The dump's offset is the record's: the by-offset API agrees.
                let offset = try #require((record["offset"] as? NSNumber)?.intValue)
                #expect(try cache.hash(atOffset: offset) == hash)
            }
            #expect(try cache.verify().isClean)
        }
    }

    /// A dump is not a use: it does not reorder the list or refresh a record.
    @Test func dumpDoesNotPromote() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 8, capacity: 4)
            for hash: UInt32 in 1...3 { try cache.set(hash, "v") }
            let first = try cache.dumpJSON()
            #expect(try cache.dumpJSON() == first)
            #expect(try cache.dumpJSON(backwards: true) != first)
            #expect(try cache.dumpJSON() == first)
        }
    }

    @Test func statsAddUp() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 8, capacity: 4)
            let zero = cache.stats
            #expect(zero.capacity == 4 && zero.recordSize == 8 && zero.count == 0 && zero.free == 4)
            #expect(zero.inserts == 0 && zero.updates == 0 && zero.deletes == 0 && zero.evictions == 0)
            #expect(zero.hits == 0 && zero.misses == 0 && zero.recoveries == 0)
            for hash: UInt32 in 1...4 { try cache.set(hash, "v\(hash)") }  // 4 inserts
            try cache.set(2, "two")  // update
            try cache.set(5, "v5")  // insert + eviction of 1
            _ = try cache.bytes(2)  // hit
            _ = try cache.bytes(1)  // miss
            _ = try cache.string(9)  // miss
            _ = try cache.bytes(atOffset: try cache.set(6, "v6").offset)  // insert + eviction of 3, hit
            try cache.remove(4)  // delete
            try cache.remove(4)  // nothing
            let evicted = try cache.evict(lastUsedBefore: .now, limit: 1)  // eviction
            #expect(evicted == [5])
            let s = cache.stats
            #expect(s.inserts == 6)
            #expect(s.updates == 1)
            #expect(s.evictions == 3)
            #expect(s.deletes == 1)
            #expect(s.hits == 2)
            #expect(s.misses == 2)
            #expect(s.count == 2)
            #expect(s.free == 2)
            #expect(s.count + s.free == s.capacity)
            #expect(s.inserts - s.deletes - s.evictions == UInt64(s.count))
            #expect(s.count == cache.count)
            #expect(try cache.verify().liveRecords == s.count)

            // Shared counters see every process; hits and misses are this handle's.
            let other = try ShmLRU.attach(key: key)
            let run = try runHelper(["lru-script", key.description, "set:20:a", "set:20:b", "del:20", "get:2"])
            #expect(run.status == 0, "\(run.errorOutput)")
            let t = other.stats
            #expect(t.inserts == 7 && t.updates == 2 && t.deletes == 2)
            #expect(t.hits == 0 && t.misses == 0)
            #expect(cache.stats.hits == 2)
            try cache.removeAll()
            #expect(cache.stats.count == 0)
            #expect(cache.stats.free == 4)
            #expect(cache.stats.deletes == 4)

            // Stats are Codable (the CLI prints them as JSON).
            let data = try JSONEncoder().encode(cache.stats)
            #expect(try JSONDecoder().decode(ShmLRU.Stats.self, from: data) == cache.stats)
        }
    }
}
