import Glibc
@testable import ShmLRU
import ShmLRUTestSupport
import Testing

/// Issue 15: the eviction policy is recorded in the segment and checked on
/// attach; verify() and repair() understand the SIEVE hand and the S3-FIFO
/// queues; age eviction and the store work under every policy.
@Suite struct PolicyTests {
    @Test(arguments: ShmLRU.EvictionPolicy.allCases)
    func attachTakesOrChecksTheSegmentsPolicy(policy: ShmLRU.EvictionPolicy) throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 100, options: ShmLRU.Options(policy: policy))
            defer { _ = try? cache.detach() }
            #expect(cache.policy == policy)
            let peer = try ShmLRU.attach(key: key)
            #expect(peer.policy == policy, "attach with no policy takes the segment's")
            _ = try peer.detach()
            let same = try ShmLRU.attach(key: key, options: ShmLRU.Options(policy: policy))
            #expect(same.policy == policy)
            _ = try same.detach()
            for other in ShmLRU.EvictionPolicy.allCases where other != policy {
                let error = expectShmError(.incompatibleSegment) { _ = try ShmLRU.attach(key: key, options: ShmLRU.Options(policy: other)) }
                #expect(error?.description.contains(policy.rawValue) == true, "the error names the segment's policy")
            }
        }
    }

    @Test func attachRejectsAPolicyFieldThatDoesNotAddUp() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 100, options: ShmLRU.Options(policy: .s3fifo))
            defer { _ = try? cache.detach() }
            let s = cache._segment
            for (offset, bad) in [(_Layout.H.policy, UInt32(7)), (_Layout.H.policy, 1), (_Layout.H.ghostSlots, 4), (_Layout.H.smallTarget, 50)] {
                let saved = s.load(offset)
                s.store(offset, bad)
                expectShmError(.corrupted, "header word \(offset) = \(bad)") { _ = try ShmLRU.attach(key: key) }
                s.store(offset, saved)
            }
            let ghost = s.load64(_Layout.H.ghostOffset)
            s.store64(_Layout.H.ghostOffset, ghost + 8)
            expectShmError(.corrupted) { _ = try ShmLRU.attach(key: key) }
            s.store64(_Layout.H.ghostOffset, ghost)
            _ = try ShmLRU.attach(key: key).detach()
        }
    }

    @Test func verifyFindsBadQueueStateAndRepairFixesIt() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 40, options: ShmLRU.Options(policy: .s3fifo))
            defer { _ = try? cache.detach() }
            for hash in UInt32(0)..<60 { try cache.set(hash, [UInt8(hash)]) }
            for hash in UInt32(40)..<60 { _ = try cache.bytes(hash) }
            #expect(try cache.verify().isClean)
            let s = cache._segment
            let small = s.smallCount
            #expect(small > 0, "the small queue holds records")
            s.smallCount = small + 3
            let report = try cache.verify()
            #expect(report.problems.contains { $0.contains("small-queue count") }, "\(report)")
            let tail = s.smallTail
            s.smallTail = s.tail
            #expect(try cache.verify().problems.contains { $0.contains("small-queue tail") })
            // A small-queue record after a main-queue one.
            let record = s.layout.recordOffset(s.tail) + _Layout.R.stamp
            s.store64(record, s.load64(record) | _Layout.stampSmall)
            #expect(try cache.verify().problems.contains { $0.contains("follows a main-queue record") })
            try cache.repair()
            let repaired = try cache.verify()
            #expect(repaired.isClean, "\(repaired)")
            #expect(s.smallCount == small + 1, "rebuilt from the records' queue bits (the tail's included)")
            #expect(s.smallTail != tail)
            for hash in UInt32(100)..<200 { try cache.set(hash, [1]) }
            #expect(try cache.verify().isClean)
        }
    }

    @Test func verifyFindsAStraySieveHand() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 10, options: ShmLRU.Options(policy: .sieve))
            defer { _ = try? cache.detach() }
            for hash in UInt32(0)..<10 { try cache.set(hash, [1]) }
            for hash in UInt32(0)..<5 { _ = try cache.bytes(hash) }
            try cache.set(99, [2])  // the hand unmarks 0...4 and evicts 5
            #expect(try cache.contains(5) == false)
            #expect(try cache.contains(0))
            #expect(cache._segment.sieveHand != _Layout.none)
            #expect(try cache.verify().isClean)
            cache._segment.sieveHand = 12345
            #expect(try cache.verify().problems.contains { $0.contains("SIEVE hand") })
            try cache.set(100, [3])  // an out-of-range hand is caught, the cache repaired, the set retried
            #expect(try cache.verify().isClean)
            #expect(cache.stats.recoveries == 1)
        }
    }

    @Test(arguments: [ShmLRU.EvictionPolicy.sieve, .s3fifo])
    func ageEvictionTakesTheOldestUse(policy: ShmLRU.EvictionPolicy) throws {
        try withKey { key in
            let cache = try ShmLRU.create(
                key: key, recordSize: 16, capacity: 20,
                options: ShmLRU.Options(promotion: .atMostEvery(.milliseconds(1)), policy: policy))
            defer { _ = try? cache.detach() }
            for hash in UInt32(1)...10 { try cache.set(hash, [UInt8(hash)]) }
            usleep(30_000)
            let cutoff = ShmInstant.now
            usleep(30_000)
            // Refreshes their time (interval 1 ms; a handle reads the clock once per 64 hits).
            for _ in 0..<100 { for hash in UInt32(1)...5 { _ = try cache.bytes(hash) } }
            let evicted = try cache.evict(lastUsedBefore: cutoff)
            #expect(Set(evicted) == Set(UInt32(6)...10))
            #expect(cache.count == 5)
            #expect(try cache.verify().isClean)
        }
    }

    @Test(arguments: [ShmLRU.EvictionPolicy.sieve, .s3fifo])
    func storeEvictsByItsPolicy(policy: ShmLRU.EvictionPolicy) throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 50, recordSize: 128, policy: policy))
            defer { try? store.detach() }
            #expect(store.cache.policy == policy)
            for round in 0..<3 {
                for i in 0..<200 {
                    try store.set("key\(i)", bytes: Array("value \(i) \(round)".utf8))
                    if i % 4 == 0 { _ = try store.bytes("key0") }  // a hot key
                }
            }
            #expect(store.count == 50)
            #expect(try store.bytes("key0") != nil, "the hot key survives its policy's evictions")
            #expect(try store.verify().isClean)
            let peer = try ShmStore.attach(key: key)
            #expect(peer.configuration.policy == policy)
            try peer.detach()
        }
    }

    @Test(arguments: [ShmLRU.EvictionPolicy.sieve, .s3fifo])
    func expiredEntriesAreReclaimedFromEitherQueue(policy: ShmLRU.EvictionPolicy) throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 40, recordSize: 96, policy: policy))
            defer { try? store.detach() }
            for i in 0..<60 { try store.set("long\(i)", bytes: [1], expiry: .never) }  // S3-FIFO: both queues hold some
            for i in 0..<30 { _ = try store.bytes("long\(i % 5)") }
            for i in 0..<10 { try store.set("short\(i)", bytes: [2], expiry: .after(.milliseconds(20))) }
            let live = try (0..<10).filter { try store.contains("short\($0)") }.count  // the policy may have evicted some
            #expect(live > 0)
            usleep(60_000)
            #expect(try store.purgeExpired() == live)
            #expect(store.count == 40 - live)
            #expect(try store.verify().isClean)
            for i in 0..<100 { try store.set("more\(i)", bytes: [3], expiry: .never) }
            #expect(store.count == 40)
            #expect(try store.verify().isClean)
        }
    }
}
