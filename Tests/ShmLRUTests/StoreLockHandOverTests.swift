import Dispatch
import Glibc
@testable import ShmLRU
import Synchronization
import Testing

/// Issue 27, the async mutex in a busy server: a contended `mutex` / `withLock`
/// handed the lock by a release in its own process runs on the releasing thread
/// (_LockHandOffExecutor), instead of holding the lock while it waits for a
/// pool thread; and it keeps its place in line, taken in call order before its
/// task hops to that executor.
@Suite(.serialized) struct StoreLockHandOverTests {
    /// A task executor whose jobs run only when the test says (`runAll`): a task
    /// that prefers it stays "resumed but not run" until then.
    final class HeldExecutor: TaskExecutor, @unchecked Sendable {
        private let jobs = Mutex<[UnownedJob]>([])

        func enqueue(_ job: consuming ExecutorJob) {
            let job = UnownedJob(job)
            jobs.withLock { $0.append(job) }
        }

        /// Runs the jobs queued so far, and those they queue here, on this thread.
        @discardableResult func runAll() -> Int {
            var ran = 0
            while let job = jobs.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) {
                job.runSynchronously(on: asUnownedTaskExecutor())
                ran += 1
            }
            return ran
        }
    }

    /// A serial executor with one thread of its own: an actor on it runs only
    /// there, so no pool job can run on that thread between its steps.
    final class OwnThreadExecutor: SerialExecutor, @unchecked Sendable {
        private let jobs = Mutex<(queue: [UnownedJob], stop: Bool)>(([], false))
        private let ready = DispatchSemaphore(value: 0)
        private(set) var thread = pthread_t()

        init() {
            let box = Unmanaged.passRetained(self)
            var id = pthread_t()
            let made = pthread_create(&id, nil, { context in
                let executor = Unmanaged<OwnThreadExecutor>.fromOpaque(context!).takeRetainedValue()
                executor.loop()
                return nil
            }, box.toOpaque())
            precondition(made == 0)
            thread = id
        }

        private func loop() {
            while true {
                ready.wait()
                let (job, stop) = jobs.withLock { j -> (UnownedJob?, Bool) in
                    (j.queue.isEmpty ? nil : j.queue.removeFirst(), j.stop)
                }
                if let job { job.runSynchronously(on: asUnownedSerialExecutor()) } else if stop { return }
            }
        }

        func enqueue(_ job: consuming ExecutorJob) {
            let job = UnownedJob(job)
            jobs.withLock { $0.queue.append(job) }
            ready.signal()
        }

        /// Ends the thread once its queue is empty.
        func stop() {
            jobs.withLock { $0.stop = true }
            ready.signal()
            pthread_join(thread, nil)
        }
    }

    /// The holder: an actor on its own thread, so its `mutex` (isolated to it)
    /// releases there.
    actor Holder {
        let own = OwnThreadExecutor()
        nonisolated var unownedExecutor: UnownedSerialExecutor { own.asUnownedSerialExecutor() }

        /// Holds the lock by `mutex` (or `keyLock`'s `withLock`) while `queue`
        /// queues a waiter; true when the waiter's body ran before it returned,
        /// and the thread this ran on.
        func hold(
            _ store: ShmStore, _ keyLock: ShmStore.KeyLock?, _ ran: Flag, queue: @Sendable () async throws -> Void
        ) async throws -> (ran: Bool, thread: pthread_t) {
            if let keyLock {
                try await keyLock.withLock { _ in try await queue() }
            } else {
                try await store.mutex("k") { _ in try await queue() }
            }
            return (ran.isSet, pthread_self())
        }
    }

    final class Served: Sendable {
        private let order = Mutex<[Int]>([])
        func append(_ index: Int) { order.withLock { $0.append(index) } }
        var all: [Int] { order.withLock { $0 } }
    }

    /// Set once, with the thread that set it.
    final class Flag: Sendable {
        private let value = Atomic<Bool>(false)
        private let setter = Mutex<pthread_t?>(nil)
        func set() {
            setter.withLock { $0 = pthread_self() }
            value.store(true, ordering: .releasing)
        }
        var isSet: Bool { value.load(ordering: .acquiring) }
        /// The thread that set it.
        var thread: pthread_t? { setter.withLock { $0 } }
    }

    /// Waits (bounded: a failure guard, not a measurement) until `condition`.
    private func eventually(_ condition: () -> Bool) async throws -> Bool {
        for _ in 0..<50_000 {
            if condition() { return true }
            try await Task.sleep(for: .microseconds(200))
        }
        return condition()
    }

    /// Runs `held`'s jobs until `task` ends (its last steps are queued there).
    private func finish(_ task: Task<Void, any Error>?, on held: HeldExecutor) async throws {
        let done = Flag()
        let watcher = Task {
            _ = try await task?.value
            done.set()
        }
        let finished = try await eventually {
            held.runAll()
            return done.isSet
        }
        #expect(finished, "the waiter did not finish")
        try await watcher.value
    }

    /// The waiter's task prefers an executor that runs nothing until the test
    /// says: resumed onto it, or onto the pool, the waiter would hold the lock
    /// without running (the convoy). The holder runs on a thread of its own, so
    /// only a hand-over can run the waiter there: handed the lock by the
    /// holder's `mutex` release, the waiter's body runs on the holder's thread,
    /// before that `mutex` returns.
    @Test func aCallerHandedTheLockRunsOnTheReleasingThread() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64))
            try await handOverRound(store, keyLock: nil)
        }
    }

    /// A `KeyLock`'s `withLock` hands over the same way.
    @Test func aKeyLockCallerHandedTheLockRunsOnTheReleasingThread() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64))
            let lock = try store.keyLock("k")
            try await handOverRound(store, keyLock: lock)
        }
    }

    /// One holder (an actor on its own thread) and one waiter (on a held
    /// executor) of key "k"; the waiter must run on the holder's thread before
    /// the holder's call returns.
    private func handOverRound(_ store: ShmStore, keyLock: ShmStore.KeyLock?) async throws {
        let holder = Holder()
        defer { holder.own.stop() }
        let held = HeldExecutor()
        let ran = Flag()
        let waiterBox = Mutex<Task<Void, any Error>?>(nil)
        let (ranFirst, releasingThread) = try await holder.hold(store, keyLock, ran) {
            let waiter = Task(executorPreference: held) {
                if let keyLock {
                    try await keyLock.withLock { _ in ran.set() }
                } else {
                    try await store.mutex("k") { _ in ran.set() }
                }
            }
            waiterBox.withLock { $0 = waiter }
            held.runAll()  // the waiter's first steps: the lock is held, so it queues
            let queued = try await eventually { store._asyncLocks.parkedCallers == 1 }
            #expect(queued, "the waiter did not queue")
            #expect(!ran.isSet)
        }
        #expect(pthread_equal(releasingThread, holder.own.thread) != 0)
        #expect(ranFirst, "the lock was handed to a caller that did not run")
        #expect(ran.thread.map { pthread_equal($0, holder.own.thread) != 0 } == true, "the caller ran on another thread")
        try await finish(waiterBox.withLock { $0 }, on: held)
        #expect(try store.lockState("k").holder == nil)
    }

    /// Ten rounds of 100 async callers of one process queued while the lock is held (more
    /// than one release runs on its thread: the rest go to the pool): served in
    /// the order they called, although each hops to the hand-over executor
    /// before it waits.
    @Test func contendedCallersAreServedInCallOrder() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64))
            for _ in 0..<10 {  // ten rounds: an out-of-order hop is a race
                let served = Served()
                let count = 100
                var tasks: [Task<Void, any Error>] = []
                try await store.mutex("k") { _ in
                    for index in 0..<count {
                        tasks.append(Task.immediate {
                            try await store.withLock("k") { _ in served.append(index) }
                        })
                    }
                }
                for task in tasks { try await task.value }
                #expect(served.all == Array(0..<count))
                #expect(try store.lockState("k").holder == nil)
            }
        }
    }
}
