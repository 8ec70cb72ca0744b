import CShm
import Glibc
import ShmLRU
import ShmLRUTestSupport
import Testing

/// Issues 15 and 29: a helper SIGKILLed at named points inside SIEVE's, S3-FIFO's
/// and TinyLFU's eviction (the hand's walk, a move between queues, the ghost
/// insertion, TinyLFU's window CLOCK, the
/// victim's detach and unlink, the age eviction, a repair's relinking): the next
/// locker repairs, `verify()` is clean, every entry the victim was not evicting
/// keeps its value, and the cache goes on evicting by its policy.
@Suite(.serialized) struct PolicyFaultInjectionTests {
    typealias Point = _FaultInjection.Point

    enum Scenario: String { case evictingInsert, insert, evictBatch, repair }

    static func cases(_ policy: ShmLRU.EvictionPolicy) -> [(Point, Scenario)] {
        var cases: [(Point, Scenario)] = [
            (.setEvicted, .evictingInsert), (.detachUnindexed, .evictingInsert), (.listUnlinking, .evictingInsert),
            (.indexShifting, .evictingInsert), (.setWritten, .evictingInsert), (.setLinked, .evictingInsert),
            (.setWritten, .insert), (.evictBatch, .evictBatch), (.repairRelinking, .repair), (.repairFreeing, .repair),
        ]
        switch policy {
        case .sieve: cases += [(.sieveHand, .evictingInsert)]
        case .s3fifo: cases += [(.policyMoving, .evictingInsert), (.ghostInserted, .evictingInsert)]
        // TinyLFU: record 1 (the window's oldest; the window holds 1 and 2), read twice,
        // goes back to the window's head (its window CLOCK, hits counted in the sketch);
        // record 2, never read, loses its duel against record 3 (the main queue's victim,
        // never read either: ties keep the main queue) and is evicted into the ghost. A
        // duel the window's record wins (the admission's kills): TinyLFUPolicyTests.
        case .tinylfu: cases += [(.policyMoving, .evictingInsert), (.ghostInserted, .evictingInsert)]
        case .lru: break
        }
        return cases
    }

    @Test(arguments: [ShmLRU.EvictionPolicy.sieve, .s3fifo, .tinylfu])
    func killInsideEvictionKeepsTheCacheWhole(policy: ShmLRU.EvictionPolicy) throws {
        var kills = 0
        for (point, scenario) in Self.cases(policy) {
            try withKey { key in
                // 20 records: S3-FIFO's small queue holds 2 (records 1 and 2), the main queue the rest.
                let cache = try ShmLRU.create(key: key, recordSize: 64, capacity: 20, options: ShmLRU.Options(policy: policy))
                let prefill: ClosedRange<UInt32> = scenario == .insert ? 1...10 : 1...20
                for hash in prefill { try cache.set(hash, encodeValue(hash: hash, version: 1, length: 20 + Int(hash))) }
                // Record 1 is used twice: SIEVE's hand unmarks it and moves on, S3-FIFO moves it
                // to the main queue, TinyLFU to its window's head; all three then evict record 2.
                for _ in 0..<2 { _ = try cache.bytes(1) }
                let before = cache.stats.recoveries
                let spec = "\(point.rawValue)@1"
                let operation: [String] =
                    switch scenario {
                    case .evictingInsert, .insert: ["set", "100", "7", "40"]
                    case .evictBatch: ["evict"]
                    case .repair: ["repair"]
                    }
                let run = try runHelper(["rel-op", key.description, spec] + operation)
                let context = "\(policy) \(spec) during \(scenario)"
                try #require(run.status == 128 + SIGKILL, "\(context): not killed (status \(run.status)) \(run.output) \(run.errorOutput)")
                kills += 1

                let report = try cache.verify()
                #expect(report.isClean, "\(context): \(report)")
                #expect(cache.stats.recoveries == before + 1, "\(context): recoveries \(before) -> \(cache.stats.recoveries)")
                var allowed: [UInt32: Set<UInt32?>] = [:]
                for hash in prefill { allowed[hash] = [1] }
                switch scenario {
                case .evictingInsert: (allowed[2], allowed[100]) = ([nil, 1], [nil, 7])
                case .insert: allowed[100] = [nil, 7]
                case .evictBatch: for hash in prefill { allowed[hash] = [nil, 1] }  // any 3 of the oldest
                case .repair: break
                }
                for (hash, versions) in allowed {
                    let version = try cache.bytes(hash).map { decodeValue($0, hash: hash) ?? 0xDEAD }
                    #expect(versions.contains(version), "\(context): hash \(hash) holds \(String(describing: version)), allowed \(versions)")
                }
                if scenario == .evictBatch { #expect(cache.count >= 17, "\(context): at most 3 evicted, \(cache.count) left") }
                // The repaired structure goes on evicting by its policy.
                for hash in UInt32(200)..<240 { try cache.set(hash, encodeValue(hash: hash, version: 2, length: 30)) }
                #expect(cache.count == 20)
                let after = try cache.verify()
                #expect(after.isClean, "\(context): after 40 more inserts: \(after)")
                _ = try relCheckAllValues(cache, hashes: 256, context)
            }
        }
        relReport("\(policy): \(kills) kills inside eviction survived")
    }
}
