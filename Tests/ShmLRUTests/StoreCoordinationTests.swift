import Glibc
@testable import ShmLRU
import Synchronization
import Testing

/// Issue 14: get-or-load single-flight, atomic updates, async lock queues and
/// open-or-create, with real processes.
@Suite struct StoreCoordinationTests {
    private func waitAll(_ helpers: [SpawnedProcess]) -> [HelperRun] {
        helpers.map { helper in
            let run = helper.wait()
            #expect(run.status == 0, "\(run.errorOutput)")
            return run
        }
    }

    @Test func getOrLoadRunsTheLoaderOnceForEightProcesses() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 64, recordSize: 128))
            let helpers = try (0..<8).map { _ in try spawnHelper(["store-load", key.description, "user", "300", "42"]) }
            let runs = waitAll(helpers)
            #expect(runs.map { $0.values["value"] } == Array(repeating: "42", count: 8))
            #expect(try store.get("loads:user", as: Int.self) == 1)
            #expect(try store.get("user", as: Int.self) == 42)
            #expect(try store.lockState("user") == (nil, 0))
        }
    }

    @Test func getOrLoadRemembersAMissForTheNegativeTTL() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(
                key: key, configuration: .init(capacity: 64, recordSize: 128, negativeTTL: .seconds(60)))
            let first = try runHelper(["store-load", key.description, "ghost", "0", "nil"])
            #expect(first.values["value"] == "nil", "\(first.errorOutput)")
            let second = try runHelper(["store-load", key.description, "ghost", "0", "7"])
            #expect(second.values["value"] == "nil", "the miss was remembered: \(second.errorOutput)")
            #expect(try store.get("loads:ghost", as: Int.self) == 1)
            let calls = Counter()
            let value = try await store.get("ghost", as: Int.self) { () async throws -> Int? in
                calls.value.add(1, ordering: .relaxed)
                return 1
            }
            #expect(value == nil)
            #expect(calls.value.load(ordering: .relaxed) == 0)
            try store.set("ghost", 5)  // a value set meanwhile wins over the remembered miss
            #expect(try await store.get("ghost", as: Int.self) { () async throws -> Int? in nil } == 5)
        }
        // Without a negative TTL, nil is not remembered.
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 64, recordSize: 128))
            #expect(try await store.get("ghost", as: Int.self) { () async throws -> Int? in nil } == nil)
            #expect(try await store.get("ghost", as: Int.self) { () async throws -> Int? in 3 } == 3)
        }
    }

    @Test func getOrLoadServesAStaleValueWhenTheLoadThrows() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(
                key: key, configuration: .init(capacity: 64, recordSize: 128, staleIfError: .seconds(60)))
            try store.set("price", 9, expiry: .after(.milliseconds(50)))
            #expect(try await eventually { try store.timeToLive("price") == nil })
            let run = try runHelper(["store-load", key.description, "price", "0", "throw"])
            #expect(run.values["value"] == "9", "\(run.output) \(run.errorOutput)")
            // A load that succeeds replaces the stale value.
            let fresh = try runHelper(["store-load", key.description, "price", "0", "11"])
            #expect(fresh.values["value"] == "11")
        }
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 64, recordSize: 128))
            try store.set("price", 9, expiry: .after(.milliseconds(50)))
            #expect(try await eventually { try store.timeToLive("price") == nil })
            let run = try runHelper(["store-load", key.description, "price", "0", "throw"])
            #expect(run.values["error"] == "LoadFailed", "no staleIfError: the error comes through")
        }
    }

    /// Issue 24, item 6: a burst of processes behind a load that throws sees one
    /// load and one failure (the others get `.loadFailed` without loading); a
    /// caller after it loads anew. A load longer than `loadTimeout` is abandoned
    /// with `.loadFailed`, and the load lock is free again.
    @Test func getOrLoadHasALoadTimeoutAndRemembersAFailure() async throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 64, recordSize: 128))
            let helpers = try (0..<6).map { _ in try spawnHelper(["store-load", key.description, "flaky", "1500", "throw"]) }
            let errors = waitAll(helpers).map { $0.values["error"] ?? "none" }
            #expect(try store.get("loads:flaky", as: Int.self) == 1, "the load ran once for the burst: \(errors)")
            #expect(errors.sorted() == ["LoadFailed"] + Array(repeating: "loadFailed", count: 5), "\(errors)")
            let later = try runHelper(["store-load", key.description, "flaky", "0", "5"])
            #expect(later.values["value"] == "5", "a caller after the failure loads: \(later.output) \(later.errorOutput)")
        }
        try await withStoreKey { key in
            var configuration = ShmStore.Configuration(capacity: 64, recordSize: 128)
            configuration.loadTimeout = .milliseconds(200)
            let store = try ShmStore.create(key: key, configuration: configuration)
            do {
                _ = try await store.get("slow", as: Int.self) { () async throws -> Int? in
                    try await Task.sleep(for: .seconds(20))
                    return 1
                }
                Issue.record("a load longer than loadTimeout returned")
            } catch let error as ShmError {
                #expect(error.code == .loadFailed, "\(error)")
            }
            #expect(try await store.get("slow", as: Int.self) { () async throws -> Int? in 2 } == 2, "the load lock is free again")
            configuration.loadTimeout = .zero
            expectError(.invalidArgument) { _ = try ShmStore.create(key: uniqueKey(), configuration: configuration) }
        }
    }

    @Test func updateFromFourProcessesCountsExactly() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64))
            let helpers = try (0..<4).map { _ in try spawnHelper(["store-update", key.description, "counter", "1000"]) }
            _ = waitAll(helpers)
            #expect(try store.get("counter", as: Int.self) == 4000)
            #expect(try store.update("counter", as: Int.self) { _ in nil } == nil)
            #expect(try !store.contains("counter"))
            struct Stop: Error {}
            #expect(throws: Stop.self) { try store.update("counter", as: Int.self) { _ in throw Stop() } }
            #expect(try !store.contains("counter"))
        }
    }

    @Test func addRacesHaveExactlyOneWinner() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 16, recordSize: 64))
            let labels = (0..<6).map { "p\($0)" }
            let helpers = try labels.map { try spawnHelper(["store-add", key.description, "leader", $0]) }
            for helper in helpers { #expect(helper.readLine() == "ready=1") }
            try store.set("go:leader", true)
            let runs = waitAll(helpers)
            let winners = zip(labels, runs).filter { $0.1.values["added"] == "true" }.map(\.0)
            #expect(winners.count == 1)
            #expect(try store.get("leader", as: String.self) == winners.first)
            #expect(try !store.add("leader", "late"))
            try store.set("other", 1, expiry: .after(.milliseconds(20)))
            #expect(try await_expired(store, "other"))
            #expect(try store.add("other", 2))  // an expired entry counts as absent
        }
    }

    @Test func setKeepingTheTTLKeepsTheExpiry() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 16, recordSize: 64))
            try store.set("session", 1, expiry: .after(.seconds(100)))
            guard case .remaining(let before)? = try store.timeToLive("session") else {
                Issue.record("no TTL")
                return
            }
            try store.set("session", 2, expiry: .keepCurrent)
            guard case .remaining(let after)? = try store.timeToLive("session") else {
                Issue.record("the TTL was lost")
                return
            }
            #expect(after <= before)
            #expect(try store.get("session", as: Int.self) == 2)
            try store.update("session", as: Int.self) { ($0 ?? 0) + 1 }
            guard case .remaining(let updated)? = try store.timeToLive("session") else {
                Issue.record("update lost the TTL")
                return
            }
            #expect(updated <= after)
            try store.set("forever", 1, expiry: .never)
            try store.set("forever", 2, expiry: .keepCurrent)
            #expect(try store.timeToLive("forever") == .forever)
            try store.set("new", 1, expiry: .keepCurrent)  // absent: the store's default (none)
            #expect(try store.timeToLive("new") == .forever)
        }
    }

    /// 1,000 async waiters on one key from 4 processes, with 16 shared waiter
    /// entries: all are served, each process's in the order they queued, none `.full`.
    @Test func thousandAsyncWaitersFromFourProcessesAreAllServedInOrder() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(
                key: key, configuration: .init(capacity: 8, recordSize: 64, lockWaiters: 16, lockTimeout: .seconds(120)))
            let token = try store.blockingLock("job")
            let helpers = try (0..<4).map { _ in try spawnHelper(["store-async-queue", key.description, "job", "250"]) }
            for helper in helpers { #expect(helper.readLine() == "queued=250") }
            #expect(try eventually { try store.lockState("job").waiters == 1000 })
            try store.unlock("job", token)
            for run in waitAll(helpers) {
                #expect(run.values["served"] == "250")
                #expect(run.values["inOrder"] == "true")
                #expect(run.values["died"] == "0")
            }
            #expect(try store.lockState("job") == (nil, 0))
        }
    }

    /// A holder killed while async waiters of two processes queue: the next in
    /// line gets the lock told that the holder died; the others are not told.
    @Test func asyncWaitersGetTheLockOfAHolderKilledWithSIGKILL() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64, lockTimeout: .seconds(60)))
            let holder = try spawnHelper(["store-hold-lock", key.description, "job"])
            _ = holder.readLine()
            #expect(holder.readLine() == "locked=1")
            let peer = try spawnHelper(["store-async-queue", key.description, "job", "3"])
            #expect(peer.readLine() == "queued=3")
            #expect(try await eventually { try store.lockState("job").waiters == 3 })
            let died = Counter()
            let waiters = (0..<3).map { _ in
                Task {
                    try await store.withLock("job") { token in
                        if token.previousHolderDied { died.value.add(1, ordering: .relaxed) }
                    }
                }
            }
            #expect(try await eventually { try store.lockState("job").waiters == 6 })
            holder.kill(SIGKILL)
            for waiter in waiters { try await waiter.value }
            let run = peer.wait()
            #expect(run.status == 0, "\(run.errorOutput)")
            #expect(run.values["served"] == "3")
            #expect(run.values["died"] == "1", "the peer queued first: its first waiter is told")
            #expect(died.value.load(ordering: .relaxed) == 0)
            _ = holder.wait()
            #expect(try store.lockState("job") == (nil, 0))
        }
    }

    /// open: creates, attaches while its creator lives, replaces the store left by
    /// a creator and peers killed with SIGKILL, and refuses a live store of
    /// another configuration.
    @Test func openReplacesTheStoreOfACreatorKilledWithSIGKILL() throws {
        try withStoreKey { key in
            let creator = try spawnHelper(["store-open-hold", key.description])
            #expect(creator.readLine() == "opened=1")
            #expect(creator.readLine() == "value=1")
            let peer = try spawnHelper(["store-open-hold", key.description])
            #expect(peer.readLine() == "opened=1")
            #expect(peer.readLine() == "value=2")  // attached the creator's store
            expectError(.incompatibleSegment) { _ = try ShmStore.open(key: key, configuration: .init(capacity: 9, recordSize: 64)) }
            let look = try ShmStore.attach(key: key)
            let dataKey = look.cache.key
            try look.detach()
            creator.kill(SIGKILL)
            peer.kill(SIGKILL)
            _ = creator.wait()
            _ = peer.wait()
            let store = try ShmStore.open(key: key, configuration: .init(capacity: 8, recordSize: 64))
            #expect(try store.get("boot", as: Int.self) == nil, "a fresh store")
            #expect(!ShmRegion.exists(key: dataKey), "the stale data segment is removed")
            let again = try ShmStore.open(key: key, configuration: .init(capacity: 8, recordSize: 64))
            try store.set("x", 1)
            #expect(try again.get("x", as: Int.self) == 1)
        }
    }
}

private final class Counter: Sendable {
    let value = Atomic<Int>(0)
}

private func await_expired(_ store: ShmStore, _ key: String) throws -> Bool {
    try eventually { try store.timeToLive(key) == nil }
}

@Suite struct StoreLockQueueTests {
    /// A blocked waiter killed with SIGKILL is not counted by `lockState`, even
    /// before anything cleans its entry up.
    @Test func lockStateDoesNotCountWaitersOfDeadProcesses() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 256))
            let token = try store.blockingLock("job")
            let waiter = try spawnHelper(["store-lock-append", key.description, "job", "order", "A"])
            #expect(try eventually { try store.lockState("job").waiters == 1 })
            waiter.kill(SIGKILL)
            _ = waiter.wait()
            #expect(try store.lockState("job").waiters == 0)
            try store.unlock("job", token)
            let next = try store.blockingLock("job", timeout: .seconds(60))  // the dead waiter is skipped
            #expect(!next.previousHolderDied)
            try store.unlock("job", next)
            #expect(try store.get("order", as: [String].self) == nil)
        }
    }

    /// An async wait past its timeout throws `.lockTimeout` and leaves the queue;
    /// the waiters behind it in the same process are still served in order.
    @Test func asyncTimeoutLeavesTheQueueAndTheRestAreServed() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64, lockTimeout: .seconds(60)))
            let token = try await store.lock("job")
            let early = Task { try await store.lock("job", timeout: .milliseconds(100)) }
            await expectError(.lockTimeout) { _ = try await early.value }
            #expect(try store.lockState("job").waiters == 0)
            let later = Task { try await store.lock("job") }
            #expect(try await eventually { try store.lockState("job").waiters == 1 })
            try store.unlock("job", token)
            let next = try await later.value
            #expect(!next.previousHolderDied)
            try store.unlock("job", next)
            #expect(try store.lockState("job") == (nil, 0))
        }
    }
}
