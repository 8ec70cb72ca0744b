import Glibc
import ShmLRU
import ShmLRUTestSupport
import Testing

/// Issue 24: processes at their file-descriptor limit (they cannot read their own
/// start time, so their owner words carry start time 0) and normal processes
/// share a cache and a store while the test SIGKILLs one of them every 250 ms
/// and starts another. No live holder may be taken over: every recovery must be
/// explained by a death (recoveries <= deaths, per segment), no lent value may
/// change while held, and no read may be torn.
@Suite(.serialized) struct LivenessStressTests {
    @Test func fdLimitedAndNormalProcessesUnderKillsBriefly() throws {
        try run(seconds: 4)
    }

    /// `make stress`: 60 s.
    @Test(.enabled(if: relStress)) func fdLimitedAndNormalProcessesUnderKillsFor60s() throws {
        try run(seconds: 60)
    }

    func run(seconds: Int) throws {
        try withKey { cacheKey in
            try withStoreKey { storeKey in
                let cache = try ShmLRU.create(key: cacheKey, recordSize: 64, capacity: 128, options: .init(lockTimeout: .seconds(20)))
                let store = try ShmStore.create(key: storeKey, configuration: .init(capacity: 64, recordSize: 512))
                let deadline = relNow() + UInt64(seconds) * 1_000_000_000
                var seed: UInt64 = 24
                func start(_ mode: String) throws -> SpawnedProcess {
                    seed += 1
                    let process = try spawnHelper([
                        "liveness-hammer", cacheKey.description, storeKey.description, mode, String(seed), String(deadline),
                    ])
                    var readable: String? = nil
                    while let line = process.readLine() {
                        if line.hasPrefix("procReadable=") { readable = String(line.dropFirst(13)) }
                        if line == "ready=1" { break }
                    }
                    if mode == "fd-limit" { #expect(readable == "0", "an fd-limited process could read /proc") }
                    return process
                }
                let modes = ["fd-limit", "normal", "fd-limit", "normal", "fd-limit", "normal"]
                var live = try modes.map { try start($0) }
                var runs: [HelperRun] = []
                var deaths = 0
                var random = SplitMix64(seed: 2024)
                defer {
                    for process in live {
                        process.kill(SIGKILL)
                        _ = process.wait()
                    }
                }
                while relNow() + 1_000_000_000 < deadline {
                    usleep(250_000)
                    let index = Int(random.next() % UInt64(live.count))
                    live[index].kill(SIGKILL)
                    let run = live[index].wait()
                    if run.status == 128 + SIGKILL { deaths += 1 }
                    runs.append(run)
                    live[index] = try start(modes[index])
                }
                for process in live { runs.append(process.wait()) }
                live = []
                let torn = runs.flatMap { $0.output.split(separator: "\n").filter { $0.hasPrefix("torn=") } }
                let robbed = runs.flatMap { $0.output.split(separator: "\n").filter { $0.hasPrefix("robbed=") } }
                let failed = runs.filter { $0.status != 0 && $0.status != 128 + SIGKILL }
                #expect(failed.isEmpty, "\(failed.map(\.errorOutput))")
                #expect(torn.isEmpty, "torn reads: \(torn.prefix(5))")
                #expect(robbed.isEmpty, "live holders robbed: \(robbed.prefix(5))")
                let cacheRecoveries = cache.stats.recoveries
                let storeRecoveries = store.cache.stats.recoveries
                #expect(cacheRecoveries <= UInt64(deaths), "cache: \(cacheRecoveries) recoveries for \(deaths) deaths: false takeovers")
                #expect(storeRecoveries <= UInt64(deaths), "store: \(storeRecoveries) recoveries for \(deaths) deaths: false takeovers")
                #expect(try cache.verify().isClean)
                #expect(try store.verify().isClean)
                let operations = runs.reduce(0) { $0 + (Int($1.values["operations"] ?? "") ?? 0) }
                let timeouts = runs.reduce(0) { $0 + (Int($1.values["timeouts"] ?? "") ?? 0) }
                relReport(
                    "fd-limit + normal processes, \(seconds) s: \(deaths) SIGKILLs, recoveries cache \(cacheRecoveries) / store \(storeRecoveries) "
                        + "(<= deaths: 0 false takeovers), \(torn.count) torn reads, \(robbed.count) robbed holders, "
                        + "\(operations) operations by survivors, \(timeouts) lock timeouts")
            }
        }
    }
}
