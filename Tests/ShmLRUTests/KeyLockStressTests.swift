import Glibc
import ShmLRU
import ShmLRUTestSupport
import Testing

/// Issue 27: four processes with 200 async lock calls each on one key, in rounds
/// queued in order, while the test SIGKILLs holders and waiters: two of the four
/// are victims, killed at random times or at the key locks' own kill points
/// (`keylock.*`, random countdowns) and started again; two are survivors. Every
/// lock call of a survivor must be granted within its 30 s timeout, in its
/// queueing order, and the tally (one record: total and each role's count,
/// written whole under the lock) must add up, with each survivor's count equal
/// to the increments it completed: a lock that let two holders in loses one.
@Suite(.serialized) struct KeyLockStressTests {
    @Test func killHoldersAndWaitersBriefly() throws {
        try run(seconds: 4)
    }

    /// `make stress`: 60 s.
    @Test(.enabled(if: relStress)) func killHoldersAndWaitersFor60s() throws {
        try run(seconds: 60)
    }

    func run(seconds: Int) throws {
        try withStoreKey { key in
            let store = try ShmStore.create(
                key: key, configuration: .init(capacity: 16, recordSize: 128, lockWaiters: 64, lockTimeout: .seconds(30)))
            var seed: UInt64 = 0x27_27 &+ UInt64(seconds)
            func random(_ range: ClosedRange<Int>) -> Int {
                seed = seed &* 6364136223846793005 &+ 1442695040888963407
                return range.lowerBound + Int((seed >> 33) % UInt64(range.count))
            }
            func spawnVictim() throws -> SpawnedProcess {
                let points = "keylock.taken,keylock.queued,keylock.handingOff,keylock.binding"
                let spec = random(0...1) == 0 ? "-" : "\(points)@\(random(1...400))"
                let victim = try spawnHelper(["keylock-soak", key.description, "v", "200", "0", spec])
                #expect(victim.readLine() == "ready=1")
                return victim
            }
            let survivors = try ["s0", "s1"].map { role in
                try spawnHelper(["keylock-soak", key.description, role, "200", String(seconds), "-"])
            }
            for survivor in survivors { #expect(survivor.readLine() == "ready=1") }
            var victims = try (0..<2).map { _ in try spawnVictim() }
            let deadline = relNow() + UInt64(seconds) * 1_000_000_000
            var deaths = 0
            while relNow() < deadline {
                usleep(useconds_t(random(20_000...150_000)))
                let index = random(0...1)
                victims[index].kill(SIGKILL)
                let run = victims[index].wait()
                #expect(run.status == 128 + SIGKILL, "a victim ended on its own: \(run.status) \(run.output) \(run.errorOutput)")
                deaths += 1
                victims[index] = try spawnVictim()
            }
            for victim in victims {
                victim.kill(SIGKILL)
                _ = victim.wait()
            }
            var completed: [Int] = []
            for (role, survivor) in zip(["s0", "s1"], survivors) {
                let run = survivor.wait()
                #expect(run.status == 0, "\(role): \(run.errorOutput)")
                let values = run.values
                #expect(values["failures"] == "0", "\(role): \(values["failures"] ?? "?") lock calls failed, first \(values["firstFailure"] ?? "-")")
                #expect(values["inOrder"] == "true", "\(role): lock calls served out of order")
                #expect(Int(values["rounds"] ?? "0") ?? 0 > 0, "\(role): no round finished")
                completed.append(Int(values["done"] ?? "") ?? -1)
            }
            let tally = try #require(try store.get("tally", as: [Int].self))
            try #require(tally.count == 4)
            #expect(tally[0] == tally[1] + tally[2] + tally[3], "tally \(tally): an increment was lost")
            #expect(tally[1] == completed[0], "s0 completed \(completed[0]), tally says \(tally[1])")
            #expect(tally[2] == completed[1], "s1 completed \(completed[1]), tally says \(tally[2])")
            #expect(try eventually { try store.lockState("counter") == (nil, 0) })
            #expect(try store.verify().isClean)
            relReport("key locks: \(deaths) victims killed in \(seconds) s; survivors completed \(completed) increments; tally \(tally)")
        }
    }
}
