import Glibc
@testable import ShmLRU
import Testing

/// The promotion policies and the fast paths of issue 7: exact LRU relinks on
/// every read; interval promotion marks lock-free and gives marked records a
/// second chance at the tail; reloadIndex rebuilds a process-local map.
@Suite struct PromotionTests {
    /// An interval so long that only the first use after a link marks a record.
    static let interval = ShmLRU.Options(promotion: .atMostEvery(.seconds(3600)))

    @Test func exactLRUEvictsTheLeastRecentlyRead() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 3)
            for hash: UInt32 in 1...3 { try cache.set(hash, "v\(hash)") }
            #expect(try cache.string(1) == "v1")  // 1 moves to the head: 2 is now the tail
            #expect(try cache.set(4, "v4").evictedHash == 2)
            #expect(try cache.set(5, "v5").evictedHash == 3)
            #expect(try cache.string(1) == "v1")
            #expect(try cache.verify().isClean)
        }
    }

    @Test func intervalPromotionGivesAReadRecordASecondChance() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 3, options: Self.interval)
            for hash: UInt32 in 1...3 { try cache.set(hash, "v\(hash)") }
            #expect(try cache.string(1) == "v1")  // marks 1 (the tail), without moving it
            let before = cache.stats.promotions
            #expect(try cache.set(4, "v4").evictedHash == 2)  // 1 moved to the head instead
            #expect(cache.stats.promotions == before + 1)
            #expect(try cache.set(5, "v5").evictedHash == 3)
            #expect(try cache.set(6, "v6").evictedHash == 1)  // its mark was used up
            #expect(try cache.string(1) == nil)
            #expect(try cache.verify().isClean)
        }
    }

    @Test func aFreshMarkedRecordIsNotWrittenAgain() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 4, options: Self.interval)
            try cache.set(9, "nine")
            let linked = try #require(try cache.lastUsed(9))
            #expect(try cache.string(9) == "nine")
            let marked = try #require(try cache.lastUsed(9))
            #expect(marked >= linked)  // a mark never moves the stamp backwards
            for _ in 0..<200 { #expect(try cache.string(9) == "nine") }
            #expect(try cache.lastUsed(9) == marked)  // within the interval: no further write
        }
    }

    @Test func anUpdateInIntervalModeMarksWithoutRelinking() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 3, options: Self.interval)
            for hash: UInt32 in 1...3 { try cache.set(hash, "v\(hash)") }
            #expect(try cache.set(1, "w1").updated)
            #expect(try cache.set(4, "v4").evictedHash == 2)  // 1 had its second chance
            #expect(try cache.string(1) == "w1")
            #expect(try cache.verify().isClean)
        }
    }

    @Test func ageEvictionSkipsOverMarkedTails() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 4, options: Self.interval)
            for hash: UInt32 in 1...3 { try cache.set(hash, "v\(hash)") }
            #expect(try cache.string(1) == "v1")
            // Every record is older than a cutoff an hour ahead; the marked tail is
            // moved first (keeping the time of its use), then evicted in its turn.
            let evicted = try cache.evict(lastUsedBefore: ShmInstant.now.advanced(by: .seconds(3600)))
            #expect(evicted == [2, 3, 1])
            #expect(cache.count == 0)
            #expect(try cache.verify().isClean)
        }
    }

    /// Under LRU and SIEVE a stamp's bit 0 alone is the use mark (bits 0-1 are
    /// S3-FIFO's frequency): a time whose bit 1 is set is not a mark. The age
    /// eviction read both bits, so on every coarse tick whose nanoseconds have bit
    /// 1 set, every record looked marked and a read record was aged out first:
    /// the intermittent failure of `ageEvictionSkipsOverMarkedTails`, made certain
    /// by giving the three records one such link time.
    @Test(arguments: [ShmLRU.EvictionPolicy.lru, .sieve])
    func aTimeWithBit1SetIsNotAUseMark(policy: ShmLRU.EvictionPolicy) throws {
        try withKey { key in
            let options = ShmLRU.Options(promotion: .atMostEvery(.seconds(3600)), policy: policy)
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 4, options: options)
            for hash: UInt32 in 1...3 { try cache.set(hash, "v\(hash)") }
            // A minute ahead: no clock read below passes it, so the read's mark keeps it.
            let time = (_monotonicNanoseconds() + 60_000_000_000) & ~UInt64(3) | 2
            try cache._withLockedHandle("test") { (lru) throws(ShmError) in
                for hash: UInt32 in 1...3 { lru.segment.setStamp(lru.find(hash)!.index, time) }
            }
            #expect(try cache.string(1) == "v1")  // marks 1 (bit 0); its time stays
            #expect(try cache.lastUsed(1) == ShmInstant(nanoseconds: time))
            #expect(try cache.evict(lastUsedBefore: ShmInstant(nanoseconds: .max)) == [2, 3, 1])
            #expect(try cache.verify().isClean)
        }
    }

    /// The first mark after a link takes the time of the read, not the handle's
    /// cached clock (which lags by up to 63 of its hits: on this fresh handle, the
    /// time it was created). Each pause lets the coarse clock (ticks of 1 to 10 ms)
    /// move on, so the order below does not depend on where its ticks fall: the
    /// intermittent failure of `ageEvictionSkipsOverMarkedTails`, made certain.
    @Test func aFirstMarkTakesTheTimeOfTheRead() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 4, options: Self.interval)
            try cache.set(1, "v1")
            usleep(25_000)
            try cache.set(2, "v2")
            try cache.set(3, "v3")
            let cutoff = ShmInstant.now
            usleep(25_000)
            #expect(try cache.string(1) == "v1")  // the first use since its link: marks it
            let lastUse = try #require(try cache.lastUsed(1))
            #expect(lastUse > cutoff, "a read after the cutoff counts as a use after it")
            #expect(try cache.evict(lastUsedBefore: cutoff) == [2, 3])
            #expect(try cache.evict(lastUsedBefore: ShmInstant.now.advanced(by: .seconds(3600))) == [1])
            #expect(try cache.verify().isClean)
        }
    }

    @Test func exactAndIntervalHandlesShareOneCache() throws {
        try withKey { key in
            let exact = try ShmLRU.create(key: key, recordSize: 16, capacity: 3)
            let reader = try ShmLRU.attach(key: key, options: Self.interval)
            for hash: UInt32 in 1...3 { try exact.set(hash, "v\(hash)") }
            #expect(try reader.string(1) == "v1")  // marked by the interval handle
            #expect(try exact.set(4, "v4").evictedHash == 2)  // honoured by the exact one
            #expect(try exact.verify().isClean)
        }
    }

    @Test func reloadIndexRebuildsAProcessLocalMapOfManyRecords() throws {
        try withKey { key in
            let count = 5_000
            let cache = try ShmLRU.create(key: key, recordSize: 32, capacity: count, index: .processLocal)
            for hash in 0..<UInt32(count) { try cache.set(hash &* 2_654_435_761, "r\(hash)") }
            for hash in stride(from: 0, to: UInt32(count), by: 3) { try cache.remove(hash &* 2_654_435_761) }
            let live = count - (count + 2) / 3
            #expect(try cache.reloadIndex() == live)
            for hash in 0..<UInt32(count) {
                let expected: String? = hash % 3 == 0 ? nil : "r\(hash)"
                #expect(try cache.string(hash &* 2_654_435_761) == expected)
            }
            #expect(try cache.verify().isClean)
            // A peer process's writes become visible after reloadIndex.
            let set = try runHelper(["lru-set", key.description, "424242", "from the peer"])
            #expect(set.status == 0, "\(set.errorOutput)")
            #expect(try cache.reloadIndex() == live + 1)
            #expect(try cache.string(424_242) == "from the peer")
        }
    }

    @Test func intervalReadersNeverSeeTornValuesAcrossProcesses() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 64, capacity: 64)
            let hammers = try (0..<2).map { seed in
                try spawnHelper(["lru-hammer", key.description, "\(seed + 1)", "20000", "96", "1"])
            }
            for hammer in hammers {
                let run = hammer.wait()
                #expect(run.status == 0, "\(run.errorOutput)")
            }
            #expect(try cache.verify().isClean)
        }
    }
}
