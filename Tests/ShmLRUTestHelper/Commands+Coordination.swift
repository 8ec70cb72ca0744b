import Dispatch
import Glibc
import ShmLRU
import Synchronization

/// Commands for the coordination tests: get-or-load, atomic updates, async lock
/// queues, open-or-create.
let coordinationCommands: [String: HelperCommand] = [
    "store-load": storeLoad,
    "store-update": storeUpdate,
    "store-add": storeAdd,
    "store-async-queue": storeAsyncQueue,
    "store-open-hold": storeOpenHold,
]

/// State shared by a command's tasks.
private final class Shared: Sendable {
    let failure = Mutex<String?>(nil)
    let failures = Mutex<[String]>([])
    let order = Mutex<[Int]>([])
    let died = Atomic<Int>(0)
}

/// Runs `body` as a task and blocks the helper's main thread until it ends.
private func runAsync(timeout: Duration = .seconds(120), _ body: @escaping @Sendable () async throws -> Void) throws {
    let done = DispatchSemaphore(value: 0)
    let shared = Shared()
    Task {
        do { try await body() } catch { shared.failure.withLock { $0 = "\(error)" } }
        done.signal()
    }
    let (seconds, _) = timeout.components
    guard done.wait(timeout: .now() + .seconds(Int(seconds))) == .success else {
        throw HelperFailure(message: "did not finish in \(timeout)")
    }
    if let message = shared.failure.withLock({ $0 }) { throw HelperFailure(message: message) }
}

/// store-load KEY NAME DELAY-MS VALUE  → get(NAME, orLoad:) where the loader counts
/// its runs in the Int under "loads:NAME" (with `update`), sleeps DELAY-MS and
/// returns VALUE (an Int; "nil" returns nil, "throw" throws). Prints value=V or
/// value=nil, or error=… when it threw.
func storeLoad(_ arguments: [String]) throws {
    let store = try ShmStore.attach(key: try keyArgument(arguments, 0), lockTimeout: .seconds(60))
    let name = try argument(arguments, 1, "NAME")
    let delay: Int = try intArgument(arguments, 2, "DELAY-MS")
    let text = try argument(arguments, 3, "VALUE")
    struct LoadFailed: Error {}
    try runAsync {
        do {
            let value = try await store.get(name, as: Int.self) { () async throws -> Int? in
                try store.update("loads:" + name, as: Int.self) { ($0 ?? 0) + 1 }
                try await Task.sleep(for: .milliseconds(delay))
                if text == "throw" { throw LoadFailed() }
                return Int(text)
            }
            emit("value", value.map { "\($0)" } ?? "nil")
        } catch is LoadFailed {
            emit("error", "LoadFailed")
        } catch let error as ShmError where error.code == .loadFailed {
            emit("error", "loadFailed")
        }
    }
}

/// store-update KEY NAME COUNT  → COUNT updates of the Int under NAME, each adding
/// one (no per-key lock). Prints done=COUNT.
func storeUpdate(_ arguments: [String]) throws {
    let store = try ShmStore.attach(key: try keyArgument(arguments, 0), lockTimeout: .seconds(60))
    let name = try argument(arguments, 1, "NAME")
    let count: Int = try intArgument(arguments, 2, "COUNT")
    for _ in 0..<count {
        try store.update(name, as: Int.self) { current in
            sched_yield()  // a lost update would need another process in here
            return (current ?? 0) + 1
        }
    }
    emit("done", count)
}

/// store-add KEY NAME LABEL  → waits for "go:NAME" to be set, then add(NAME, LABEL).
/// Prints added=true|false.
func storeAdd(_ arguments: [String]) throws {
    let store = try ShmStore.attach(key: try keyArgument(arguments, 0), lockTimeout: .seconds(60))
    let name = try argument(arguments, 1, "NAME")
    let label = try argument(arguments, 2, "LABEL")
    emit("ready", 1)
    while try !store.contains("go:" + name) { sched_yield() }
    emit("added", try store.add(name, label))
}

/// store-async-queue KEY NAME COUNT  → starts COUNT tasks, in order, each taking
/// NAME's lock with the async `withLock` (every one queued before the next starts:
/// `Task.immediate`), prints queued=COUNT, and waits for all. Each records its
/// turn; prints served=N, inOrder=true|false, died=D (grants that said the
/// previous holder died).
func storeAsyncQueue(_ arguments: [String]) throws {
    let store = try ShmStore.attach(key: try keyArgument(arguments, 0), lockTimeout: .seconds(120))
    let name = try argument(arguments, 1, "NAME")
    let count: Int = try intArgument(arguments, 2, "COUNT")
    let shared = Shared()
    let done = DispatchSemaphore(value: 0)
    for index in 0..<count {
        Task.immediate {
            do {
                try await store.withLock(name, timeout: .seconds(120)) { token in
                    if token.previousHolderDied { shared.died.add(1, ordering: .relaxed) }
                    shared.order.withLock { $0.append(index) }
                }
            } catch {
                shared.failures.withLock { $0.append("\(index): \(error)") }
            }
            done.signal()
        }
    }
    emit("queued", count)
    for _ in 0..<count {
        guard done.wait(timeout: .now() + .seconds(180)) == .success else { throw HelperFailure(message: "waiters did not finish") }
    }
    if let first = shared.failures.withLock({ $0.first }) { throw HelperFailure(message: "a waiter failed: \(first)") }
    let seen = shared.order.withLock { $0 }
    emit("served", seen.count)
    emit("inOrder", seen == Array(0..<count))
    emit("died", shared.died.load(ordering: .relaxed))
}

/// store-open-hold KEY  → ShmStore.open(KEY) with capacity 8, record size 64;
/// prints opened=1 and value=V (the Int under "boot", then sets it to V + 1),
/// then blocks until killed.
func storeOpenHold(_ arguments: [String]) throws {
    let store = try ShmStore.open(key: try keyArgument(arguments, 0), configuration: .init(capacity: 8, recordSize: 64))
    let boot = try store.update("boot", as: Int.self) { ($0 ?? 0) + 1 } ?? 0
    emit("opened", 1)
    emit("value", boot)
    while true { pause() }
}
