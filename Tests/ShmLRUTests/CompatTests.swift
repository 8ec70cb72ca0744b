import Foundation
import Glibc
import ShmLRU
import Testing

/// The seed facade: the seed's example (test/example.js), ported line by line,
/// with a real worker process; results and `get_last_reason` texts.
@Suite struct CompatTests {
    func worker(_ key: ShmKey, _ ops: [String]) throws -> [String: String] {
        let run = try runHelper(["compat-worker", key.description] + ops)
        #expect(run.status == 0, "\(run.errorOutput)")
        return run.values
    }

    @Test func seedExample() throws {
        try withKey { key in
            try withKey { unexisting in
                // Creating shm with the same key twice fails.
                let a = try #require(Shm.create(10, .float32, key))
                defer { Shm.detach(key, true) }
                #expect(a.key == key)
                #expect(a.count(of: Float.self) == 10)
                #expect(Shm.create(10, .float32, key) == nil)
                #expect(Shm.get_last_reason(key).hasPrefix("exists"))
                #expect(Shm.get_last_reason(key) == "OK", "reading the reason resets it")
                // Getting shm by an unexisting key fails.
                #expect(Shm.get(unexisting, .buffer) == nil)
            }
            // Shm between processes.
            let buf = try #require(Shm.create(4096))
            defer { Shm.detach(buf.key, true) }
            let arr = try #require(Shm.create(1_000_000, .float32))
            defer { Shm.detach(arr.key, true) }
            #expect(arr.count(of: Float.self) == 1_000_000)
            #expect(arr.byteCount == 4 * 1_000_000)
            buf.array(of: UInt8.self)[0] = 1
            arr.array(of: Float.self)[0] = 10.0
            let readBack = try runHelper(["region-read-float", arr.key.description, "0"])
            #expect(readBack.values["value"] == "10.0", "\(readBack.errorOutput)")

            let arr2D2 = try #require(Shm.create(1_000_000))
            let lru = arr2D2.key
            defer { Shm.detach(lru, true) }
            let cache = try #require(Shm.initLRU(lru, 250, 10000))
            #expect(cache > 0 && cache * 250 < 10000)
            #expect(Shm.initLRU(lru, 250, 10000) == cache, "a second call returns the same count")
            #expect(Shm.getSegmentSize(lru) == 1_000_000)

            let hash: UInt32 = 134
            let elID = try #require(Shm.set(lru, hash, "this is at test"))
            #expect(Shm.get_el(lru, elID) == "this is at test")
            let elID2 = try #require(Shm.set(lru, hash, "we test different this time"))
            #expect(elID2 == elID, "an update stays in place")
            #expect(Shm.get_el(lru, elID2) == "we test different this time")

            var hash2: UInt32 = 136
            let elID3 = try #require(Shm.set(lru, hash2, "we wolly gollies abren"))
            #expect(elID3 != elID)
            #expect(Shm.get_el(lru, elID3) == "we wolly gollies abren")
            #expect(Shm.del_el(lru, elID3) == true)
            // The seed returned "DELETED: " + the old value; the facade returns nil and says why.
            #expect(Shm.get_el(lru, elID3) == nil)
            #expect(Shm.get_last_reason(lru).hasPrefix("deleted"))
            #expect(Shm.del_el(lru, elID3) == false)
            #expect(Shm.get_last_reason(lru).hasPrefix("already deleted"))
            #expect(Shm.get_last_reason(lru) == "OK")

            var hashes: [UInt32] = []
            for i in 0..<10 {
                hash2 += 1
                hashes.append(hash2)
                #expect(Shm.set(lru, hash2, "GEEE \(i) wolly gollies abren") != nil)
            }
            for (i, h) in hashes.enumerated() {
                #expect(Shm.get_el_hash(lru, h) == "GEEE \(i) wolly gollies abren")
            }
            let dump = try #require(Shm.debug_dump_list(lru))
            let dumped = try #require(try JSONSerialization.jsonObject(with: Data(dump.utf8)) as? [String: Any])
            let forward = try #require(dumped["records"] as? [[String: Any]]).compactMap { ($0["hash"] as? NSNumber)?.uint32Value }
            #expect(forward == hashes.reversed() + [hash], "most recent first; 134 is the oldest")
            let backDump = try #require(Shm.debug_dump_list(lru, true))
            let back = try #require(try JSONSerialization.jsonObject(with: Data(backDump.utf8)) as? [String: Any])
            #expect(try #require(back["records"] as? [[String: Any]]).compactMap { ($0["hash"] as? NSNumber)?.uint32Value } == forward.reversed())

            // The worker attaches (not the initializer) and reads every hash.
            let w = try worker(lru, ["init"] + hashes.map { "get:\($0)" })
            #expect(w["init"] == String(cache))
            for (i, h) in hashes.enumerated() {
                #expect(w["get.\(h)"] == "GEEE \(i) wolly gollies abren")
                #expect(w["reason.\(h)"] == "OK")
            }
            // The master deletes three; the worker reloads and sees them gone.
            let deleted = [hashes[2], hashes[5], hashes[7]]
            for h in deleted { #expect(Shm.del_key(lru, h) == true) }
            #expect(Shm.del_key(lru, hashes[2]) == false)
            #expect(Shm.get_last_reason(lru).hasPrefix("not found"))
            let w2 = try worker(lru, ["init", "reload"] + hashes.map { "get:\($0)" })
            #expect(w2["reload"] == "true")
            for (i, h) in hashes.enumerated() {
                if deleted.contains(h) {
                    #expect(w2["get.\(h)"] == "nil")
                    #expect(w2["reason.\(h)"] == "OK", "a plain miss keeps OK")
                } else {
                    #expect(w2["get.\(h)"] == "GEEE \(i) wolly gollies abren")
                }
            }
        }
    }

    /// The master's map (process-local, as in the seed) after a peer's writes:
    /// stale until reload, never another key's value.
    @Test func reloadsAndShareKeys() throws {
        let region = try #require(Shm.create(200_000))
        let key = region.key
        defer { Shm.detach(key, true) }
        let capacity = try #require(Shm.initLRU(key, 250, 10000))  // as the worker attaches
        #expect(capacity > 10)
        let offset1 = try #require(Shm.set(key, 1, "one"))
        // A peer deletes 1 and reuses its record for 2, and sets 3 tagged 5.
        let w = try worker(key, ["init", "del:1", "set:2:two", "set:3:three:5", "set:4:four:6"])
        #expect(w["del.1"] == "true")
        #expect(w["set.2"] == String(offset1))
        #expect(Shm.get_el_hash(key, 1) == nil, "a miss, not the value of 2")
        #expect(Shm.get_last_reason(key) == "OK")
        #expect(Shm.get_el(key, offset1) == "two")
        #expect(Shm.get_el_hash(key, 3) == nil)
        #expect(Shm.reload_hash_map_update(key, 5) == true)
        #expect(Shm.get_el_hash(key, 3) == "three")
        #expect(Shm.get_el_hash(key, 4) == nil)
        #expect(Shm.reload_hash_map(key) == true)
        #expect(Shm.get_el_hash(key, 4) == "four")
        #expect(Shm.get_el_hash(key, 2) == "two")
        // set_share_key by offset.
        #expect(Shm.set_share_key(key, offset1, 77) == true)
        #expect(Shm.set_share_key(key, offset1 + 1, 77) == false)
        #expect(Shm.get_last_reason(key).hasPrefix("OUT OF BOUNDS"))
        #expect(Shm.get_el(key, -8) == nil)
        #expect(Shm.get_last_reason(key).hasPrefix("OUT OF BOUNDS"))
        // Eviction: least recently used first, at most max; 0 evicts none.
        #expect(Shm.run_lru_eviction(key, .now, 0) == [])
        let evicted = Shm.run_lru_eviction(key, .now, 2)
        #expect(evicted.count == 2)
        #expect(!evicted.contains(2), "2 was just read")
        #expect(Shm.run_lru_eviction(key, ShmInstant(nanoseconds: 0), 10) == [])
        // A value longer than the record: nil and a reason; nothing written.
        #expect(Shm.set(key, 9, String(repeating: "x", count: 251)) == nil)
        #expect(Shm.get_last_reason(key).hasPrefix("value too large"))
        #expect(Shm.get_el_hash(key, 9) == nil)
        #expect(Shm.set(key, 9, String(repeating: "x", count: 250)) != nil)
    }

    @Test func keysWithoutAnLRU() throws {
        try withKey { key in
            // Nothing attached under this key in this process.
            #expect(Shm.set(key, 1, "x") == nil)
            #expect(Shm.get_last_reason(key).contains("no LRU"))
            #expect(Shm.get_el_hash(key, 1) == nil)
            #expect(Shm.del_key(key, 1) == false)
            #expect(Shm.reload_hash_map(key) == false)
            #expect(Shm.debug_dump_list(key) == nil)
            #expect(Shm.initLRU(key, 8, 100) == nil, "no segment")
            #expect(Shm.getSegmentSize(key) == nil)
            #expect(Shm.detach(key) == -1)
            // A segment that holds no LRU: attach as non-initializer fails with a reason.
            _ = try #require(Shm.create(4096, .buffer, key))
            defer { Shm.detach(key, true) }
            #expect(Shm.initLRU(key, 8, 4096, false) == nil)
            #expect(Shm.get_last_reason(key).contains("incompatibleSegment"))
            #expect(Shm.initLRU(key, 8, 5000) == nil, "a region size over the segment")
            #expect(Shm.get_last_reason(key).contains("invalidSize"))
            #expect(Shm.initLRU(key, 8, 4096) != nil)
        }
    }

    /// detach returns the attachments left, 0 once destroyed; detachAll and
    /// getTotalSize are process-wide, so a worker process checks them.
    @Test func detachCountsAndTotals() throws {
        try withKey { key in
            let region = try #require(Shm.create(100, .int32, key))
            #expect(region.byteCount == 400)
            let hold = try #require(Shm.get(key))
            #expect(hold === region, "the facade keeps one attachment per key")
            let run = try runHelper(["region-detach-counts", key.description])
            #expect(run.values["lastDetach"] == "1")
            #expect(Shm.detach(key) == 0, "this process created it and was the last: destroyed")
            #expect(!ShmRegion.exists(key: key))
            #expect(Shm.detach(key) == -1)
        }
        let run = try runHelper(["compat-worker", "1", "totals"])
        #expect(run.status == 0, "\(run.errorOutput)")
        #expect(run.values["totalBefore"] == "0")
        #expect(run.values["totalAttached"] == String(4096 + 8 * 16))
        #expect(run.values["detachAll"] == "2")
        #expect(run.values["totalAfter"] == "0")
        #expect(run.values["leftBehind"] == "0")
    }
}
