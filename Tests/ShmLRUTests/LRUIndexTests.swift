import Glibc
import ShmLRU
import Testing

/// Issue 3, the two index kinds: the per-process map (the seed's design, with
/// reloads) never answers with another key's value; the shared index shows a
/// peer's writes at once and lets attach skip any scan.
@Suite struct LRUIndexTests {
    func script(_ key: ShmKey, _ ops: String...) throws -> [String: String] {
        let run = try runHelper(["lru-script", key.description] + ops)
        #expect(run.status == 0, "\(run.errorOutput)")
        return run.values
    }

    /// A peer deletes our key's record and reuses it for another hash: our stale
    /// map still points there, and must report a miss, not the other value.
    @Test func staleLocalMapNeverReturnsAnotherKeysValue() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 4, index: .processLocal)
            let offset = try cache.set(1, "one").offset
            #expect(try cache.string(1) == "one")
            let peer = try script(key, "del:1", "set:2:two")
            #expect(peer["del.1"] == "true")
            #expect(peer["set.2.offset"] == String(offset), "the freed record is reused (LIFO free list)")
            // Our map still says 1 -> offset; the record now holds 2.
            #expect(try cache.bytes(1) == nil, "a miss, not the other key's value")
            #expect(try cache.contains(1) == false)
            #expect(try cache.withValue(1) { Array($0) } == nil)
            var buffer = [UInt8](repeating: 0, count: 16)
            #expect(try buffer.withUnsafeMutableBytes { b throws(ShmError) in try cache.get(1, into: b) } == nil)
            #expect(try cache.remove(1) == false, "delete through the stale entry deletes nothing")
            #expect(try cache.string(atOffset: offset) == "two", "by offset, the record is what it is")
            #expect(try cache.hash(atOffset: offset) == 2)
            // Not yet in our map: a miss until we reload.
            #expect(try cache.bytes(2) == nil)
            // Setting 1 again takes a new record and leaves 2 alone.
            let again = try cache.set(1, "uno")
            #expect(!again.updated)
            #expect(again.offset != offset)
            #expect(try cache.string(atOffset: offset) == "two")
            #expect(try cache.reloadIndex() == 2)
            #expect(try cache.string(2) == "two")
            #expect(try cache.string(1) == "uno")
            #expect(try cache.verify().isClean)
        }
    }

    /// A peer's in-place update is seen through a map entry that still names the record.
    @Test func localMapSeesInPlaceUpdates() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 4, index: .processLocal)
            let offset = try cache.set(5, "old").offset
            let peer = try script(key, "set:5:new")
            #expect(peer["set.5.offset"] == String(offset))
            #expect(try cache.string(5) == "new")
        }
    }

    /// The seed's reload_hash_map_update: adds only the records with that share key.
    @Test func reloadByShareKey() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 8, index: .processLocal)
            try cache.set(1, "mine")
            let peer = try script(key, "set:10:ten:7", "set:11:eleven:8", "set:12:twelve", "count")
            #expect(peer["count"] == "4")
            #expect(try cache.bytes(10) == nil)
            #expect(try cache.reloadIndex(shareKey: 7) == 4, "returns the live count")
            #expect(try cache.string(10) == "ten")
            #expect(try cache.bytes(11) == nil)
            #expect(try cache.bytes(12) == nil)
            #expect(try cache.string(1) == "mine", "the map keeps what it had")
            // Tag 12 by offset from here, then reload that tag.
            let offset12 = try #require(peer["set.12.offset"].flatMap { Int($0) })
            try cache.setShareKey(9, atOffset: offset12)
            #expect(try cache.reloadIndex(shareKey: 9) == 4)
            #expect(try cache.string(12) == "twelve")
            #expect(try cache.bytes(11) == nil)
            try cache.reloadIndex()
            #expect(try cache.string(11) == "eleven")
            // The peer's new attach builds its map from the segment.
            let reader = try script(key, "get:1", "get:10", "get:11", "get:12", "get:99")
            #expect(reader["get.1"] == "mine")
            #expect(reader["get.10"] == "ten")
            #expect(reader["get.11"] == "eleven")
            #expect(reader["get.12"] == "twelve")
            #expect(reader["get.99"] == "miss")
        }
    }

    /// A peer that set a hash our map did not know leaves two records for it (the
    /// per-process design); a read never mixes them up, and after a reload the
    /// most recently written one wins.
    @Test func localMapDuplicateAfterStaleSet() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 8, index: .processLocal)
            _ = try script(key, "set:3:peer")
            try cache.set(3, "mine")  // our map did not know 3
            #expect(try cache.string(3) == "mine")
            #expect(try cache.verify().isClean)
            try cache.reloadIndex()
            #expect(try cache.string(3) == "mine", "the most recently used record wins")
            #expect(try cache.remove(3))
            #expect(try cache.verify().isClean)
        }
    }

    /// The shared index: a peer's set, update and delete are visible at once, no reload.
    @Test func sharedIndexShowsPeerWritesAtOnce() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 8, index: .shared)
            let attached = try ShmLRU.attach(key: key)  // another handle, attached before the writes
            try cache.set(1, "one")
            _ = try script(key, "set:2:two", "set:1:uno", "del:1", "set:3:three", "reload")
            for handle in [cache, attached] {
                #expect(try handle.string(2) == "two")
                #expect(try handle.bytes(1) == nil)
                #expect(try handle.string(3) == "three")
                #expect(handle.count == 2)
            }
            // And ours are visible to the peer.
            try attached.set(4, "four")
            let peer = try script(key, "get:4", "get:2")
            #expect(peer["get.4"] == "four")
            #expect(peer["get.2"] == "two")
            #expect(try cache.reloadIndex() == 3, "a no-op that reports the count")
            #expect(try cache.verify().isClean)
        }
    }

    /// Interval promotion reads without the lock through the shared index, and sees a peer's writes.
    @Test func lockFreeReadsSeePeerWrites() throws {
        try withKey { key in
            _ = try ShmLRU.create(key: key, recordSize: 16, capacity: 8)
            let reader = try ShmLRU.attach(key: key, options: .init(promotion: .atMostEvery(.seconds(60))))
            _ = try script(key, "set:1:a", "set:2:b")
            #expect(try reader.string(1) == "a")
            _ = try script(key, "del:1", "set:2:bb", "set:1:aa")
            #expect(try reader.string(1) == "aa")
            #expect(try reader.string(2) == "bb")
            _ = try script(key, "del:2")
            #expect(try reader.bytes(2) == nil)
        }
    }

    /// Attaching a full, large shared-index cache reads its header and nothing else:
    /// the attaching process touches almost none of the segment. A process-local
    /// cache of the same size is scanned on attach (the control: the measure works).
    @Test func attachingASharedIndexDoesNotScan() throws {
        let records = 200_000
        var rss: [ShmLRU.IndexKind: Int] = [:]
        var segmentKB: [ShmLRU.IndexKind: Int] = [:]
        for kind in ShmLRU.IndexKind.allCases {
            try withKey { key in
                let cache = try ShmLRU.create(key: key, recordSize: 8, capacity: records, index: kind)
                for hash in 0..<UInt32(records) { try cache.set(hash, [1, 2, 3, 4, 5, 6, 7, 8]) }
                #expect(cache.count == records)
                let run = try runHelper(["lru-attach-rss", key.description])
                #expect(run.status == 0, "\(run.errorOutput)")
                #expect(run.values["count"] == String(records))
                rss[kind] = Int(run.values["rssKB"] ?? "")
                segmentKB[kind] = cache.region.byteCount / 1024
            }
        }
        let shared = try #require(rss[.shared])
        let local = try #require(rss[.processLocal])
        let sharedKB = try #require(segmentKB[.shared])
        let localKB = try #require(segmentKB[.processLocal])
        #expect(sharedKB > 9_000 && localKB > 7_500)
        // At most 2% of the segment, or one 2 MiB page where shmem uses transparent huge pages.
        #expect(shared < max(sharedKB / 50, 2_560), "shared: attach touched \(shared) kB of \(sharedKB) kB")
        #expect(shared * 2 < local)
        #expect(local > localKB * 7 / 10, "process-local control: attach touched only \(local) kB of \(localKB) kB")
    }
}
