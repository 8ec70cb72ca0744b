// `ShmLRUBench snapshot [--mib N] [--quick]` (run by `make bench` after the
// memory section): warm restarts (issue 30).
//
//   snapshot   `store.snapshot(to:)` of a store of N MiB of records (1024 by default;
//              `--quick`: 64), full of ~900-byte values, while two other processes
//              serve from it (90 % gets, 10 % sets of random keys): the file's MB/s.
//   serving    the two processes' throughput during the snapshot against a window
//              of the same length just before it (each process stamps every 4,096
//              operations with CLOCK_MONOTONIC, the clock the snapshot is timed with).
//   restore    `restore(from:)` of that file into a new store of the same size: MB/s.
//
// The file goes to $BENCH_SNAPSHOT_DIR (default /tmp) and is removed after. Figures
// only: no target (the file system's speed sets most of them).
import CShm
import Glibc
import ShmLRU

func snapshotBenchMain(_ arguments: [String]) -> Int32 {
    var mib = arguments.contains("--quick") ? 64 : 1024
    if let at = arguments.firstIndex(of: "--mib") {
        guard at + 1 < arguments.count, let value = Int(arguments[at + 1]), value >= 1 else {
            writeAll(2, "usage: ShmLRUBench snapshot [--mib N] [--quick]\n")
            return 2
        }
        mib = value
    }
    do {
        try SnapshotBench(mib: mib).run()
        return 0
    } catch {
        writeAll(2, "ShmLRUBench snapshot: \(error)\n")
        return 1
    }
}

struct SnapshotBench {
    let mib: Int
    static let recordSize = 1024
    static let valueSize = 900

    static func key(_ i: Int) -> String { "snap:\(i)" }

    /// A value naming its key index and version in its first 16 bytes.
    static func value(_ i: Int, version: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: i &+ version), count: valueSize)
        bytes.withUnsafeMutableBytes {
            $0.storeBytes(of: UInt64(i), toByteOffset: 0, as: UInt64.self)
            $0.storeBytes(of: UInt64(version), toByteOffset: 8, as: UInt64.self)
        }
        return bytes
    }

    func progress(_ text: String) { writeAll(2, text + "\n") }

    func run() throws {
        let stride = 32 + Self.recordSize
        let capacity = max(1_000, mib << 20 / stride)
        let directory = String(cString: getenv("BENCH_SNAPSHOT_DIR") ?? strdup("/tmp"))
        let path = directory + "/shmlru-bench-\(getpid()).snap"
        defer { unlink(path) }
        let configuration = ShmStore.Configuration(capacity: capacity, recordSize: Self.recordSize)
        var store = try ShmStore.create(key: freeStoreKey(), configuration: configuration)
        defer { try? store.remove() }
        progress("snapshot: filling \(capacity) entries (\(mib) MiB of records)")
        for i in 0..<capacity { try store.set(Self.key(i), bytes: Self.value(i, version: 0)) }

        let workers = try (0..<2).map { n in
            try spawnWorker(["snapshot-worker", "\(store.key.rawValue)", "\(capacity)", "\(n + 1)"])
        }
        for worker in workers where worker.readLine() != "ready" { throw BenchFailure(description: "a serving process did not start") }
        usleep(200_000)  // both serving
        let windowStart = _monotonicNanoseconds()
        progress("snapshot: measuring the serving processes alone, then the snapshot")
        // The window without a snapshot: as long as the snapshot is expected to take (1 s per 200 MiB, at least 1 s).
        usleep(UInt32(min(30_000_000, max(1_000_000, mib * 5_000))))
        let start = _monotonicNanoseconds()
        let report = try store.snapshot(to: path)
        let end = _monotonicNanoseconds()
        try store.set("stop", bytes: [1])
        var during = 0.0, without = 0.0
        let snapshotNs = end - start
        let baselineStart = max(windowStart, start - snapshotNs)
        for worker in workers {
            var stamps: [(UInt64, Int)] = []
            while let line = worker.readLine(), line != "done" {
                let parts = line.split(separator: " ")
                if parts.count == 2, let t = UInt64(parts[0]), let ops = Int(parts[1]) { stamps.append((t, ops)) }
            }
            let status = worker.wait()
            guard status == 0 else { throw BenchFailure(description: "a serving process exited with status \(status)") }
            func rate(_ from: UInt64, _ to: UInt64) -> Double {
                let inside = stamps.filter { $0.0 > from && $0.0 <= to }
                guard let first = inside.first, let last = inside.last, last.0 > first.0 else { return 0 }
                return Double(last.1 - first.1) / (Double(last.0 - first.0) / 1e9)
            }
            during += rate(start, end)
            without += rate(baselineStart, start)
        }
        try store.remove("stop")
        let seconds = Double(snapshotNs) / 1e9
        let megabytes = Double(report.bytes) / 1e6

        try store.remove()
        try store.detach()
        store = try ShmStore.create(key: freeStoreKey(), configuration: configuration)
        progress("snapshot: restoring")
        let restore = try store.restore(from: path)
        let restoreSeconds = Double(restore.duration.components.seconds) + Double(restore.duration.components.attoseconds) / 1e18
        guard restore.restored == report.entries else {
            throw BenchFailure(description: "restored \(restore.restored) of \(report.entries) entries")
        }
        var wrong = 0
        var probe = SplitMix64(seed: 30)
        for _ in 0..<1_000 {
            let i = Int(probe.below(capacity))
            guard let bytes = try store.bytes(Self.key(i)) else { continue }
            if bytes.count != Self.valueSize || bytes.withUnsafeBytes({ $0.loadUnaligned(as: UInt64.self) }) != UInt64(i) { wrong += 1 }
        }
        guard wrong == 0 else { throw BenchFailure(description: "\(wrong) restored values are not their key's") }

        var out = "\nStore snapshot and restore (warm restarts): a store of \(mib) MiB of records (\(capacity) entries of "
        out += "\(Self.valueSize) B), 2 processes serving 90 % gets / 10 % sets during the snapshot.\n\n"
        out += pad("measure", 34) + pad("figure", 28) + "detail\n"
        out += pad("snapshot", 34) + pad("\(fmt(megabytes / seconds, 1)) MB/s", 28)
        out += "\(report.entries) entries, \(fmt(megabytes, 1)) MB in \(fmt(seconds, 2)) s, \(report.retried) copies retried, \(report.followed) entries followed to a new record\n"
        out += pad("serving, without a snapshot", 34) + pad("\(fmt(without / 1e6, 2)) Mops/s", 28) + "both processes, the window just before\n"
        out += pad("serving, during the snapshot", 34) + pad("\(fmt(during / 1e6, 2)) Mops/s", 28)
        out += without > 0 ? "\(fmt(100 * during / without, 1)) % of without\n" : "\n"
        out += pad("restore", 34) + pad("\(fmt(megabytes / restoreSeconds, 1)) MB/s", 28)
        out += "\(restore.restored) entries in \(fmt(restoreSeconds, 2)) s\n"
        print(out)
    }
}

/// `ShmLRUBench snapshot-worker STORE-KEY CAPACITY SEED`: serves random keys
/// (90 % gets, 10 % sets) until the store holds "stop"; prints "ready", and at
/// the end "TIME OPS" for every 4,096 operations, then "done".
func snapshotWorkerMain(_ arguments: [String]) -> Int32 {
    guard arguments.count == 4, let key = UInt32(arguments[1]), let capacity = Int(arguments[2]), let seed = UInt64(arguments[3]) else {
        writeAll(2, "usage: ShmLRUBench snapshot-worker STORE-KEY CAPACITY SEED\n")
        return 2
    }
    do {
        let store = try ShmStore.attach(key: ShmKey(key))
        var random = SplitMix64(seed: seed)
        var value = SnapshotBench.value(0, version: Int(seed))
        var buffer = [UInt8](repeating: 0, count: SnapshotBench.recordSize)
        var ops = 0
        var lines = ""
        writeAll(1, "ready\n")
        while true {
            for _ in 0..<4_096 {
                let i = Int(random.below(capacity))
                if random.below(10) == 0 {
                    value.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(i), toByteOffset: 0, as: UInt64.self) }  // names its key
                    try store.set(SnapshotBench.key(i), bytes: value)
                } else {
                    _ = try buffer.withUnsafeMutableBytes { try store.bytes(SnapshotBench.key(i), into: $0) }
                }
            }
            ops += 4_096
            lines += "\(_monotonicNanoseconds()) \(ops)\n"  // written at the end: a full pipe would stall the loop
            if try store.contains("stop") { break }
        }
        writeAll(1, lines + "done\n")
        try? store.detach()
        return 0
    } catch {
        writeAll(2, "snapshot-worker: \(error)\n")
        return 1
    }
}
