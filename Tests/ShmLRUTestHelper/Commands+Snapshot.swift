import Glibc
import ShmLRU
import ShmLRUTestSupport

/// Commands for the snapshot tests (StoreSnapshotTests).
let snapshotCommands: [String: HelperCommand] = [
    "store-zipf": storeZipf,
    "store-snapshot-loop": storeSnapshotLoop,
    "store-rewrite": storeRewrite,
    "store-snapshot-once": storeSnapshotOnce,
]

/// store-snapshot-once KEY FILE SPEC  → entries=N after one snapshot, taken with
/// SHMLRU_FAULT_INJECTION=SPEC (`-`: unset), e.g. `index.listing@1:stop`.
func storeSnapshotOnce(_ arguments: [String]) throws {
    let key = try keyArgument(arguments, 0)
    let file = try argument(arguments, 1, "FILE")
    let spec = try argument(arguments, 2, "SPEC")
    if spec != "-" { setenv("SHMLRU_FAULT_INJECTION", spec, 1) }
    let store = try ShmStore.attach(key: key)
    let report = try store.snapshot(to: file)
    emit("entries", report.entries)
}

/// store-rewrite KEY COUNT WRITER  → ready=1, then steps=…
///
/// Sets "k0" … "k<COUNT-1>" in turn, over and over, each to
/// `zipfValue(name, writer: WRITER, step:)`, until the store holds "stop".
func storeRewrite(_ arguments: [String]) throws {
    let store = try ShmStore.attach(key: try keyArgument(arguments, 0))
    let count: Int = try intArgument(arguments, 1, "COUNT")
    let writer: Int = try intArgument(arguments, 2, "WRITER")
    var step = 0
    emit("ready", 1)
    while true {
        if step % 256 == 0, try store.contains("stop") { break }
        let name = "k\(step % count)"
        try store.set(name, bytes: zipfValue(name, writer: writer, step: step))
        step += 1
    }
    emit("steps", step)
}

/// Set by SIGUSR1: `storeZipf` stops at its next look.
nonisolated(unsafe) private var zipfStopRequested: sig_atomic_t = 0

/// store-zipf KEY SEED KEYS WRITER MAX-OPS  → ready=1, then steps=… hits=… misses=…
///
/// A read-through Zipf workload (exponent 0.9 over KEYS keys): get, and on a
/// miss set `zipfValue(name, writer: WRITER, step:)`. Every value read must be
/// whole and its key's. Runs until SIGUSR1, or the store holds the key "stop"
/// (both looked at every 256 requests), or MAX-OPS requests. The signal is the
/// stop a test can count on: under churn "stop" can be evicted before a worker
/// looks.
func storeZipf(_ arguments: [String]) throws {
    let store = try ShmStore.attach(key: try keyArgument(arguments, 0))
    let seed: UInt64 = try intArgument(arguments, 1, "SEED", as: UInt64.self)
    let count: Int = try intArgument(arguments, 2, "KEYS")
    let writer: Int = try intArgument(arguments, 3, "WRITER")
    let maxOps: Int = try intArgument(arguments, 4, "MAX-OPS")
    let keys = ZipfKeys(count: count, exponent: 0.9)
    var random = SplitMix64(seed: seed)
    var hits = 0, misses = 0, step = 0
    signal(SIGUSR1) { _ in zipfStopRequested = 1 }
    var usr1 = sigset_t()  // a spawned process inherits its spawner's mask, where SIGUSR1 may be blocked
    sigemptyset(&usr1)
    sigaddset(&usr1, SIGUSR1)
    sigprocmask(SIG_UNBLOCK, &usr1, nil)
    emit("ready", 1)
    while step < maxOps {
        if step % 256 == 0, try zipfStopRequested != 0 || store.contains("stop") { break }
        let name = ZipfKeys.name(keys.next(&random))
        if let value = try store.bytes(name) {
            guard decodeZipfValue(value, name: name) != nil else { throw HelperFailure(message: "torn or foreign value for \(name)") }
            hits += 1
        } else {
            misses += 1
            try store.set(name, bytes: zipfValue(name, writer: writer, step: step))
        }
        step += 1
    }
    emit("steps", step)
    emit("hits", hits)
    emit("misses", misses)
}

/// store-snapshot-loop KEY FILE  → snapshot=N after each snapshot, forever (the test kills it).
func storeSnapshotLoop(_ arguments: [String]) throws {
    let store = try ShmStore.attach(key: try keyArgument(arguments, 0))
    let file = try argument(arguments, 1, "FILE")
    var n = 0
    emit("ready", 1)
    while true {
        try store.snapshot(to: file)
        n += 1
        emit("snapshot", n)
    }
}
