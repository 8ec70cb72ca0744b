import Dispatch
import Glibc
@testable import ShmLRU
import ShmLRUTestSupport
import Synchronization
import Testing

/// Issue 27, the uncontended lock's cost: the by-key lock-free path tries the
/// slot the handle's last probe found (a one-entry hint, checked by the slot's
/// binding generation and a comparison of the key), and an uncontended async
/// lock runs on the caller's executor (no hop, no suspension).
@Suite(.serialized) struct StoreLockHintTests {
    /// The hint names the last key's slot, unchanged (no bind or unbind since): a
    /// lock of another key by key must find that key's own slot, not take the
    /// hinted one's lock because its generation still matches.
    @Test func byKeyHintIsOnlyTakenForItsOwnKey() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64, lockSlots: 4))
            try store.unlock("a", try store.blockingLockForHint("a"))  // binds "a"'s slot; the hint: it
            let first = try store.blockingLockForHint("hot")  // past the hint: "hot"'s own slot
            #expect(try store.lockState("hot").holder == getpid())
            #expect(try store.lockState("a").holder == nil, "the hint took a's lock for hot")
            try store.unlock("hot", first)  // the hint: "hot"'s slot
            let a = try store.blockingLockForHint("a")
            #expect(try store.lockState("a").holder == getpid())
            #expect(try store.lockState("hot").holder == nil, "the hint took hot's lock for a")
            let hot = try store.blockingLockForHint("hot")  // free: a lock of its own
            #expect(try store.lockState("hot").holder == getpid())
            try store.unlock("hot", hot)
            try store.unlock("a", a)
            #expect(try store.lockState("a") == (nil, 0))
            #expect(try store.verify().isClean)
        }
    }

    /// Four processes of four threads cycle over five keys on a store of two lock
    /// slots: nearly every lock unbinds an idle slot and binds another key there,
    /// while the other threads' by-key locks and unlocks try the hinted slot.
    /// Each key's counter is exact (a lock taken through a stale hint would be a
    /// second holder and lose updates) and no unlock is refused.
    @Test func byKeyHintStaysExactWhileSlotsAreRebound() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 16, recordSize: 64, lockSlots: 2))
            let names = ["k0", "k1", "k2", "k3", "k4"]
            let (processes, threads, count) = (4, 4, 1_500)
            let helpers = try (0..<processes).map { _ in
                try spawnHelper(["keylock-rebinding-count", key.description, names.joined(separator: ","), String(threads), String(count)])
            }
            for helper in helpers {
                let run = helper.wait()
                #expect(run.status == 0, "\(run.errorOutput)")
                #expect(run.values["errors"] == "0", "\(run.values["first"] ?? "")")
            }
            var total = 0
            for name in names { total += try store.get(name, as: Int.self) ?? 0 }
            #expect(total == processes * threads * count)
            for name in names { #expect(try store.lockState(name) == (nil, 0)) }
            #expect(try store.verify().isClean)
        }
    }

    /// Uncontended async locks (by key and through a `KeyLock`) from an actor
    /// whose executor counts the jobs it is given: a lock that left the actor's
    /// executor (a nonisolated async function's hop to the global executor, or a
    /// suspension) would come back as one job each time.
    @Test func uncontendedAsyncLocksStayOnTheCallersExecutor() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64))
            let ball = try store.keyLock("ball")
            let counting = CountingActor()
            let hops = try await counting.lockAndUnlock(store, ball, times: 200)
            #expect(hops == 0, "\(hops) jobs for 400 uncontended async locks")
            #expect(try store.lockState("ball") == (nil, 0))
        }
    }
}

/// An actor on an executor that counts the jobs enqueued on it.
private actor CountingActor {
    final class Executor: SerialExecutor {
        let jobs = Atomic<Int>(0)
        let queue = DispatchQueue(label: "StoreLockHintTests.counting")
        func enqueue(_ job: consuming ExecutorJob) {
            jobs.add(1, ordering: .relaxed)
            let job = UnownedJob(job)
            let executor = asUnownedSerialExecutor()
            queue.async { job.runSynchronously(on: executor) }
        }
    }

    let executor = Executor()
    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    /// `times` async lock + unlock pairs by key and as many through `ball`; the
    /// jobs enqueued on this actor meanwhile.
    func lockAndUnlock(_ store: ShmStore, _ ball: ShmStore.KeyLock, times: Int) async throws -> Int {
        let before = executor.jobs.load(ordering: .relaxed)
        for _ in 0..<times {
            try store.unlock("ball", try await store.lock("ball"))
            try ball.unlock(try await ball.lock())
        }
        return executor.jobs.load(ordering: .relaxed) - before
    }
}

extension ShmStore {
    fileprivate func blockingLockForHint(_ key: String) throws -> LockToken {
        try blockingLock(key, timeout: .seconds(1))
    }
}
