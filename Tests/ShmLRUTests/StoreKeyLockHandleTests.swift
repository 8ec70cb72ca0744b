import Glibc
@testable import ShmLRU
import ShmLRUTestSupport
import Synchronization
import Testing

/// Issue 27: `ShmStore.KeyLock`, a key's lock bound once (its slot kept as a
/// hint): the same lock as the store's for that key, across processes, and a
/// hint gone stale (the slot unbound and bound to other keys) never locks
/// another key's slot.
@Suite(.serialized) struct StoreKeyLockHandleTests {
    /// Its tokens and the store's are interchangeable, and it excludes the
    /// store's own lock calls of the key.
    @Test func keyLockIsTheStoresLockOfTheKey() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64, lockTimeout: .seconds(10)))
            let hot = try store.keyLock("hot")
            #expect(hot.hint.load(ordering: .relaxed) != 0, "keyLock binds the slot")
            let token = try hot.blockingLockForTest(timeout: .seconds(1))
            #expect(try store.lockState("hot").holder == getpid())
            #expect(try store.tryLock("hot") == nil)
            try store.unlock("hot", token)  // the store's unlock of the handle's token
            let again = try store.blockingLockForTest("hot", timeout: .seconds(1))
            #expect(try hot.tryLock() == nil)
            try hot.unlock(again)  // the handle's unlock of the store's token
            #expect(try store.lockState("hot") == (nil, 0))
            expectError(.lockNotHeld) { try hot.unlock(again) }  // stale
            let async = try await hot.lock()
            await expectError(.lockTimeout) { _ = try await store.lock("hot", timeout: .milliseconds(20)) }
            try hot.unlock(async)
            let counted = try await hot.withLock { _ in try store.update("n", as: Int.self) { ($0 ?? 0) + 1 } }
            #expect(counted == 1)
            #expect(try store.lockState("hot") == (nil, 0))
        }
    }

    /// Held by another process: the handle waits like the store (a timeout is a
    /// typed error); the holder killed with SIGKILL, the handle's next lock takes
    /// it over, told that the holder died.
    @Test func keyLockWaitsForAnotherProcessAndTakesOverFromADeadHolder() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64, lockTimeout: .seconds(10)))
            let hot = try store.keyLock("hot")
            let holder = try spawnHelper(["store-hold-lock", key.description, "hot"])
            _ = holder.readLine()
            #expect(holder.readLine() == "locked=1")
            #expect(try hot.tryLock() == nil)
            expectError(.lockTimeout) { _ = try hot.blockingLockForTest(timeout: .milliseconds(30)) }
            holder.kill(SIGKILL)
            _ = holder.wait()
            let token = try hot.blockingLockForTest(timeout: .seconds(5))
            #expect(token.previousHolderDied)
            try hot.unlock(token)
            let next = try hot.blockingLockForTest(timeout: .seconds(1))
            #expect(!next.previousHolderDied)
            try hot.unlock(next)
        }
    }

    /// A stale hint: with 2 lock slots, "hot"'s idle slot is unbound for "b" (the
    /// other slot holds "a"), and "b" is released, so the hinted slot is bound,
    /// free, and another key's. The handle's lock takes "hot"'s own lock (bound
    /// again), never "b"'s; then the hint follows the new binding.
    @Test func staleHintNeverLocksAnotherKey() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64, lockSlots: 2))
            let hot = try store.keyLock("hot")
            let before = hot.hint.load(ordering: .relaxed)
            let a = try store.blockingLockForTest("a", timeout: .seconds(1))
            let b = try store.blockingLockForTest("b", timeout: .seconds(1))  // unbinds hot's idle slot
            expectError(.full) { _ = try hot.blockingLockForTest(timeout: .milliseconds(50)) }
            try store.unlock("b", b)
            let taken = try hot.blockingLockForTest(timeout: .seconds(1))
            #expect(try store.lockState("hot").holder == getpid())
            #expect(try store.lockState("b").holder == nil, "the stale hint took b's lock")
            #expect(hot.hint.load(ordering: .relaxed) != before, "the hint follows the new binding")
            #expect(hot.hint.load(ordering: .relaxed) != 0)
            try hot.unlock(taken)
            try store.unlock("a", a)
            #expect(try store.lockState("hot") == (nil, 0))
            let again = try hot.blockingLockForTest(timeout: .seconds(1))  // the refreshed hint's fast path
            #expect(try store.lockState("hot").holder == getpid())
            try hot.unlock(again)
            #expect(try store.verify().isClean)
        }
    }
}

extension ShmStore.KeyLock {
    /// `blockingLock` from a (synchronous) test.
    fileprivate func blockingLockForTest(timeout: Duration) throws(ShmError) -> ShmStore.LockToken {
        try blockingLock(timeout: timeout)
    }
}

extension ShmStore {
    fileprivate func blockingLockForTest(_ key: String, timeout: Duration) throws -> LockToken {
        try blockingLock(key, timeout: timeout)
    }
}
