import Glibc
@testable import ShmLRU
import Testing

@Suite struct StoreLockTests {
    @Test func tokensAreCheckedOnUnlock() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64))
            let token = try store.blockingLock("job")
            #expect(!token.previousHolderDied)
            #expect(try store.tryLock("job") == nil)
            #expect(try store.lockState("job").holder == getpid())
            let forged = ShmStore.LockToken(key: "job", id: token.id &+ 1, previousHolderDied: false)
            expectError(.lockNotHeld) { try store.unlock("job", forged) }
            expectError(.lockNotHeld) { try store.unlock("other", token) }
            try store.unlock("job", token)
            expectError(.lockNotHeld) { try store.unlock("job", token) }  // stale
            let again = try #require(try store.tryLock("job"))
            #expect(again.id != token.id)
            expectError(.lockNotHeld) { try store.unlock("job", token) }  // stale, while another grant holds it
            try store.unlock("job", again)
            #expect(try store.lockState("job").holder == nil)
        }
    }

    @Test func withLockReleasesOnThrow() throws {
        struct Boom: Error {}
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64))
            #expect(throws: Boom.self) { try store.withBlockingLock("job") { _ in throw Boom() } }
            let token = try #require(try store.tryLock("job"))
            try store.unlock("job", token)
            #expect(try store.withBlockingLock("job") { _ in 7 } == 7)
        }
    }

    @Test func lockExcludesAcrossProcesses() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64))
            try store.set("counter", 0)
            let perProcess = 300
            let helpers = try (0..<3).map { _ in try spawnHelper(["store-increment", key.description, "counter", "\(perProcess)"]) }
            // This process takes part too.
            for _ in 0..<perProcess {
                try store.withBlockingLock("counter", timeout: .seconds(60)) { _ in
                    let value = try store.get("counter", as: Int.self) ?? 0
                    sched_yield()
                    try store.set("counter", value + 1)
                }
            }
            for helper in helpers {
                let run = helper.wait()
                #expect(run.status == 0, "\(run.errorOutput)")
            }
            #expect(try store.get("counter", as: Int.self) == 4 * perProcess)
            #expect(try store.lockState("counter") == (nil, 0))
        }
    }

    @Test func lockOfAHolderKilledWithSIGKILLGoesToTheNextLocker() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64))
            let holder = try spawnHelper(["store-hold-lock", key.description, "job"])
            _ = holder.readLine()  // token=…
            #expect(holder.readLine() == "locked=1")
            #expect(try store.tryLock("job") == nil)
            #expect(try store.lockState("job").holder == holder.pid)
            holder.kill(SIGKILL)
            let run = holder.wait()
            #expect(run.status == 128 + SIGKILL)
            let token = try store.blockingLock("job", timeout: .seconds(60))
            #expect(token.previousHolderDied)
            try store.unlock("job", token)
            let next = try store.blockingLock("job", timeout: .seconds(60))
            #expect(!next.previousHolderDied)
            try store.unlock("job", next)
        }
    }

    /// The test waits first; the holder is killed while it waits (and is left a
    /// zombie until after: a zombie is dead too).
    @Test func waiterIsHandedTheLockWhenTheHolderDies() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64))
            let holder = try spawnHelper(["store-hold-lock", key.description, "job"])
            _ = holder.readLine()
            #expect(holder.readLine() == "locked=1")
            let waiter = Task { try await store.lock("job", timeout: .seconds(60)) }
            #expect(try await eventually { try store.lockState("job").waiters == 1 })
            holder.kill(SIGKILL)
            let token = try await waiter.value
            #expect(token.previousHolderDied)
            try store.unlock("job", token)
            _ = holder.wait()
        }
    }

    /// Waiters are served in arrival order: with the lock held here, helper A
    /// queues, then helper B; on release A goes first, then B.
    @Test func waitersAreServedInArrivalOrder() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 256))
            let token = try store.blockingLock("job")
            var helpers: [SpawnedProcess] = []
            for (index, label) in ["A", "B", "C"].enumerated() {
                helpers.append(try spawnHelper(["store-lock-append", key.description, "job", "order", label]))
                #expect(try eventually { try store.lockState("job").waiters == index + 1 })
            }
            try store.unlock("job", token)
            for helper in helpers {
                let run = helper.wait()
                #expect(run.status == 0, "\(run.errorOutput)")
                #expect(run.values["died"] == "false")
            }
            #expect(try store.get("order", as: [String].self) == ["A", "B", "C"])
        }
    }

    /// Four processes of four threads each, every increment under the blocking
    /// lock (read, then set), on one key: the waits pass the fairness window, so
    /// releases hand the lock to waiters while running callers barge. Never two
    /// holders: the counter is exact and no unlock is refused as not held (a
    /// hand-off that re-read the word gave a barger's lock to a waiter).
    @Test func bargingAndHandOffsNeverMakeTwoHolders() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64))
            let (processes, threads, count) = (4, 8, 2_000)
            let helpers = try (0..<processes).map { _ in
                try spawnHelper(["store-blocking-count", key.description, "counter", String(threads), String(count)])
            }
            for helper in helpers {
                let run = helper.wait()
                #expect(run.status == 0, "\(run.errorOutput)")
                #expect(run.values["errors"] == "0", "\(run.values["first"] ?? "")")
            }
            #expect(try store.get("counter", as: Int.self) == processes * threads * count)
            #expect(try store.lockState("counter").waiters == 0)
        }
    }

    @Test func timeoutIsATypedError() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64))
            let holder = try spawnHelper(["store-hold-lock", key.description, "job"])
            defer {
                holder.kill(SIGKILL)
                _ = holder.wait()
            }
            _ = holder.readLine()
            #expect(holder.readLine() == "locked=1")
            expectError(.lockTimeout) { _ = try store.blockingLock("job", timeout: .milliseconds(120)) }
            #expect(try store.lockState("job").waiters == 0)  // the timed-out waiter left the queue
            #expect(try store.tryLock("other") != nil)  // other keys are independent
        }
    }

    /// Eight async waiters on a two-core machine: were they blocking the
    /// cooperative pool, the task below could not run and the test would hang.
    @Test func asyncWaitersDoNotBlockTheCooperativePool() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64))
            try store.set("counter", 0)
            let token = try await store.lock("job")
            let waiters = (0..<8).map { _ in
                Task {
                    try await store.mutex("job", timeout: .seconds(60)) { _ in
                        let value = try store.get("counter", as: Int.self) ?? 0
                        try store.set("counter", value + 1)
                    }
                }
            }
            #expect(try await eventually { try store.lockState("job").waiters == 8 })
            let other = Task { (1...1000).reduce(0, +) }
            #expect(await other.value == 500_500)
            try store.unlock("job", token)
            for waiter in waiters { try await waiter.value }
            #expect(try store.get("counter", as: Int.self) == 8)
        }
    }

    @Test func cancellingAnAsyncWaitLeavesTheQueue() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64))
            let token = try await store.lock("job")
            let waiter = Task { try await store.lock("job") }
            #expect(try await eventually { try store.lockState("job").waiters == 1 })
            waiter.cancel()
            await expectError(.cancelled) { _ = try await waiter.value }
            #expect(try store.lockState("job").waiters == 0)
            try store.unlock("job", token)
            let next = try #require(try store.tryLock("job"))
            try store.unlock("job", next)
        }
    }

    /// Cancellation is checked only where a lock call would wait: a cancelled
    /// task takes a free lock (by key and through a `KeyLock`), as a lock that
    /// never suspends does, and gets `.cancelled` for a held one.
    @Test func aCancelledTaskTakesAFreeLockAndThrowsWhereItWouldWait() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64))
            let ball = try store.keyLock("ball")
            let held = try await store.lock("held")
            let outcome = await Task { () async throws(ShmError) -> [String] in
                withUnsafeCurrentTask { $0?.cancel() }
                guard Task.isCancelled else { return ["not cancelled"] }
                var seen: [String] = []
                try store.unlock("ball", try await store.lock("ball"))
                seen.append("by key")
                try ball.unlock(try await ball.lock())
                seen.append("keyLock")
                do throws(ShmError) {
                    let token = try await store.lock("held", timeout: .seconds(10))
                    try store.unlock("held", token)
                    seen.append("held taken")
                } catch {
                    seen.append("held: \(error.code)")
                }
                return seen
            }.result
            #expect(try outcome.get() == ["by key", "keyLock", "held: \(ShmError.Code.cancelled)"])
            try store.unlock("held", held)
            #expect(try store.lockState("ball") == (nil, 0))
            #expect(try store.lockState("held") == (nil, 0))
        }
    }
}
