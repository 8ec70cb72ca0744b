import Dispatch
import Glibc
import ShmLRU
import Synchronization

/// Commands for the store key locks' kill points and their stress test (issue 27).
let keyLockCommands: [String: HelperCommand] = [
    "keylock-fault": keyLockFault,
    "keylock-soak": keyLockSoak,
    "keylock-rebinding-count": keyLockRebindingCount,
]

/// keylock-rebinding-count KEY NAMES THREADS N  → THREADS threads each add one,
/// N times, to the Int of each name of NAMES (comma-separated) in turn, each
/// under `withBlockingLock` by key. With more names than the store has lock
/// slots, slots are unbound and bound again all the time under the lock-free
/// paths' one-entry hint. A lock refused `.full` (every slot held or waited
/// for) is tried again; prints errors=E (any other error) and done=THREADS*N.
func keyLockRebindingCount(_ arguments: [String]) throws {
    let store = try ShmStore.attach(key: try keyArgument(arguments, 0), lockTimeout: .seconds(60))
    let names = try argument(arguments, 1, "NAMES").split(separator: ",").map(String.init)
    let threads: Int = try intArgument(arguments, 2, "THREADS")
    let count: Int = try intArgument(arguments, 3, "N")
    guard !names.isEmpty else { throw HelperFailure(message: "no NAMES") }
    let errors = Mutex<(total: Int, first: String?)>((0, nil))
    DispatchQueue.concurrentPerform(iterations: threads) { thread in
        for step in 0..<count {
            let name = names[(step &+ thread) % names.count]
            while true {
                do {
                    try store.withBlockingLock(name) { _ in
                        try store.set(name, (try store.get(name, as: Int.self) ?? 0) + 1)
                    }
                    break
                } catch let error as ShmError where error.code == .full {
                    usleep(100)
                } catch {
                    errors.withLock { $0 = ($0.total + 1, $0.first ?? "\(error)") }
                    break
                }
            }
        }
    }
    let (total, first) = errors.withLock { $0 }
    if let first { emit("first", first) }
    emit("errors", total)
    emit("done", threads * count)
}

/// keylock-fault KEY SPEC MODE NAME  → arms SPEC (`point@n`, "-": none), then:
/// - `lock`: blockingLock(NAME), prints locked=1, blocks until killed;
/// - `wait`: prints ready=1, blockingLock(NAME) (the test holds it), prints locked=1, exits;
/// - `release`: blockingLock(NAME), prints locked=1, waits until the store holds
///   "go", unlocks (a waiter queued meanwhile: the hand-off), prints released=1.
func keyLockFault(_ arguments: [String]) throws {
    let key = try keyArgument(arguments, 0)
    let spec = try argument(arguments, 1, "SPEC")
    if spec != "-" { setenv("SHMLRU_FAULT_INJECTION", spec, 1) }
    let mode = try argument(arguments, 2, "MODE")
    let name = try argument(arguments, 3, "NAME")
    let store = try ShmStore.attach(key: key, lockTimeout: .seconds(30))
    switch mode {
    case "lock":
        _ = try store.blockingLock(name)
        emit("locked", 1)
        while true { pause() }
    case "wait":
        emit("ready", 1)
        let token = try store.blockingLock(name)
        emit("locked", 1)
        try store.unlock(name, token)
    case "release":
        let token = try store.blockingLock(name)
        emit("locked", 1)
        while try !store.contains("go") { usleep(1_000) }
        try store.unlock(name, token)
        emit("released", 1)
    default:
        throw HelperFailure(message: "unknown mode \(mode)")
    }
}

/// What a soak worker's tasks share.
private final class SoakState: Sendable {
    let order = Mutex<[Int]>([])
    let failures = Mutex<[String]>([])
    let died = Atomic<Int>(0)
}

/// keylock-soak KEY ROLE WAITERS SECONDS SPEC  → rounds of WAITERS async lock
/// calls on "counter", queued in order (`Task.immediate`), each adding one to the
/// tally [total, s0, s1, victims] under the lock (one `set`: all or nothing)
/// with ROLE's column ("s0", "s1" or "v"); every call has a 30 s timeout.
/// Prints ready=1, then stops after SECONDS (0: runs until killed) and prints
/// rounds=R done=D inOrder=true|false failures=F died=N (grants that said the
/// holder died) and firstFailure=… if any. SPEC arms kill points ("-": none).
func keyLockSoak(_ arguments: [String]) throws {
    let key = try keyArgument(arguments, 0)
    let role = try argument(arguments, 1, "ROLE")
    let waiters: Int = try intArgument(arguments, 2, "WAITERS")
    let seconds: Int = try intArgument(arguments, 3, "SECONDS")
    let spec = try argument(arguments, 4, "SPEC")
    if spec != "-" { setenv("SHMLRU_FAULT_INJECTION", spec, 1) }
    guard let column = ["s0": 1, "s1": 2, "v": 3][role] else { throw HelperFailure(message: "unknown role \(role)") }
    let store = try ShmStore.attach(key: key, lockTimeout: .seconds(30))
    emit("ready", 1)
    var end = UInt64.max
    if seconds > 0 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        end = UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec) + UInt64(seconds) * 1_000_000_000
    }
    func monotonic() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }
    var rounds = 0
    var done = 0
    var inOrder = true
    var failures = 0
    var firstFailure: String? = nil
    var died = 0
    while monotonic() < end {
        let state = SoakState()
        let finished = DispatchSemaphore(value: 0)
        for index in 0..<waiters {
            Task.immediate {
                do {
                    try await store.mutex("counter", timeout: .seconds(30)) { token in
                        if token.previousHolderDied { state.died.add(1, ordering: .relaxed) }
                        var tally = try store.get("tally", as: [Int].self) ?? [0, 0, 0, 0]
                        guard tally.count == 4 else { throw HelperFailure(message: "tally \(tally)") }
                        tally[0] += 1
                        tally[column] += 1
                        try store.set("tally", tally)
                        state.order.withLock { $0.append(index) }
                    }
                } catch {
                    state.failures.withLock { $0.append("\(index): \(error)") }
                }
                finished.signal()
            }
        }
        for _ in 0..<waiters {
            guard finished.wait(timeout: .now() + .seconds(90)) == .success else {
                throw HelperFailure(message: "round \(rounds): waiters did not finish in 90 s")
            }
        }
        let served = state.order.withLock { $0 }
        let failed = state.failures.withLock { $0 }
        if served != Array(0..<waiters) { inOrder = false }
        done += served.count
        failures += failed.count
        if firstFailure == nil { firstFailure = failed.first }
        died += state.died.load(ordering: .relaxed)
        rounds += 1
    }
    emit("rounds", rounds)
    emit("done", done)
    emit("inOrder", inOrder)
    emit("failures", failures)
    emit("died", died)
    if let firstFailure { emit("firstFailure", firstFailure) }
}
