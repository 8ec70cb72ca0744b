import Dispatch
import Glibc
import ShmLRU
import Synchronization

/// Commands for the keyed store, per-key locks, listen and TTL tests.
let storeCommands: [String: HelperCommand] = [
    "store-set": storeSet,
    "store-get": storeGet,
    "store-remove": storeRemove,
    "store-increment": storeIncrement,
    "store-hold-lock": storeHoldLock,
    "store-lock-append": storeLockAppend,
    "store-blocking-count": storeBlockingCount,
    "store-sequence": storeSequence,
    "store-listen": storeListen,
    "store-figures": storeFigures,
]

/// A value of a test TYPE: int, bool, string or bytes (hex).
private func storeValue(_ type: String, _ text: String) throws -> Any {
    switch type {
    case "int":
        guard let value = Int(text) else { throw HelperFailure(message: "bad int \(text)") }
        return value
    case "bool":
        guard let value = Bool(text) else { throw HelperFailure(message: "bad bool \(text)") }
        return value
    case "string": return text
    default: throw HelperFailure(message: "bad TYPE \(type)")
    }
}

/// store-set KEY NAME TYPE VALUE [TTL-MS]  → set=1
func storeSet(_ arguments: [String]) throws {
    let store = try ShmStore.attach(key: try keyArgument(arguments, 0))
    let name = try argument(arguments, 1, "NAME")
    let type = try argument(arguments, 2, "TYPE")
    let text = try argument(arguments, 3, "VALUE")
    let expiry: ShmStore.Expiry = arguments.count > 4 ? .after(.milliseconds(try intArgument(arguments, 4, "TTL-MS"))) : .storeDefault
    switch try storeValue(type, text) {
    case let value as Int: try store.set(name, value, expiry: expiry)
    case let value as Bool: try store.set(name, value, expiry: expiry)
    case let value as String: try store.set(name, value, expiry: expiry)
    default: throw HelperFailure(message: "unreachable")
    }
    emit("set", 1)
}

/// store-get KEY NAME TYPE  → value=… or miss=1
func storeGet(_ arguments: [String]) throws {
    let store = try ShmStore.attach(key: try keyArgument(arguments, 0))
    let name = try argument(arguments, 1, "NAME")
    let printed: String?
    switch try argument(arguments, 2, "TYPE") {
    case "int": printed = try store.get(name, as: Int.self).map { "\($0)" }
    case "bool": printed = try store.get(name, as: Bool.self).map { "\($0)" }
    case "string": printed = try store.get(name, as: String.self).map { "[\($0)]" }  // brackets show ""
    case let other: throw HelperFailure(message: "bad TYPE \(other)")
    }
    if let printed { emit("value", printed) } else { emit("miss", 1) }
}

/// store-remove KEY NAME  → removed=true|false
func storeRemove(_ arguments: [String]) throws {
    let store = try ShmStore.attach(key: try keyArgument(arguments, 0))
    emit("removed", try store.remove(try argument(arguments, 1, "NAME")))
}

/// store-increment KEY NAME COUNT  → COUNT read-modify-writes of the Int under NAME,
/// each under NAME's lock, with a yield between the read and the write (so that
/// without the lock, updates would be lost). Prints done=COUNT.
func storeIncrement(_ arguments: [String]) throws {
    let store = try ShmStore.attach(key: try keyArgument(arguments, 0))
    let name = try argument(arguments, 1, "NAME")
    let count: Int = try intArgument(arguments, 2, "COUNT")
    for _ in 0..<count {
        try store.withBlockingLock(name, timeout: .seconds(60)) { _ in
            let value = try store.get(name, as: Int.self) ?? 0
            sched_yield()
            try store.set(name, value + 1)
        }
    }
    emit("done", count)
}

/// store-hold-lock KEY NAME  → takes NAME's lock, prints locked=1, then blocks until killed.
func storeHoldLock(_ arguments: [String]) throws {
    let store = try ShmStore.attach(key: try keyArgument(arguments, 0))
    let token = try store.blockingLock(try argument(arguments, 1, "NAME"), timeout: .seconds(60))
    emit("token", token.id)
    emit("locked", 1)
    while true { pause() }
}

/// store-lock-append KEY NAME LIST LABEL  → under NAME's lock, appends LABEL to the
/// [String] under LIST. Prints appended=LABEL and died=true|false.
func storeLockAppend(_ arguments: [String]) throws {
    let store = try ShmStore.attach(key: try keyArgument(arguments, 0))
    let name = try argument(arguments, 1, "NAME")
    let list = try argument(arguments, 2, "LIST")
    let label = try argument(arguments, 3, "LABEL")
    try store.withBlockingLock(name, timeout: .seconds(60)) { token in
        var labels = try store.get(list, as: [String].self) ?? []
        labels.append(label)
        try store.set(list, labels)
        emit("died", token.previousHolderDied)
    }
    emit("appended", label)
}

/// store-blocking-count KEY NAME THREADS N  → THREADS threads each add one to
/// the Int NAME N times, each under `withBlockingLock(NAME)` (read, then set:
/// a second holder loses an update); prints errors=E (every lock, unlock or
/// store error) and done=THREADS*N.
func storeBlockingCount(_ arguments: [String]) throws {
    let store = try ShmStore.attach(key: try keyArgument(arguments, 0))
    let name = try argument(arguments, 1, "NAME")
    let threads: Int = try intArgument(arguments, 2, "THREADS")
    let count: Int = try intArgument(arguments, 3, "N")
    let errors = Mutex<(total: Int, first: String?)>((0, nil))
    DispatchQueue.concurrentPerform(iterations: threads) { _ in
        for _ in 0..<count {
            do {
                try store.withBlockingLock(name, timeout: .seconds(60)) { _ in
                    try store.set(name, (try store.get(name, as: Int.self) ?? 0) + 1)
                }
            } catch {
                errors.withLock { $0 = ($0.total + 1, $0.first ?? "\(error)") }
            }
        }
    }
    let (total, first) = errors.withLock { $0 }
    if let first { emit("first", first) }
    emit("errors", total)
    emit("done", threads * count)
}

/// store-sequence KEY NAME N  → sets NAME to 1, 1, 2, …, N (the first value twice:
/// an unchanged set is a change too), then removes it.
func storeSequence(_ arguments: [String]) throws {
    let store = try ShmStore.attach(key: try keyArgument(arguments, 0))
    let name = try argument(arguments, 1, "NAME")
    let count: Int = try intArgument(arguments, 2, "N")
    try store.set(name, 1)
    for value in 1...count { try store.set(name, value) }
    try store.remove(name)
    emit("done", count + 2)
}

/// A result box for the listener task (the helper's main thread waits for it).
private final class ListenResult: @unchecked Sendable {
    var lines: [String] = []
}

/// store-listen KEY NAME COUNT  → listens to NAME, prints ready=1, then one
/// change=KIND:VALUE line per change (VALUE an Int or -), and exits after COUNT.
func storeListen(_ arguments: [String]) throws {
    let store = try ShmStore.attach(key: try keyArgument(arguments, 0))
    let name = try argument(arguments, 1, "NAME")
    let count: Int = try intArgument(arguments, 2, "COUNT")
    let changes = store.listen(name)
    emit("ready", 1)
    let done = DispatchSemaphore(value: 0)
    let result = ListenResult()
    Task {
        var seen = 0
        for await change in changes {
            let value = (try? change.value(as: Int.self)).flatMap { $0 }.map { "\($0)" } ?? "-"
            result.lines.append("\(change.kind):\(value)")
            emit("change", "\(change.kind):\(value)")
            seen += 1
            if seen == count { break }
        }
        done.signal()
    }
    guard done.wait(timeout: .now() + .seconds(60)) == .success else {
        throw HelperFailure(message: "only \(result.lines.count) of \(count) changes arrived in 60 s")
    }
}

/// store-figures KEY N  → creates a store under KEY, times N of each operation in
/// this process and prints ns per operation (figures for the README, not a test).
func storeFigures(_ arguments: [String]) throws {
    let key = try keyArgument(arguments, 0)
    let count: Int = try intArgument(arguments, 1, "N")
    let store = try ShmStore.create(key: key, configuration: .init(capacity: 10_000, recordSize: 256))
    defer { try? store.remove() }
    let names = (0..<1000).map { "user:\($0)" }
    func time(_ label: String, _ body: (Int) throws -> Void) rethrows {
        let start = ContinuousClock.now
        for index in 0..<count { try body(index) }
        let elapsed = ContinuousClock.now - start
        let (seconds, attoseconds) = elapsed.components
        let nanoseconds = Double(seconds) * 1e9 + Double(attoseconds) / 1e9
        emit(label, Int(nanoseconds / Double(count)))
    }
    try time("set_codable_ns") { try store.set(names[$0 % 1000], $0) }
    try time("get_codable_ns") { _ = try store.get(names[$0 % 1000], as: Int.self) }
    let bytes = [UInt8](repeating: 7, count: 100)
    try time("set_bytes_ns") { try store.set(names[$0 % 1000], bytes: bytes) }
    try time("get_bytes_ns") { _ = try store.bytes(names[$0 % 1000]) }
    try time("lock_unlock_ns") { try store.unlock(names[$0 % 1000], try store.blockingLock(names[$0 % 1000])) }
    // Listener wake-up: set here, received by this process's pump thread.
    let changes = store.listen("watched")
    let done = DispatchSemaphore(value: 0)
    let received = ReceivedCounter()
    Task {
        for await _ in changes {
            received.count += 1
            done.signal()
            if received.count == count { break }
        }
    }
    try time("set_to_listener_ns") { index in
        try store.set("watched", index)
        done.wait()
    }
}

private final class ReceivedCounter: @unchecked Sendable { var count = 0 }
