import Glibc
@testable import ShmLRU
import ShmLRUTestSupport
import Testing

/// Issue 27: an uncontended key lock is one CAS each way on the slot's lock word,
/// without the table mutex; a process killed at each step of the new paths
/// (the kill points `keylock.*`) leaves a state the next locker recovers.
@Suite(.serialized) struct StoreKeyLockFastPathTests {
    /// The table mutex held by a process stopped inside it (SIGSTOP while binding
    /// another key): a key whose slot is bound is still locked and unlocked, from
    /// blocking and async code. Before issue 27 every lock took that mutex and
    /// timed out here. After the stopped process is killed, the cut-short binding
    /// is repaired and its key locks normally.
    @Test func boundKeyLocksWithoutTheTableMutex() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64, lockTimeout: .seconds(10)))
            try store.unlock("hot", try store.tryLock("hot").unwrap())  // binds "hot"'s slot
            let stopped = try spawnHelper(["keylock-fault", key.description, "keylock.binding@1:stop", "lock", "other"])
            var reaped = false
            defer {
                if !reaped {
                    stopped.kill(SIGKILL)
                    _ = stopped.wait()
                }
            }
            var status: Int32 = 0
            #expect(await eventually { waitpid(stopped.pid, &status, WUNTRACED | WNOHANG) == stopped.pid }, "the helper never stopped")
            #expect((status & 0xff) == 0x7f, "stopped, not exited (status \(status))")
            let blocking = try store.blockingLockForTest("hot", timeout: .milliseconds(500))
            #expect(!blocking.previousHolderDied)
            try store.unlock("hot", blocking)
            let async = try await store.lock("hot", timeout: .milliseconds(500))
            try store.unlock("hot", async)
            try await store.mutex("hot", timeout: .milliseconds(500)) { _ in }
            stopped.kill(SIGKILL)
            _ = stopped.wait()
            reaped = true
            let other = try store.blockingLockForTest("other", timeout: .seconds(5))
            #expect(!other.previousHolderDied, "the stopped process never held it")
            try store.unlock("other", other)
            #expect(try store.verify().isClean)
            #expect(try store.lockState("other") == (nil, 0))
        }
    }

    /// Killed between the CAS that took the lock and the write of its holder
    /// record (start time): the next locker takes it over, told that the holder died.
    @Test func killedBetweenTheCASAndTheHolderRecord() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64, lockTimeout: .seconds(10)))
            try store.unlock("job", try store.tryLock("job").unwrap())  // bound: the helper takes the fast path
            let run = try runHelper(["keylock-fault", key.description, "keylock.taken@1", "lock", "job"])
            try #require(run.status == 128 + SIGKILL, "not killed: \(run.status) \(run.output) \(run.errorOutput)")
            #expect(try store.lockState("job").holder == nil, "a dead holder is not reported")
            let token = try store.blockingLockForTest("job", timeout: .seconds(5))
            #expect(token.previousHolderDied)
            try store.unlock("job", token)
            let again = try store.blockingLockForTest("job", timeout: .seconds(5))
            #expect(!again.previousHolderDied)
            try store.unlock("job", again)
        }
    }

    /// Killed after setting the word's slow bit as a waiter, before its entry was
    /// written (inside the table mutex): the holder's release finds no waiter and
    /// frees the lock; the next lock and unlock are lock-free again.
    @Test func killedWhileQueueing() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64, lockTimeout: .seconds(10)))
            let token = try store.blockingLockForTest("job", timeout: .seconds(5))
            let run = try runHelper(["keylock-fault", key.description, "keylock.queued@1", "wait", "job"])
            try #require(run.status == 128 + SIGKILL, "not killed: \(run.status) \(run.output) \(run.errorOutput)")
            try store.unlock("job", token)
            #expect(try store.lockState("job") == (nil, 0))
            let next = try store.blockingLockForTest("job", timeout: .seconds(5))
            #expect(!next.previousHolderDied)
            try store.unlock("job", next)
            // Lock-free again: the slow bit was cleared by the release.
            let identity = try store._locks.identity("job", "test")
            guard case .acquired(let grant) = store._locks.acquireFast(identity, me: _ProcessIdentity.current) else {
                Issue.record("the lock-free path did not take the free lock")
                return
            }
            #expect(store._locks.releaseFast(identity, id: grant.id))
        }
    }

    /// Killed in a hand-off, after the word names the waiter and before the
    /// waiter's grant is written: the waiter's next liveness check takes the table
    /// mutex, whose repair completes the grant. The releaser had released, so
    /// the waiter is not told that a holder died.
    @Test func killedInTheHandOff() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64, lockTimeout: .seconds(10)))
            let releaser = try spawnHelper(["keylock-fault", key.description, "keylock.handingOff@1", "release", "job"])
            #expect(releaser.readLine() == "locked=1")
            let waiter = try spawnHelper(["keylock-fault", key.description, "-", "wait", "job"])
            #expect(waiter.readLine() == "ready=1")
            #expect(try eventually { try store.lockState("job").waiters == 1 })
            try store.set("go", 1)
            let killed = releaser.wait()
            #expect(killed.status == 128 + SIGKILL, "not killed: \(killed.status) \(killed.output) \(killed.errorOutput)")
            let served = waiter.wait()
            #expect(served.status == 0, "\(served.errorOutput)")
            #expect(served.output.contains("locked=1"))
            #expect(try store.lockState("job") == (nil, 0))
            let token = try store.blockingLockForTest("job", timeout: .seconds(5))
            #expect(!token.previousHolderDied)
            try store.unlock("job", token)
        }
    }

    /// A store segment of layout 4 (key locks under the table mutex only: a
    /// process of that layout would not see the lock words) is refused.
    @Test func layout4SegmentIsRefused() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64))
            #expect(_StoreLayout.version == 5)
            try store._storeRegion.withUnsafeMutableBytes {
                $0.storeBytes(of: UInt32(4), toByteOffset: _StoreLayout.H.version, as: UInt32.self)
            }
            expectError(.incompatibleSegment) { _ = try ShmStore.attach(key: key, wait: .zero) }
        }
    }

    /// Slots stay bound after a release, and idle ones are unbound when a new key
    /// finds every slot bound: 4 slots serve 50 keys, each locked twice.
    @Test func idleSlotsAreReboundWhenTheTableIsFull() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64, lockSlots: 4))
            var held: [ShmStore.LockToken] = []
            for index in 0..<4 { held.append(try store.blockingLockForTest("held\(index)", timeout: .seconds(1))) }
            expectError(.full) { _ = try store.tryLock("fifth") }
            for token in held { try store.unlock(token.key, token) }
            for round in 0..<2 {
                for index in 0..<50 {
                    let token = try #require(try store.tryLock("k\(index)"), "round \(round), key \(index)")
                    try store.unlock("k\(index)", token)
                }
            }
            #expect(try store.verify().isClean)
        }
    }
}

extension Optional {
    fileprivate func unwrap() throws -> Wrapped {
        guard let value = self else { throw ShmError(.notFound, "unwrap") }
        return value
    }
}

extension ShmStore {
    /// `blockingLock` from a test (the test functions above are synchronous, or
    /// call it where blocking for a bounded time is intended).
    fileprivate func blockingLockForTest(_ key: String, timeout: Duration) throws -> LockToken {
        try blockingLock(key, timeout: timeout)
    }
}
