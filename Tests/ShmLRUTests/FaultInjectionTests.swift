import CShm
import Glibc
import ShmLRU
import ShmLRUTestSupport
import Testing

/// A process SIGKILLed anywhere inside a structural change must not block the
/// others: the next locker gets the robust lock's owner-died signal, rebuilds the
/// structure from the records, and every entry that was fully written stays.
///
/// The victims are real helper processes. Most kill themselves at a named point
/// inside the lock (`SHMLRU_FAULT_INJECTION=point@n`, see `_FaultInjection`);
/// others are killed by this process at random times.
@Suite(.serialized) struct FaultInjectionTests {
    typealias Point = _FaultInjection.Point

    /// What the victim does when it is killed.
    enum Scenario: String {
        case insert, update, evictingInsert, delete, evictBatch, repair, attach
    }

    static func cases(_ kind: ShmLRU.IndexKind) -> [(Point, Scenario)] {
        var cases: [(Point, Scenario)] = [
            (.setAllocated, .insert), (.recordTorn, .insert), (.setWritten, .insert), (.setLinked, .insert),
            (.recordTorn, .update), (.setEvicted, .evictingInsert), (.detachUnindexed, .evictingInsert),
            (.listUnlinking, .evictingInsert), (.detachUnindexed, .delete), (.listUnlinking, .delete),
            (.deleteFreed, .delete), (.evictBatch, .evictBatch), (.repairCleared, .repair),
            (.repairRelinking, .repair), (.repairFreeing, .repair),
        ]
        switch kind {
        case .shared: cases += [(.indexShifting, .evictingInsert), (.indexShifting, .delete)]
        case .processLocal: cases += [(.reloadPartial, .attach)]
        }
        return cases
    }

    /// Each point once, on a quiet cache whose contents are known: after the kill
    /// the structure verifies clean, exactly one recovery is counted, every entry
    /// the victim was not touching is there with its value, and the one it was
    /// touching is either gone or holds a value that was written in full.
    @Test(arguments: ShmLRU.IndexKind.allCases)
    func killAtEveryPointKeepsWhatWasWritten(kind: ShmLRU.IndexKind) throws {
        var kills = 0
        var slowest: UInt64 = 0
        for (point, scenario) in Self.cases(kind) {
            try withKey { key in
                let cache = try ShmLRU.create(key: key, recordSize: 64, capacity: 8, index: kind)
                let prefill: ClosedRange<UInt32> =
                    switch scenario {
                    case .evictingInsert: 1...8
                    case .repair, .attach: 1...5
                    default: 1...4
                    }
                for hash in prefill { try cache.set(hash, encodeValue(hash: hash, version: 1, length: 20 + Int(hash))) }
                if scenario == .repair || scenario == .attach { try cache.remove(5) }
                let before = cache.stats.recoveries

                let spec = "\(point.rawValue)@1"
                let operation: [String] =
                    switch scenario {
                    case .insert, .evictingInsert: ["set", "100", "7", "40"]
                    case .update: ["set", "2", "9", "50"]
                    case .delete: ["remove", "2"]
                    case .evictBatch: ["evict"]
                    case .repair: ["repair"]
                    case .attach: ["attach"]
                    }
                let run = try runHelper(["rel-op", key.description, spec] + operation)
                let context = "\(kind) \(spec) during \(scenario)"
                try #require(run.status == 128 + SIGKILL, "\(context): not killed (status \(run.status)) \(run.output) \(run.errorOutput)")
                kills += 1

                let started = relNow()
                let report = try cache.verify()
                slowest = max(slowest, relNow() - started)
                #expect(report.isClean, "\(context): \(report)")
                #expect(cache.stats.recoveries == before + 1, "\(context): recoveries \(before) -> \(cache.stats.recoveries)")

                // hash -> versions it may hold (nil: may be absent).
                var allowed: [UInt32: Set<UInt32?>] = [:]
                for hash in prefill { allowed[hash] = [1] }
                switch scenario {
                case .insert: allowed[100] = [nil, 7]
                case .update: allowed[2] = [nil, 1, 9]
                case .evictingInsert: (allowed[1], allowed[100]) = ([nil, 1], [nil, 7])
                case .delete: allowed[2] = [nil, 1]
                case .evictBatch: allowed[1] = [nil, 1]
                case .repair, .attach: allowed[5] = [nil]
                }
                for (hash, versions) in allowed {
                    let version = try cache.bytes(hash).map { decodeValue($0, hash: hash) ?? 0xDEAD }
                    #expect(versions.contains(version), "\(context): hash \(hash) holds \(String(describing: version)), allowed \(versions)")
                }
                _ = try relCheckAllValues(cache, hashes: 128, context)
                #expect(try cache.verify().isClean, "\(context): after reads")
            }
        }
        relReport("\(kind): \(kills) kills at named points survived; slowest verify() after a kill \(slowest / 1_000) us")
    }

    /// Victims die at random named points (random countdowns) and at random times
    /// while two survivors keep working (one reading lock-free with the shared
    /// index). After every death this process's verify() is clean, the recoveries
    /// counted match the deaths inside the lock, and every value reads whole.
    /// Survivors check every value they read, verify() every 100 operations, and
    /// fail if the lock is unavailable for 5 s; they report their slowest operation.
    @Test(arguments: ShmLRU.IndexKind.allCases)
    func randomKillsWhilePeersWork(kind: ShmLRU.IndexKind) throws {
        let rounds = relStress ? 100 : 8
        let hashes: UInt32 = 96
        let seed = UInt64.random(in: 1...1_000_000)
        var random = SystemRandomNumberGenerator()
        let points = Self.cases(kind).map(\.0).reduce(into: [Point]()) { if !$0.contains($1) { $0.append($1) } }
        try relWithKeys { key, controlKey in
            let cache = try ShmLRU.create(key: key, recordSize: 48, capacity: 48, index: kind)
            let control = try RelControl(key: controlKey, words: 16)
            var survivors: [SpawnedProcess] = []
            for (index, interval) in [(0, kind == .shared ? "2" : "0"), (1, "0")] {
                let survivor = try spawnHelper([
                    "rel-survivor", key.description, controlKey.description, String(seed &+ UInt64(index)), String(hashes), interval,
                ])
                survivors.append(survivor)
                #expect(survivor.readLine() == "ready=1")
            }
            var named = 0, timed = 0, timedInsideLock = 0
            var slowestVerify: UInt64 = 0
            defer {
                try? control.requestStop()
                var slowest: UInt64 = 0
                var operations = 0
                for survivor in survivors {
                    let run = survivor.wait()
                    #expect(run.status == 0, "survivor failed: \(run.errorOutput)")
                    slowest = max(slowest, UInt64(run.values["maxOperationUs"] ?? "0") ?? 0)
                    operations += Int(run.values["operations"] ?? "0") ?? 0
                }
                relReport(
                    "\(kind): \(named) kills at random named points + \(timed) at random times (\(timedInsideLock) inside the lock) "
                        + "with 2 survivors (seed \(seed)); survivors ran \(operations) operations, slowest (lock wait included) "
                        + "\(slowest / 1_000) ms; slowest verify() after a kill \(slowestVerify / 1_000) us")
            }
            for round in 0..<rounds {
                let before = cache.stats.recoveries
                let expectedRecoveries: ClosedRange<UInt64>
                let context: String
                if round % 3 != 2 {
                    let point = points[(round / 3 * 2 + round % 3) % points.count]
                    let countdown = Int.random(in: 1...25, using: &random)
                    let isRepair = point.rawValue.hasPrefix("repair.")
                    context = "\(kind) round \(round): \(point.rawValue)@\(countdown)"
                    let victim = try spawnHelper([
                        "rel-victim", key.description, "\(point.rawValue)@\(countdown)", isRepair ? "repair" : "mixed",
                        String(seed &+ UInt64(round) &* 31), String(hashes),
                    ])
                    let run = victim.wait()
                    try #require(run.status == 128 + SIGKILL, "\(context): status \(run.status) \(run.errorOutput)")
                    let repaired = UInt64(run.output.split(separator: "\n").filter { $0.hasPrefix("repaired=") }.count)
                    expectedRecoveries = (repaired + 1)...(repaired + 1)
                    named += 1
                } else {
                    context = "\(kind) round \(round): killed at a random time"
                    try control.setWord(8, 0)  // the previous victim may have died flagging "inside"
                    let victim = try spawnHelper([
                        "rel-victim", key.description, "-", "locked", String(seed &+ UInt64(round) &* 31), String(hashes),
                        controlKey.description,
                    ])
                    #expect(victim.readLine() == "ready=1")
                    usleep(UInt32.random(in: 1_000...20_000, using: &random))
                    // Then at the next moment it works inside the lock (it flags that in the
                    // control region), so that the kill exercises recovery; at most 200 ms later.
                    _ = eventually(timeout: .milliseconds(200)) { control.word(8) != 0 }
                    victim.kill(SIGKILL)
                    let run = victim.wait()
                    try #require(run.status == 128 + SIGKILL, "\(context): status \(run.status) \(run.errorOutput)")
                    expectedRecoveries = 0...1
                    timed += 1
                }
                let started = relNow()
                let report = try cache.verify()
                slowestVerify = max(slowestVerify, relNow() - started)
                #expect(report.isClean, "\(context): \(report)")
                let recoveries = cache.stats.recoveries - before
                #expect(expectedRecoveries.contains(recoveries), "\(context): \(recoveries) recoveries, expected \(expectedRecoveries)")
                if expectedRecoveries.lowerBound == 0, recoveries == 1 { timedInsideLock += 1 }
                try relCheckAllValues(cache, hashes: hashes, context)
            }
            // `make stress`: random-time kills must exercise recovery, not just land between operations.
            if relStress { #expect(timedInsideLock >= 25, "\(kind): only \(timedInsideLock) of \(timed) random-time kills landed inside the lock") }
        }
    }
}
