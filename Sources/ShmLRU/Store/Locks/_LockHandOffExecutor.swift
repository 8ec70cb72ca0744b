import Glibc

// Where a contended async `mutex` / `withLock` runs once it is handed the lock:
// on the thread that handed it over, not at the back of the cooperative pool.
//
// Within one process, a release passes the key's lock to the first async caller
// queued for it (FIFO, `_AsyncLockWaiter.passLocally`) and resumes that caller.
// Resumed on the global executor, the caller's task waits for a pool thread,
// behind every job already queued there (in a busy server: other requests, tens
// of µs), and all that time it holds the lock without running: every other
// caller of the key, in every process, waits behind it (a convoy). The blocking
// lock has no such gap: its waiter runs on its own thread the moment it is woken.
//
// So the scoped async calls (`mutex`, the async `withLock`, `KeyLock.withLock`),
// when they must wait, wait with this executor as their task's preference
// (`withTaskExecutorPreference`), and their own final release hands over under
// `handingOff`: the continuation the release resumes is not sent to the pool but
// collected on this thread, and run here, synchronously, as soon as the release
// is done (`ExecutorJob.runSynchronously`: the runtime saves and restores the
// releasing task around it). The caller takes the lock, runs its body and
// releases in turn, which collects the next caller; the releasing thread runs
// them one after the other (a loop, never a deeper stack), so a run of callers
// of one process is served back to back, as the blocking lock's would be. The run
// is bounded: `passLocally` stops passing after the fairness window (1 ms)
// and releases to the shared line, and one hand-over runs at most
// `maximumRun` callers here, none started after that window; the rest go to
// the pool. The handle's waiting thread hands over the same way the callers it
// resumes (a grant from another process): its other waits wait meanwhile.
//
// Only the scoped calls' releases and the waiting thread hand over so: they
// run in this library's code, with no lock of the caller's held. A release by
// `unlock` (user code, maybe inside a lock of its own) never runs another task's
// body; it sends the resumed caller to the pool. A job enqueued here
// outside a hand-over goes to the global concurrent executor; so a body that
// suspends continues on the pool. Nothing here blocks: collecting is a
// thread-local append, and a hand-over only runs jobs that are ready.

final class _LockHandOffExecutor: TaskExecutor, @unchecked Sendable {
    static let shared = _LockHandOffExecutor()

    /// At most this many callers run on one releasing thread per hand-over, and
    /// none starts after the fairness window (1 ms) from the hand-over's start.
    static let maximumRun = 64

    /// This thread's hand-over (private memory, one per thread).
    private final class HandOver {
        /// Inside `handingOff` (any depth): resumptions are collected.
        var depth = 0
        /// Collected jobs, in the order their callers were resumed.
        var jobs: [UnownedJob] = []
    }

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        let created = pthread_key_create(&key) { pointer in
            if let pointer { Unmanaged<HandOver>.fromOpaque(pointer).release() }
        }
        precondition(created == 0, "pthread_key_create failed: \(created)")
        return key
    }()

    private static func current(creating: Bool) -> HandOver? {
        if let pointer = pthread_getspecific(key) { return Unmanaged<HandOver>.fromOpaque(pointer).takeUnretainedValue() }
        guard creating else { return nil }
        let handOver = HandOver()
        guard pthread_setspecific(key, Unmanaged.passRetained(handOver).toOpaque()) == 0 else {
            Unmanaged.passUnretained(handOver).release()
            return nil
        }
        return handOver
    }

    func enqueue(_ job: consuming ExecutorJob) {
        if let handOver = Self.current(creating: false), handOver.depth > 0 {
            handOver.jobs.append(UnownedJob(job))
        } else {
            globalConcurrentExecutor.enqueue(job)
        }
    }

    /// Runs `release`; a caller it resumes (one that waits with this executor as
    /// its preference) runs on this thread when `release` returns, and so do the
    /// callers their own releases resume, up to `maximumRun`. Nested (a body
    /// run here releasing): only collects, the outer loop runs them.
    static func handingOff<R, E: Error>(_ release: () throws(E) -> R) throws(E) -> R {
        guard let handOver = current(creating: true) else { return try release() }
        handOver.depth += 1
        let result: Result<R, E>
        do throws(E) { result = .success(try release()) } catch { result = .failure(error) }
        // Nested, or nobody handed over (an uncontended release: no clock read).
        if handOver.depth > 1 || handOver.jobs.isEmpty {
            handOver.depth -= 1
            return try result.get()
        }
        var ran = 0
        let start = _monotonicNanoseconds()
        while !handOver.jobs.isEmpty {
            let job = handOver.jobs.removeFirst()
            if ran == maximumRun || _monotonicNanoseconds() &- start >= _LockTable.fairnessNanoseconds {
                handOver.depth -= 1  // the rest to the pool, in order
                let rest = handOver.jobs
                handOver.jobs = []
                globalConcurrentExecutor.enqueue(ExecutorJob(job))
                for job in rest { globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
                return try result.get()
            }
            ran += 1
            job.runSynchronously(on: shared.asUnownedTaskExecutor())
        }
        handOver.depth -= 1
        return try result.get()
    }
}
