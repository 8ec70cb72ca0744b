import CShm
import Glibc
import Synchronization

// How async lock calls wait: one waiting thread per store handle, whatever the
// number of waiters, never a thread per wait and never a cooperative-pool thread.
//
// An async lock call first tries the lock-free path (ShmStore+Locks.swift)
// unless a caller of this handle already waits here. The
// async callers of one key in this process form a local FIFO queue. The
// queue, not each call, has one waiter entry in the store's shared waiter table:
// its process's place in the key's line. When a release hands the lock to that
// entry, it rings this process's doorbell (one waiter entry whose futex word the
// thread sleeps on); the thread claims the grant and resumes the first caller
// of the local queue. If more callers wait, the queue takes a new place at the
// back of the shared line (so processes take turns). Callers beyond the shared
// table's entries just wait in their local queue: no `.full`. A release that
// frees the lock for a running acquirer rings the earliest entry too (see
// _LockTable.swift): the thread then takes the lock if it is still free.
//
// A caller takes its place in the local queue synchronously (`reserve`, in
// call order) and then waits for its `Slot`: the outcome may come before the
// task parks its continuation (the scoped `mutex` / `withLock` hop to the hand-
// over executor in between, _LockHandOffExecutor.swift), and is kept for it.
// Queueing does not wake the thread (a futex wake and a context switch per
// contended call) unless the queue needs it: no place in the shared line yet,
// or a deadline before the thread's own next wake-up (`sleepUntil`).
//
// A holder in this process whose key has callers queued here passes the lock to
// the first of them as it unlocks (`passLocally`: one CAS, the continuation
// resumed by the releasing thread, no wake-up), for up to the fairness window
// (1 ms) of passes in a row; then it releases to the shared line, so that other
// processes' waiters get their turn. One process thus serves a run of its
// callers per turn instead of paying a cross-process wake-up per caller.
//
// A caller handed the lock that waits with the hand-over executor as its
// preference runs on the releasing thread (`passLocally` inside the releasing
// `mutex`'s `handingOff`) or on this handle's thread (its resumptions are under
// `handingOff` too), not behind the pool's queue.
//
// The thread also ends waits whose deadline passed or whose task was cancelled,
// checks every 50 ms that a holder is still alive (a dead one's lock goes to
// the next in line, flagged), and exits after a second with nothing to wait
// for. Every wait it makes on the table mutex is bounded; continuations are
// resumed after every lock is released.

final class _AsyncLockWaiter: @unchecked Sendable {
    typealias Grant = _LockTable.Grant
    typealias Continuation = CheckedContinuation<Grant, any Error>

    private struct QueueKey: Hashable {
        var kind: UInt32
        var key: [UInt8]
    }

    /// Where a queued caller's outcome goes: its continuation once it waits,
    /// or the outcome itself until it does (a place taken by `reserve`, before the
    /// caller's task hopped to the executor it waits on; see `wait`).
    final class Slot: Sendable {
        let id: UInt64
        /// The lock call's operation, for errors.
        let operation: String
        private let parked = Mutex<(continuation: Continuation?, outcome: Result<Grant, ShmError>?)>((nil, nil))

        init(id: UInt64, operation: String) {
            self.id = id
            self.operation = operation
        }

        /// Resumes the caller with `outcome`, or keeps it for `wait`.
        func deliver(_ outcome: Result<Grant, ShmError>) {
            let continuation = parked.withLock { p -> Continuation? in
                guard let continuation = p.continuation else {
                    if p.outcome == nil { p.outcome = outcome }
                    return nil
                }
                p.continuation = nil
                return continuation
            }
            continuation?.resume(with: outcome)
        }

        /// The outcome delivered before the caller waited (nil: none yet).
        func takeOutcome() -> Result<Grant, ShmError>? {
            parked.withLock { p in
                defer { p.outcome = nil }
                return p.outcome
            }
        }

        /// Whether the caller waits parked (tests).
        var isParked: Bool { parked.withLock { $0.continuation != nil } }

        /// Parks `continuation`, or resumes it at once with an outcome delivered meanwhile.
        func park(_ continuation: Continuation) {
            let outcome = parked.withLock { p -> Result<Grant, ShmError>? in
                if let outcome = p.outcome {
                    p.outcome = nil
                    return outcome
                }
                p.continuation = continuation
                return nil
            }
            if let outcome { continuation.resume(with: outcome) }
        }
    }

    private struct Waiter {
        var id: UInt64 { slot.id }
        var slot: Slot
        var deadline: UInt64?
        var cancelled = false
        var operation: String
    }

    private struct Queue {
        var identity: _LockTable.Identity
        var waiters: [Waiter] = []
        /// The shared waiter entry: this queue's place in the key's line.
        var entry: Int? = nil
        /// When the current run of same-process passes began (0: none).
        var passingSince: UInt64 = 0
    }

    private struct State {
        var queues: [QueueKey: Queue] = [:]
        var running = false
        var doorbell: Int? = nil
        var nextID: UInt64 = 1
        var idleSince: UInt64 = 0
        /// When the thread, asleep, wakes by itself next (its last pass set it):
        /// a caller queueing with an earlier deadline must wake it.
        var sleepUntil: UInt64 = 0
    }

    private typealias Resume = (Slot, Result<Grant, ShmError>)

    let table: _LockTable
    /// Keeps the mapping while the thread runs.
    private let region: ShmRegion
    private let state = Mutex(State())
    /// Whether any caller of this handle waits in a local queue (kept with the
    /// queues, under `state`): while one does, a new async lock call queues
    /// behind it instead of trying the lock-free path (the local FIFO).
    private let queued = Atomic<Bool>(false)
    /// Where the thread sleeps while it has no doorbell (private memory).
    private let localWord: UnsafeMutablePointer<UInt32>

    /// How long a table-mutex wait of the thread, or of a caller queueing, may take
    /// before it is retried later (a peer holds that mutex for a table update only).
    static let tableWaitNanoseconds: UInt64 = 2_000_000
    /// How often an unregistered queue (no free waiter entry) tries again.
    static let pollNanoseconds: UInt64 = 2_000_000
    /// The thread exits after this long with no waiter.
    static let idleExitNanoseconds: UInt64 = 1_000_000_000

    init(table: _LockTable, region: ShmRegion) {
        self.table = table
        self.region = region
        localWord = .allocate(capacity: 1)
        localWord.initialize(to: 0)
    }

    deinit { localWord.deallocate() }

    // MARK: Callers

    /// True while a lock call of this handle waits in a local queue: a new call
    /// must not take a free lock past it.
    var hasQueuedCallers: Bool { queued.load(ordering: .acquiring) }

    /// How many queued callers wait parked (their task suspended; tests).
    var parkedCallers: Int {
        state.withLock { s in s.queues.values.reduce(0) { $0 + $1.waiters.count { $0.slot.isParked } } }
    }

    /// Waits (without blocking the calling thread) for the lock of `identity`.
    func lock(_ identity: _LockTable.Identity, deadline: UInt64?, _ operation: String) async throws(ShmError) -> Grant {
        try await wait(try reserve(identity, deadline: deadline, operation))
    }

    /// Takes this caller's place in the key's local queue now, in the order of
    /// the calls (synchronous: before any hop of the caller's task); `wait`
    /// then waits for the outcome, which may already be there.
    func reserve(_ identity: _LockTable.Identity, deadline: UInt64?, _ operation: String) throws(ShmError) -> Slot {
        if Task.isCancelled { throw ShmError(.cancelled, operation, detail: "the task was cancelled") }
        let id = state.withLock { s in
            defer { s.nextID &+= 1 }
            return s.nextID
        }
        let slot = Slot(id: id, operation: operation)
        enqueue(identity, Waiter(slot: slot, deadline: deadline, operation: operation))
        return slot
    }

    /// The outcome of the place `slot` took (`reserve`): a grant, or the error
    /// that ended the wait (a timeout, a cancellation of the task, a detach).
    func wait(_ slot: Slot) async throws(ShmError) -> Grant {
        if let outcome = slot.takeOutcome() { return try outcome.get() }
        do {
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: Continuation) in slot.park(continuation) }
            } onCancel: {
                cancel(slot.id)
            }
        } catch let error as ShmError {
            throw error
        } catch {
            throw ShmError(.systemCall, slot.operation, detail: "\(error)")
        }
    }

    private func enqueue(_ identity: _LockTable.Identity, _ waiter: Waiter) {
        let me = _ProcessIdentity.current
        let key = QueueKey(kind: identity.kind, key: identity.key)
        var immediate: Resume? = nil
        var startThread = false
        var wakeThread = false
        let cancelled = Task.isCancelled  // (this runs in the waiting task)
        state.withLock { s in
            defer { queued.store(!s.queues.isEmpty, ordering: .releasing) }
            // Checked under the lock `cancel` takes: a cancellation that came
            // before the waiter was queued is seen here, one after finds it queued.
            if cancelled || Task.isCancelled {
                immediate = (waiter.slot, .failure(ShmError(.cancelled, waiter.operation, detail: "the task was cancelled")))
                return
            }
            if var queue = s.queues[key] {
                queue.waiters.append(waiter)  // behind this process's earlier callers
                if let entry = queue.entry { table.setQueued(entry, queue.waiters.count) }
                s.queues[key] = queue
                // The queue's place in line (or the thread's poll for one) serves
                // this caller too; the thread only needs waking for an earlier deadline.
            } else {
                var queue = Queue(identity: identity, waiters: [waiter])
                let bound = _saturatingAdd(_monotonicNanoseconds(), _AsyncLockWaiter.tableWaitNanoseconds)
                do throws(ShmError) {
                    let entry = try table.locked(until: bound, waiter.operation) { () throws(ShmError) -> _LockTable.Entry in
                        if s.doorbell == nil { s.doorbell = table.addDoorbellLocked(me: me) }
                        return try table.enterLocked(identity, me: me, tryOnly: false, doorbell: s.doorbell, waiter.operation)
                    }
                    switch entry {
                    case .acquired(let grant):
                        immediate = (waiter.slot, .success(grant))
                        return
                    case .queued(let index): queue.entry = index
                    case .noRoom, .busy: wakeThread = true  // the thread registers it when an entry frees
                    }
                } catch where error.code == .lockTimeout {
                    wakeThread = true  // the table mutex is busy: the thread registers the queue
                } catch {
                    immediate = (waiter.slot, .failure(error))
                    return
                }
                s.queues[key] = queue
            }
            if let deadline = waiter.deadline, deadline < s.sleepUntil { wakeThread = true }
            if !s.running {
                s.running = true
                startThread = true
            }
        }
        if let (slot, result) = immediate {
            slot.deliver(result)
            return
        }
        // A queued caller needs the thread only to register its queue or to end
        // its wait in time: a grant rings the queue's entry, which wakes it. No
        // wake-up (two futex calls and a context switch) per contended call.
        if startThread { start() } else if wakeThread { wake() }
    }

    private func cancel(_ id: UInt64) {
        state.withLock { s in
            for (key, var queue) in s.queues {
                guard let position = queue.waiters.firstIndex(where: { $0.id == id }) else { continue }
                queue.waiters[position].cancelled = true
                s.queues[key] = queue
                return
            }
        }
        wake()
    }

    /// A release in this process handed the lock to waiter entry `entry`: if it is
    /// one of this handle's queues, resume its first caller now (no thread hop).
    func delivered(to entry: Int) {
        var resumes: [Resume] = []
        let me = _ProcessIdentity.current
        state.withLock { s in
            defer { queued.store(!s.queues.isEmpty, ordering: .releasing) }
            guard let key = s.queues.first(where: { $0.value.entry == entry })?.key, var queue = s.queues[key] else { return }
            process(&queue, me: me, doorbell: s.doorbell, now: _monotonicNanoseconds(), livenessDue: false, &resumes)
            s.queues[key] = queue.waiters.isEmpty && queue.entry == nil ? nil : queue
        }
        for (slot, result) in resumes { slot.deliver(result) }
    }

    /// The holder of `id` (a lock call of this process) is unlocking: if callers of
    /// this handle queue here for the same key, passes the lock to the first of
    /// them (a new token, `_LockTable.passOn`) and resumes it from this thread;
    /// false (nothing done) when none waits, the run of passes reached the
    /// fairness window, or the lock word says the release must take the mutex path.
    func passLocally(_ identity: _LockTable.Identity, id: UInt64) -> Bool {
        guard hasQueuedCallers else { return false }
        let me = _ProcessIdentity.current
        let key = QueueKey(kind: identity.kind, key: identity.key)
        var resumes: [Resume] = []
        var wakeThread = false
        let passed = state.withLock { s -> Bool in
            defer { queued.store(!s.queues.isEmpty, ordering: .releasing) }
            guard var queue = s.queues[key] else { return false }
            let now = _monotonicNanoseconds()
            dropFinished(&queue, now: now, &resumes)
            defer { s.queues[key] = queue.waiters.isEmpty && queue.entry == nil ? nil : queue }
            guard !queue.waiters.isEmpty else { return false }
            if queue.passingSince == 0 {
                queue.passingSince = now
            } else if now &- queue.passingSince >= _LockTable.fairnessNanoseconds {
                queue.passingSince = 0  // others' turn: released to the shared line
                return false
            }
            guard let grant = table.passOn(identity, id: id, me: me) else {
                queue.passingSince = 0
                return false
            }
            let first = queue.waiters.removeFirst()
            resumes.append((first.slot, .success(grant)))
            if queue.waiters.isEmpty { queue.passingSince = 0 }  // the run ends with the callers
            if let entry = queue.entry {
                if queue.waiters.isEmpty {
                    // Nobody left for the place in line: leave it (the lock is held
                    // here, so no grant can have come to it), or let the thread.
                    let bound = _saturatingAdd(now, _AsyncLockWaiter.tableWaitNanoseconds)
                    let left = try? table.locked(until: bound, "") { () throws(ShmError) -> (left: Bool, grant: Grant?) in
                        (true, table.leaveLocked(entry, me: me))
                    }
                    if left != nil { queue.entry = nil } else { wakeThread = true }
                } else {
                    table.setQueued(entry, queue.waiters.count)
                }
            }
            return true
        }
        for (slot, result) in resumes { slot.deliver(result) }
        if wakeThread { wake() }
        return passed
    }

    private func wake() {
        _ = cshm_fetch_add_u32(localWord, 1)
        _ = cshm_futex_wake(localWord, 1)
        if let doorbell = state.withLock({ $0.doorbell }) { table.ringOwn(doorbell) }
    }

    // MARK: The thread

    private func start() {
        let thread = _startThread { [self] in run() }
        if let thread {
            pthread_detach(thread)
            return
        }
        // No thread: fail every waiter rather than leave it hanging.
        var resumes: [Resume] = []
        state.withLock { s in
            defer { queued.store(!s.queues.isEmpty, ordering: .releasing) }
            for queue in s.queues.values {
                for waiter in queue.waiters {
                    resumes.append((waiter.slot, .failure(ShmError(.systemCall, waiter.operation, detail: "pthread_create failed"))))
                }
                if let entry = queue.entry {
                    let bound = _saturatingAdd(_monotonicNanoseconds(), 100_000_000)
                    let left = try? table.locked(until: bound, "") { () throws(ShmError) -> Grant? in
                        table.leaveLocked(entry, me: _ProcessIdentity.current)
                    }
                    if let grant = left ?? nil { _ = try? table.release(queue.identity, id: grant.id, "") }
                }
            }
            s.queues = [:]
            s.running = false
        }
        for (slot, result) in resumes { slot.deliver(result) }
    }

    private func run() {
        let me = _ProcessIdentity.current
        var nextCheck = _saturatingAdd(_monotonicNanoseconds(), _LockTable.livenessCheckNanoseconds)
        while true {
            let doorbell = state.withLock { $0.doorbell }
            let word = doorbell.map { table.word($0) } ?? localWord
            let observed = cshm_load_acquire_u32(word)
            let now = _monotonicNanoseconds()
            let livenessDue = now >= nextCheck
            if livenessDue { nextCheck = _saturatingAdd(now, _LockTable.livenessCheckNanoseconds) }
            var resumes: [Resume] = []
            var sleep = nextCheck > now ? nextCheck - now : 0
            let exit = state.withLock { s -> Bool in
                defer { queued.store(!s.queues.isEmpty, ordering: .releasing) }
                if !region.isAttached {
                    for queue in s.queues.values {
                        for waiter in queue.waiters {
                            resumes.append((waiter.slot, .failure(ShmError(.detached, waiter.operation))))
                        }
                    }
                    s.queues = [:]
                    s.doorbell = nil
                    s.running = false
                    return true
                }
                for (key, var queue) in s.queues {
                    process(&queue, me: me, doorbell: s.doorbell, now: now, livenessDue: livenessDue, &resumes)
                    s.queues[key] = queue.waiters.isEmpty && queue.entry == nil ? nil : queue
                    for waiter in queue.waiters {
                        if let deadline = waiter.deadline { sleep = min(sleep, deadline > now ? deadline - now : 0) }
                    }
                    if queue.entry == nil, !queue.waiters.isEmpty { sleep = min(sleep, _AsyncLockWaiter.pollNanoseconds) }
                }
                if s.queues.isEmpty {
                    if s.idleSince == 0 { s.idleSince = now }
                    if now - s.idleSince >= _AsyncLockWaiter.idleExitNanoseconds {
                        if let doorbell = s.doorbell {
                            _ = try? table.locked(until: _saturatingAdd(now, 100_000_000), "") { () throws(ShmError) in
                                table.removeDoorbellLocked(doorbell, me: me)
                            }
                        }
                        s.doorbell = nil
                        s.running = false
                        return true
                    }
                } else {
                    s.idleSince = 0
                }
                if s.doorbell == nil {
                    sleep = min(sleep, _AsyncLockWaiter.pollNanoseconds)  // grants ring the entries' own words
                    _ = try? table.locked(until: _saturatingAdd(now, _AsyncLockWaiter.tableWaitNanoseconds), "") { () throws(ShmError) in
                        s.doorbell = table.addDoorbellLocked(me: me)
                    }
                }
                s.sleepUntil = _saturatingAdd(now, max(sleep, 100_000))
                return false
            }
            // A caller handed a lock here (a grant claimed, a dead holder's lock)
            // runs on this thread now, and so do the callers its release hands
            // over to (_LockHandOffExecutor: at most 64, and none started after
            // the 1 ms fairness window; the rest go to the pool). Its other waits
            // wait meanwhile: a body that blocks its thread delays them.
            _LockHandOffExecutor.handingOff {
                for (slot, result) in resumes { slot.deliver(result) }
            }
            if exit { return }
            // Until the instant callers were told (`sleepUntil`), however long the
            // resumed callers ran here.
            let until = _saturatingAdd(now, max(sleep, 100_000))
            let left = until &- min(until, _monotonicNanoseconds())
            if left > 0 { _ = cshm_futex_wait(word, observed, Int64(clamping: left)) }
        }
    }

    /// One pass over a queue (under the state lock): ends the waits that are over,
    /// claims a grant for the first caller, takes a place in line when callers
    /// wait without one, leaves the line when none does.
    private func process(
        _ queue: inout Queue, me: _ProcessIdentity, doorbell: Int?, now: UInt64, livenessDue: Bool, _ resumes: inout [Resume]
    ) {
        dropFinished(&queue, now: now, &resumes)
        let bound = _saturatingAdd(now, _AsyncLockWaiter.tableWaitNanoseconds)
        for _ in 0..<2 {
            if let entry = queue.entry {
                var grant = table.claim(entry, me: me)
                if grant == nil, !queue.waiters.isEmpty, table.isFree(slotOfWaiter: entry) {
                    // A release freed the lock and rang: take it if still free and first
                    // (the word it left for this entry: one CAS; else under the mutex).
                    grant = table.claimRung(entry, me: me)
                    if grant == nil {
                        grant = (try? table.locked(until: bound, "") { () throws(ShmError) -> Grant? in table.retryLocked(entry, me: me) }) ?? nil
                    }
                }
                if grant != nil { queue.passingSince = 0 }
                if grant == nil, livenessDue {
                    _ = try? table.locked(until: bound, "") { () throws(ShmError) in table.checkHolderLocked(ofWaiter: entry) }
                    grant = table.claim(entry, me: me)
                }
                if grant == nil, queue.waiters.isEmpty {
                    // Nobody left to give it to: leave the line (or pass on a grant that came meanwhile).
                    let left = try? table.locked(until: bound, "") { () throws(ShmError) -> (left: Bool, grant: Grant?) in
                        (true, table.leaveLocked(entry, me: me))
                    }
                    guard let left else { return }  // the table is busy: next pass
                    queue.entry = nil
                    if let granted = left.grant { _ = try? table.release(queue.identity, id: granted.id, "") }
                    return
                }
                guard let grant else { return }  // still waiting
                queue.entry = nil
                if queue.waiters.isEmpty {
                    _ = try? table.release(queue.identity, id: grant.id, "")
                    return
                }
                let first = queue.waiters.removeFirst()
                resumes.append((first.slot, .success(grant)))
            }
            // Callers wait with no place in line: take one (or the lock, if free).
            guard let first = queue.waiters.first else { return }
            do throws(ShmError) {
                let entry = try table.locked(until: bound, first.operation) { () throws(ShmError) -> _LockTable.Entry in
                    try table.enterLocked(
                        queue.identity, me: me, tryOnly: false, doorbell: doorbell, queued: UInt32(clamping: queue.waiters.count),
                        first.operation)
                }
                switch entry {
                case .acquired(let grant):
                    queue.waiters.removeFirst()
                    resumes.append((first.slot, .success(grant)))
                    continue  // more callers: take a place for them
                case .queued(let index):
                    queue.entry = index
                case .noRoom, .busy:
                    break
                }
            } catch where error.code == .lockTimeout {
                // Table busy: next pass.
            } catch {
                for waiter in queue.waiters { resumes.append((waiter.slot, .failure(error))) }
                queue.waiters = []
            }
            return
        }
    }

    /// Ends the waits of `queue` that were cancelled or whose deadline passed.
    private func dropFinished(_ queue: inout Queue, now: UInt64, _ resumes: inout [Resume]) {
        queue.waiters.removeAll { waiter in
            if waiter.cancelled {
                resumes.append((waiter.slot, .failure(ShmError(.cancelled, waiter.operation, detail: "the waiting task was cancelled"))))
                return true
            }
            if let deadline = waiter.deadline, now >= deadline {
                resumes.append((waiter.slot, .failure(ShmError(.lockTimeout, waiter.operation, detail: "the key's lock was not free in time"))))
                return true
            }
            return false
        }
    }
}
