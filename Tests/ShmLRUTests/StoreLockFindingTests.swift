import Dispatch
import CShm
import Glibc
@testable import ShmLRU
import Testing

/// Regression tests for issue 11's findings 2, 7, 10 and 11 (the per-key lock
/// code): each is named after its finding.
@Suite struct StoreLockFindingTests {
    /// 11.2: `lock(_:timeout:)` trapped for `.seconds(Int64.max)` or `.seconds(1e12)`.
    @Test func finding2_veryLongLockTimeoutsSaturate() async throws {
        #expect(_nanoseconds(.seconds(9_223_372_036) + .nanoseconds(999_999_999)) == Int64.max)
        #expect(_nanoseconds(.seconds(Int64.max)) == Int64.max)
        #expect(_deadline(after: .seconds(Int64.max)) >= UInt64(Int64.max))
        try await withStoreKey { key in
            let store = try ShmStore.create(
                key: key, configuration: .init(capacity: 8, recordSize: 64, lockTimeout: .seconds(Int64.max)))
            try store.set("n", 1)  // the data lock with that timeout
            let free = try await store.lock("job", timeout: .seconds(Int64.max))
            // Contended waits with either timeout: a blocked thread and an async task.
            let blocked = _startThread {
                if let token = try? store.blockingLock("job", timeout: .seconds(1e12)) { try? store.unlock("job", token) }
            }
            #expect(try await eventually { try store.lockState("job").waiters == 1 })
            let waiter = Task { try await store.lock("job", timeout: .seconds(Int64.max)) }
            #expect(try await eventually { try store.lockState("job").waiters == 2 })
            try store.unlock("job", free)
            let token = try await waiter.value
            try store.unlock("job", token)
            if let blocked { pthread_join(blocked, nil) }
            #expect(try store.lockState("job") == (nil, 0))
        }
    }

    /// 11.7: a negative `lockTimeout` silently meant "wait for ever".
    @Test func finding7_negativeLockTimeoutIsRejected() async throws {
        try withKey { key in
            expectError(.invalidArgument) {
                _ = try ShmLRU.create(key: key, recordSize: 64, capacity: 8, options: .init(lockTimeout: .milliseconds(-1)))
            }
            #expect(!ShmRegion.exists(key: key))
        }
        try await withStoreKey { key in
            expectError(.invalidArgument) {
                _ = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64, lockTimeout: .seconds(-1)))
            }
            #expect(!ShmRegion.exists(key: key))
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64))
            expectError(.invalidArgument) { _ = try ShmStore.attach(key: key, lockTimeout: .nanoseconds(-1)) }
            expectError(.invalidArgument) { _ = try ShmLRU.attach(key: store.cache.key, options: .init(lockTimeout: .seconds(-3))) }
            expectError(.invalidArgument) { _ = try store.blockingLock("job", timeout: .milliseconds(-5)) }
            await expectError(.invalidArgument) { _ = try await store.lock("job", timeout: .milliseconds(-5)) }
            // The scoped async calls too, also when the key is held (their wait
            // path takes its place in line before it hops): nothing runs, no
            // waiter is left queued.
            let keyLock = try store.keyLock("job")
            let held = try await store.lock("job")
            await expectError(.invalidArgument) { try await store.mutex("job", timeout: .milliseconds(-5)) { _ in } }
            await expectError(.invalidArgument) { try await keyLock.withLock(timeout: .milliseconds(-5)) { _ in } }
            #expect(try store.lockState("job").waiters == 0)
            #expect(!store._asyncLocks.hasQueuedCallers)
            try store.unlock("job", held)
            await expectError(.invalidArgument) { try await keyLock.withLock(timeout: .milliseconds(-5)) { _ in } }
            // 0 = try once.
            let token = try await store.lock("job", timeout: .zero)
            expectError(.lockTimeout) { _ = try store.blockingLock("job", timeout: .zero) }
            await expectError(.lockTimeout) { _ = try await store.lock("job", timeout: .zero) }
            #expect(try store.lockState("job").waiters == 0)
            try store.unlock("job", token)
            let zero = try ShmStore.attach(key: key, lockTimeout: .zero)
            try zero.set("n", 1)
            #expect(try zero.get("n", as: Int.self) == 1)
        }
    }

    /// 11.10: two keys whose hashes collide shared one per-key lock.
    @Test func finding10_keysWhoseHashesCollideHaveTheirOwnLocks() throws {
        try withStoreKey { key in
            let store = try ShmStore._create(
                key: key, configuration: .init(capacity: 8, recordSize: 64), permissions: 0o600, persistent: false, hash: nil,
                lockHash: { _ in 42 })
            let a = try store.blockingLock("alpha")
            let b = try #require(try store.tryLock("beta"), "a colliding key's lock must be free")
            #expect(try store.tryLock("alpha") == nil)
            #expect(try store.tryLock("beta") == nil)
            #expect(try store.tryLock("alphb") != nil)  // same length too
            expectError(.lockNotHeld) { try store.unlock("beta", ShmStore.LockToken(key: "beta", id: a.id, previousHolderDied: false)) }
            try store.unlock("alpha", a)
            #expect(try store.lockState("beta").holder == getpid())
            try store.unlock("beta", b)
            // Keys equal in length and hash, across processes: a helper attaches with the real hash,
            // so force it here on identical prefixes instead: the identity compares every byte.
            let long1 = String(repeating: "x", count: 39) + "1"
            let long2 = String(repeating: "x", count: 39) + "2"
            let t1 = try store.blockingLock(long1)
            #expect(try store.tryLock(long2) != nil)
            try store.unlock(long1, t1)
            expectError(.invalidArgument) { _ = try store.blockingLock(String(repeating: "k", count: 65)) }
        }
    }

    /// 11.11: the lock table's own mutex ignored the caller's timeout (a fixed 10 s),
    /// and `tryLock` blocked when that mutex's word was forged or its holder
    /// stopped. The elapsed-time bounds below are failure guards against the old
    /// fixed 10 s wait, not speed claims.
    @Test func finding11_lockTableMutexHonoursTheCallersTimeout() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64, lockTimeout: .seconds(60)))
            let word = store._store.u32(_StoreLayout.H.mutex)  // glibc's __lock: the owner's TID
            cshm_store_release_u32(word, 1)  // "held" by init, which never releases it
            defer { cshm_store_release_u32(word, 0) }
            let start = ContinuousClock.now
            expectError(.lockTimeout) { _ = try store.tryLock("job") }
            #expect(ContinuousClock.now - start < .seconds(5))
            let second = ContinuousClock.now
            expectError(.lockTimeout) { _ = try store.blockingLock("job", timeout: .milliseconds(200)) }
            #expect(ContinuousClock.now - second < .seconds(5))
            let short = try ShmStore.attach(key: key, lockTimeout: .milliseconds(200))
            let third = ContinuousClock.now
            expectError(.lockTimeout) { _ = try short.lockState("job") }
            #expect(ContinuousClock.now - third < .seconds(5))
            cshm_store_release_u32(word, 0)
            let token = try #require(try store.tryLock("job"))
            try store.unlock("job", token)
        }
    }

    /// 11.11: `ShmStore` accepts the cache's `lockTimeout`; the data segment's lock honours it.
    @Test func finding11_storeLockTimeoutBoundsTheDataLock() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64, lockTimeout: .milliseconds(200)))
            #expect(store.cache.options.lockTimeout == .milliseconds(200))
            let peer = try ShmStore.attach(key: key, lockTimeout: .milliseconds(300))
            #expect(peer.cache.options.lockTimeout == .milliseconds(300))
            #expect(peer.configuration.lockTimeout == .milliseconds(300))
            // Another thread holds the data segment's lock (a live holder) until told.
            let held = DispatchSemaphore(value: 0)
            let release = DispatchSemaphore(value: 0)
            let done = DispatchSemaphore(value: 0)
            DispatchQueue.global().async {
                _ = try? store.cache._withLock("hold") { () throws(ShmError) in
                    held.signal()
                    release.wait()
                }
                done.signal()
            }
            held.wait()
            let start = ContinuousClock.now
            expectError(.lockTimeout) { try store.set("n", 1) }
            #expect(ContinuousClock.now - start < .seconds(5))
            release.signal()
            done.wait()
            try store.set("n", 1)
        }
    }
}
