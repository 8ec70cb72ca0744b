// ShmLRUBench: `make bench` (the fixed workload of WORKLOAD.md, release build)
// and `make bench-quick` (`--quick`: fewer runs and operations). Spawns itself
// with `worker …` for the two-process cells.
//
// Environment: BENCH_JSON (default bench-results.json), BENCH_SVG (default
// bench-results.svg), BENCH_INTERVAL_MS (interval promotion, default 1000),
// BENCH_DEBUG (print each two-process run's per-worker start skew and ns/op).
// `ShmLRUBench profile …` runs one store for a profiler (see Profile.swift);
// `ShmLRUBench --handoff` only the key-lock section (LockHandoff.swift: uncontended
// lock + unlock against a CAS pair, the hand-offs); `ShmLRUBench lock-loop N [keylock|async|keylock-async|cas]`
// N uncontended lock + unlock pairs for callgrind; `ShmLRUBench --counter [N]` the
// HTTP counter's lock pattern without a server (LockCounter.swift).
import Glibc

let arguments = Array(CommandLine.arguments.dropFirst())
if arguments.first == "worker" {
    guard let job = WorkerJob(arguments: arguments) else {
        writeAll(2, "usage: ShmLRUBench worker STORE KEY CAPACITY WORKLOAD OPS SEED BASE STEP PHASE INTERVAL_NS\n")
        exit(2)
    }
    exit(workerMain(job))
}
if arguments.first == "replay" { exit(replayMain(arguments)) }  // Replay.swift
if arguments.first == "policies" { exit(policyBenchMain(arguments)) }  // PolicyBench.swift
if arguments.first == "memory" { exit(memoryBenchMain(arguments)) }  // MemoryBench.swift
if arguments.first == "snapshot" { exit(snapshotBenchMain(arguments)) }  // SnapshotBench.swift
if arguments.first == "snapshot-worker" { exit(snapshotWorkerMain(arguments)) }
if arguments.first == "store-worker" { exit(storeWorkerMain(arguments)) }
if arguments.first == "store-profile" {
    do { exit(try storeProfileMain(arguments)) } catch {
        writeAll(2, "ShmLRUBench store-profile: \(error)\n")
        exit(1)
    }
}
if arguments.first == "handoff" { exit(handoffMain(arguments)) }  // LockHandoff.swift
if arguments.first == "futex-wake" { exit(futexWakeMain(arguments)) }  // FutexWake.swift
if arguments.first == "lock-loop" { exit(lockLoopMain(arguments)) }  // LockHandoff.swift
if arguments.first == "counter-worker" { exit(lockCounterWorkerMain(arguments)) }  // LockCounter.swift
if arguments.first == "--counter" {  // the HTTP counter's lock pattern without a server
    do {
        try measureLockCounter(requests: arguments.count > 1 ? Int(arguments[1]) ?? 40_000 : 40_000)
        exit(0)
    } catch {
        writeAll(2, "ShmLRUBench --counter: \(error)\n")
        exit(1)
    }
}
if arguments == ["--handoff"] {  // the lock hand-off section alone
    do {
        try measureKeyLocks(quick: false)
        exit(0)
    } catch {
        writeAll(2, "ShmLRUBench --handoff: \(error)\n")
        exit(1)
    }
}
if arguments.first == "profile" {
    do { exit(try profileMain(arguments)) } catch {
        writeAll(2, "ShmLRUBench profile: \(error)\n")
        exit(1)
    }
}
let quick = arguments.contains("--quick")
if arguments.contains(where: { $0 != "--quick" && $0 != "--store-only" }) {
    writeAll(2, "usage: ShmLRUBench [--quick] [--store-only]\n")
    exit(2)
}
if arguments.contains("--store-only") {  // the store section alone (StoreBench.swift): no JSON, no chart
    do { print(try Bench(config: .fromEnvironment(quick: quick)).runStoreSection().table()) } catch {
        writeAll(2, "ShmLRUBench: \(error)\n")
        exit(1)
    }
    exit(0)
}
do {
    try Bench(config: .fromEnvironment(quick: quick)).run()
} catch {
    writeAll(2, "ShmLRUBench: \(error)\n")
    exit(1)
}
