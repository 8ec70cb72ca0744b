// The HTTP counter's lock pattern without a web server (issue 27): `ShmLRUBench
// --counter` runs W worker processes, each with T concurrent tasks; a task's
// "request" is REQUEST_NS of CPU work outside the lock (the server's own work
// per request) and then one increment of one shared counter: under the key's
// async `mutex`, a `KeyLock`'s `withLock`, the blocking `withBlockingLock`, or
// no lock. Prints requests/s per variant, the counter check (exact for the
// locking variants), the 4-worker mutex against no lock, the blocking lock and
// one worker, and the load (`uptime`). A stand-in for `make example-http`
// (whose Hummingbird build is heavy), not a replacement: no sockets, no HTTP.
// `ShmLRUBench counter-worker …` is a worker.
import Dispatch
import Glibc
import ShmLRU
import Synchronization

/// `--counter [REQUESTS]`: every variant once, then the ratios.
func measureLockCounter(requests: Int) throws {
    print("Key-lock counter (issue 27 stand-in for the HTTP counter), load before (uptime): \(loadAverage())")
    var rps: [String: Double] = [:]
    for (variant, workers) in [("none", 4), ("mutex", 4), ("keylock", 4), ("blocking", 4), ("mutex", 1)] {
        let (rate, counter) = try runLockCounter(variant: variant, workers: workers, tasks: 8, requests: requests)
        let check = variant == "none" ? "no lock: \(requests - counter) updates lost" : (counter == requests ? "counter exact" : "MISMATCH: \(counter)")
        print("  \(variant + String(repeating: " ", count: max(0, 9 - variant.count))) w=\(workers) \(fmt(rate, 0)) req/s  \(check)")
        rps["\(variant)/\(workers)"] = rate
    }
    let mutex = rps["mutex/4"] ?? 0
    for (text, other, limit) in [
        ("mutex vs no lock", rps["none/4"] ?? 0, 0.8), ("mutex vs blocking withLock", rps["blocking/4"] ?? 0, 1.0),
        ("mutex, 4 workers vs 1 worker", rps["mutex/1"] ?? 0, 1.0),
    ] {
        let ratio = other > 0 ? mutex / other : 0
        print("  [\(ratio >= limit ? "met" : "missed")] \(text): \(fmt(ratio, 2))× (target ≥ \(fmt(limit, 1))×)")
    }
    print("  load after (uptime): \(loadAverage())")
}

/// One run: returns requests/s and the counter's final value.
func runLockCounter(variant: String, workers: Int, tasks: Int, requests: Int) throws -> (Double, Int) {
    var key = ShmKey(UInt32.random(in: 0x6000_0000...0x6FFF_FFFF))
    while ShmRegion.exists(key: key) { key = ShmKey(UInt32.random(in: 0x6000_0000...0x6FFF_FFFF)) }
    let store = try ShmStore.create(key: key, configuration: .init(capacity: 64, recordSize: 64, lockTimeout: .seconds(30)))
    defer { try? store.remove() }
    var pids: [pid_t] = []
    for index in 0..<workers {
        let share = requests / workers + (index < requests % workers ? 1 : 0)
        let argv = [selfExecutable(), "counter-worker", key.description, variant, "\(tasks)", "\(share)"]
        var pid: pid_t = 0
        var cArguments = argv.map { strdup($0) } + [nil]
        let rc = posix_spawn(&pid, argv[0], nil, nil, &cArguments, environ)
        for pointer in cArguments { free(pointer) }
        guard rc == 0 else { throw BenchFailure(description: "posix_spawn: errno \(rc)") }
        pids.append(pid)
    }
    let deadline = _monotonicNanoseconds() + 30_000_000_000
    while try (store.get("ready", as: Int.self) ?? 0) < workers {
        guard _monotonicNanoseconds() < deadline else { throw BenchFailure(description: "counter workers did not start") }
        usleep(1_000)
    }
    let start = _monotonicNanoseconds()
    try store.set("go", 1)
    var failed = false
    for pid in pids {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        if status != 0 { failed = true }
    }
    let seconds = Double(_monotonicNanoseconds() - start) / 1e9
    guard !failed else { throw BenchFailure(description: "a counter worker failed (\(variant))") }
    return (Double(requests) / seconds, try store.get("n", as: Int.self) ?? 0)
}

/// `counter-worker STOREKEY VARIANT TASKS REQUESTS`.
func lockCounterWorkerMain(_ arguments: [String]) -> Int32 {
    guard arguments.count == 5, let key = ShmKey(parsing: arguments[1]), let tasks = Int(arguments[3]), let requests = Int(arguments[4])
    else { return 2 }
    let variant = arguments[2]
    do {
        let store = try ShmStore.attach(key: key, lockTimeout: .seconds(30))
        let handle = try store.keyLock("n")
        _ = try store.update("ready", as: Int.self) { ($0 ?? 0) + 1 }
        while try !store.contains("go") { usleep(200) }
        let tally = CounterTally(requests)
        let done = DispatchSemaphore(value: 0)
        for _ in 0..<tasks {
            Task {
                while tally.remaining.subtract(1, ordering: .relaxed).newValue >= 0 {
                    serverWork()
                    do { try await increment(store, handle, variant) } catch { tally.failures.add(1, ordering: .relaxed) }
                }
                done.signal()
            }
        }
        for _ in 0..<tasks { done.wait() }
        return tally.failures.load(ordering: .relaxed) == 0 ? 0 : 1
    } catch {
        writeAll(2, "counter-worker: \(error)\n")
        return 1
    }
}

/// The request's own CPU work outside the lock (about 20 µs here).
@inline(never) private func serverWork() {
    var x: UInt64 = 0x9E37_79B9_7F4A_7C15
    for _ in 0..<20_000 { x = x &* 6364136223846793005 &+ 1442695040888963407 }
    if x == 42 { print("") }
}

private func increment(_ store: ShmStore, _ handle: ShmStore.KeyLock, _ variant: String) async throws {
    switch variant {
    case "mutex":
        try await store.mutex("n") { _ in try store.set("n", (try store.get("n", as: Int.self) ?? 0) + 1) }
    case "keylock":
        try await handle.withLock { _ in try store.set("n", (try store.get("n", as: Int.self) ?? 0) + 1) }
    case "blocking":
        try blockingIncrement(store)
    default:
        try store.set("n", (try store.get("n", as: Int.self) ?? 0) + 1)
    }
}

/// The blocking lock from async code through a synchronous helper, as the HTTP
/// counter's `withLock` variant does (the body never suspends).
private func blockingIncrement(_ store: ShmStore) throws {
    try store.withBlockingLock("n") { _ in try store.set("n", (try store.get("n", as: Int.self) ?? 0) + 1) }
}

/// What a counter worker's tasks share.
private final class CounterTally: Sendable {
    let remaining: Atomic<Int>
    let failures = Atomic<Int>(0)
    init(_ requests: Int) { remaining = Atomic(requests) }
}
