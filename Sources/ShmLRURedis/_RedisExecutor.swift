#if Redis
import Glibc
import ShmLRU
import Synchronization

// The threads a near cache's Redis commands run on. hiredis's blocking calls
// (connect, a command's round trip, up to the command timeout) never run on
// Swift's cooperative pool: an async call queues its work here and suspends;
// one of these threads runs it and resumes the call's continuation. Started on
// first use, `ioThreads` of them per near cache; they end when the near cache
// is released (its deinit shuts the queue down; queued work still runs first).

final class _RedisExecutor: Sendable {
    private let queue: _JobQueue
    private let threads: Int
    private let started = Mutex(false)

    init(threads: Int) {
        self.threads = threads
        queue = _JobQueue()
    }

    deinit { queue.shutdown() }

    /// Runs `body` on one of the executor's threads; the calling task waits
    /// without holding a thread.
    func run<R: Sendable>(_ body: @escaping @Sendable () throws(RedisNearCacheError) -> R) async throws(RedisNearCacheError) -> R {
        startIfNeeded()
        let result: Result<R, RedisNearCacheError> = await withCheckedContinuation { continuation in
            queue.push {
                do throws(RedisNearCacheError) { continuation.resume(returning: .success(try body())) } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        return try result.get()
    }

    private func startIfNeeded() {
        started.withLock { started in
            guard !started else { return }
            started = true
            let queue = self.queue
            for _ in 0..<threads {
                if let thread = _startThread({ queue.work() }) { pthread_detach(thread) }
            }
        }
    }
}

/// A FIFO of work for the executor's threads: a mutex-protected array and a
/// counting semaphore of queued items.
final class _JobQueue: @unchecked Sendable {
    typealias Job = @Sendable () -> Void
    private let jobs = Mutex<(items: [Job], head: Int, closed: Bool)>(([], 0, false))
    private let semaphore: UnsafeMutablePointer<sem_t>

    init() {
        semaphore = .allocate(capacity: 1)
        sem_init(semaphore, 0, 0)
    }

    // Freed with the queue: every worker holds the queue until it has left
    // `work()` (its closure captures it), so the last reference goes only when
    // no thread can be inside sem_wait. (It was never freed: LeakSanitizer
    // reported one sem_t per near cache under `make sanitize`.)
    deinit {
        sem_destroy(semaphore)
        semaphore.deallocate()
    }

    func push(_ job: @escaping Job) {
        jobs.withLock { state in
            state.items.append(job)
        }
        sem_post(semaphore)
    }

    /// No more work will come: each worker exits once the queue is empty.
    func shutdown() {
        let workers = jobs.withLock { state -> Int in
            state.closed = true
            return 64
        }
        for _ in 0..<workers { sem_post(semaphore) }
    }

    /// A worker thread's loop.
    func work() {
        while true {
            while sem_wait(semaphore) != 0 && errno == EINTR {}
            let job: Job? = jobs.withLock { state in
                guard state.head < state.items.count else { return nil }
                let job = state.items[state.head]
                state.head += 1
                if state.head > 64, state.head * 2 > state.items.count {
                    state.items.removeFirst(state.head)
                    state.head = 0
                }
                return job
            }
            if let job {
                job()
                continue
            }
            if jobs.withLock({ $0.closed }) { return }
        }
    }
}
#endif  // Redis
