import CShm
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

    /// The by-key path remembers the last key's slot by the key's `String` words
    /// (`_KeyStringHint`) and keeps that string alive: a string allocated later
    /// at the same address (with the same length and flags, so the same words)
    /// would otherwise be taken for the remembered key and lock its slot. Each
    /// round makes the hint remember a 24-byte key in a string then dropped by
    /// the caller, and locks a new 24-byte key made in one allocation: it must
    /// lock its own slot, never the remembered key's.
    @Test func byKeyStringHintNeverTakesANewStringForTheRememberedKey() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64, lockSlots: 128))
            let remembered = String(repeating: "r", count: 24)
            for i in 0..<200 {
                try {
                    let first = String(repeating: "r", count: 24)  // not a small string: a storage object
                    for _ in 0..<3 { try store.unlock(first, try store.blockingLockForHint(first)) }  // now the string hint
                }()
                let other = String(unsafeUninitializedCapacity: 24) { buffer in
                    for j in 0..<24 { buffer[j] = UInt8(ascii: "a") &+ UInt8((i &+ j) % 26) }
                    return 24
                }
                let token = try store.blockingLockForHint(other)
                #expect(try store.lockState(other).holder == getpid())
                #expect(try store.lockState(remembered).holder == nil, "round \(i): a new key took the remembered key's lock")
                try store.unlock(other, token)
            }
            #expect(try store.lockState(remembered) == (nil, 0))
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

    /// A woken waiter takes a free lock with one CAS only when the word is the
    /// one a release left for its entry (the ring mark), so FIFO among the
    /// queued holds without the mutex. Two helpers queue, first then second; the
    /// first is stopped; the lock is freed and the first's entry marked, and
    /// nobody rung (a releaser stopped before its ring). The second wakes for its
    /// liveness check and finds the lock free: not its word, so it does not take
    /// it, and the check hands it to the first (stopped: it holds it, the second
    /// still queued). Continued, the first locks and unlocks, then the second.
    @Test func aWaiterNotRungNeverTakesTheFreeLockAheadOfTheEarliest() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64, lockTimeout: .seconds(30)))
            let token = try store.blockingLockForHint("job")
            let first = try spawnHelper(["keylock-fault", key.description, "-", "wait", "job"])
            var second: SpawnedProcess? = nil
            var reaped = false
            defer {
                if !reaped {
                    for helper in [first] + (second.map { [$0] } ?? []) {
                        helper.kill(SIGCONT)
                        helper.kill(SIGKILL)
                        _ = helper.wait()
                    }
                }
            }
            #expect(first.readLine() == "ready=1")
            #expect(try eventually(timeout: .seconds(10)) { try store.lockState("job").waiters == 1 })
            kill(first.pid, SIGSTOP)
            let later = try spawnHelper(["keylock-fault", key.description, "-", "wait", "job"])  // queued after the first
            second = later
            #expect(later.readLine() == "ready=1")
            #expect(try eventually(timeout: .seconds(10)) { try store.lockState("job").waiters == 2 })
            try store.freeWithRingMarkForTest("job", token, markingWaiterOf: first.pid)
            #expect(try eventually(timeout: .seconds(10)) { try store.lockState("job").holder == first.pid })
            #expect(try store.lockState("job").waiters == 1, "the second waiter took the lock ahead of the first")
            kill(first.pid, SIGCONT)
            let runs = [first.wait(), later.wait()]
            reaped = true
            for run in runs {
                #expect(run.status == 0, "\(run.errorOutput)")
                #expect(run.values["locked"] == "1")
            }
            #expect(try store.lockState("job") == (nil, 0))
        }
    }

    /// The woken earliest waiter takes the free lock left for it without the
    /// table mutex: a helper queues; the lock is freed with its entry marked
    /// (nobody rung); another process stops inside the table mutex (SIGSTOP at
    /// `keylock.binding`, binding another key). The waiter wakes for its liveness
    /// check and takes the lock (one CAS) at once; before, it needed the mutex,
    /// and waited for it until the stopped process was killed.
    @Test func theRungWaiterTakesTheFreeLockWithoutTheTableMutex() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64, lockTimeout: .seconds(30)))
            let token = try store.blockingLockForHint("job")
            let waiter = try spawnHelper(["keylock-fault", key.description, "-", "wait", "job"])
            var stopped: SpawnedProcess? = nil
            var reaped = false
            defer {
                if !reaped {
                    for helper in [waiter] + (stopped.map { [$0] } ?? []) {
                        helper.kill(SIGKILL)
                        _ = helper.wait()
                    }
                }
            }
            #expect(waiter.readLine() == "ready=1")
            #expect(try eventually(timeout: .seconds(10)) { try store.lockState("job").waiters == 1 })
            kill(waiter.pid, SIGSTOP)  // asleep until continued: it looks after the mutex is taken
            try store.freeWithRingMarkForTest("job", token, markingWaiterOf: waiter.pid)
            let holder = try spawnHelper(["keylock-fault", key.description, "keylock.binding@1:stop", "lock", "other"])
            stopped = holder
            var status: Int32 = 0
            #expect(eventually(timeout: .seconds(10)) { waitpid(holder.pid, &status, WUNTRACED | WNOHANG) == holder.pid })
            kill(waiter.pid, SIGCONT)
            // Taken while the mutex's holder is still stopped (the word read directly).
            #expect(
                try eventually(timeout: .seconds(10)) { try store.lockWordHolderForTest("job") == waiter.pid },
                "the waiter waited for the table mutex")
            #expect(waiter.readLine() == "locked=1")
            holder.kill(SIGKILL)
            let runs = [waiter.wait(), holder.wait()]
            reaped = true
            #expect(runs[0].status == 0, "\(runs[0].errorOutput)")
            #expect(try store.lockState("job") == (nil, 0))
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
    /// The release path that frees the lock for a running acquirer and rings the
    /// earliest waiter (`releaseLocked`), stopped before the ring (as a releaser
    /// stopped or killed at `keylock.handingOff`): under the table mutex, the
    /// word of `token` is freed (`slow` kept) and the entry of process `pid` is
    /// marked for that free word. Nobody is rung.
    fileprivate func freeWithRingMarkForTest(_ key: String, _ token: LockToken, markingWaiterOf pid: Int32) throws {
        let table = _locks
        let identity = try table.identity(key, "test")
        try table.locked("test") { () throws(ShmError) in
            let segment = table.segment
            guard let slot = table.findSlot(identity, bind: false) else { throw ShmError(.lockNotHeld, "test") }
            let word = segment.u64(segment.slot(slot, _StoreLayout.L.word))
            guard cshm_load_acquire_u64(word) & _LockWord.tokenMask == token.id else { throw ShmError(.lockNotHeld, "test") }
            var entry: Int? = nil
            for index in 0..<segment.layout.waiterSlots
            where segment.load(segment.waiter(index, _StoreLayout.W.slot)) == UInt32(slot + 1)
                && Int32(bitPattern: segment.load(segment.waiter(index, _StoreLayout.W.pid))) == pid
            {
                entry = index
            }
            guard let entry else { throw ShmError(.lockNotHeld, "test", detail: "no waiter entry of \(pid)") }
            let free = (cshm_load_relaxed_u64(word) & _LockWord.counterMask) | _LockWord.slow
            cshm_store_relaxed_u32(segment.u32(segment.waiter(entry, _StoreLayout.W.flags)), _LockTable.rungMark(free))
            cshm_store_release_u64(word, free)
        }
    }

    /// The PID in `key`'s lock word, read without the table mutex (0: free or unbound).
    fileprivate func lockWordHolderForTest(_ key: String) throws -> Int32 {
        let table = _locks
        guard let slot = table.findSlot(try table.identity(key, "test"), bind: false) else { return 0 }
        return _LockWord.pid(cshm_load_acquire_u64(table.segment.u64(table.segment.slot(slot, _StoreLayout.L.word))))
    }

    fileprivate func blockingLockForHint(_ key: String) throws -> LockToken {
        try blockingLock(key, timeout: .seconds(1))
    }
}
