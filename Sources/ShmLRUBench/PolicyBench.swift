// `ShmLRUBench policies [--quick]` (run by `make bench` after the main table):
// the eviction policies' miss ratios on synthetic traces, next to libCacheSim's
// LRU and S3-FIFO on the same traces when its Python package is installed
// (`make bench-venv`; BENCH_PYTHON names the interpreter), and each policy's
// get-hit throughput with one and two processes. Prints the targets met/missed.
import CShm
import Glibc
import ShmLRU

/// A synthetic trace: Zipf over `objects` objects, optionally with one-time scans.
struct TraceSpec: Sendable {
    var name: String
    var alpha: Double
    /// Every `scanEvery` requests, `scanLength` keys that occur nowhere else (0: none).
    var scanEvery = 0
    var scanLength = 0
    var seed: UInt64

    static let objects = 200_000
    static let requests = 3_000_000

    static let all: [TraceSpec] = [
        TraceSpec(name: "zipf-0.8", alpha: 0.8, seed: 0x5EED_0080),
        TraceSpec(name: "zipf-0.99", alpha: 0.99, seed: 0x5EED_0099),
        TraceSpec(name: "zipf-1.2", alpha: 1.2, seed: 0x5EED_0120),
        TraceSpec(name: "zipf-0.9+scans", alpha: 0.9, scanEvery: 50_000, scanLength: 10_000, seed: 0x5EED_0090),
    ]

    /// The keys: object ranks drawn by inverting the exact Zipf CDF (any alpha),
    /// mapped to keys through a bijective mix so that popularity is not key order;
    /// scans use keys above every object's.
    func generate() -> [UInt32] {
        let n = TraceSpec.objects
        var cdf = [Double](repeating: 0, count: n)
        var total = 0.0
        for i in 0..<n {
            total += 1.0 / pow(Double(i + 1), alpha)
            cdf[i] = total
        }
        var rng = SplitMix64(seed: seed)
        var keys: [UInt32] = []
        keys.reserveCapacity(TraceSpec.requests)
        var scanned: UInt32 = 0
        while keys.count < TraceSpec.requests {
            if scanEvery > 0, keys.count > 0, keys.count % scanEvery == 0 {
                for _ in 0..<min(scanLength, TraceSpec.requests - keys.count) {
                    keys.append(fmix32(UInt32(n) &+ scanned))
                    scanned &+= 1
                }
                if keys.count >= TraceSpec.requests { break }
            }
            let u = rng.unit() * total
            var low = 0
            var high = n - 1
            while low < high {
                let mid = (low + high) / 2
                if cdf[mid] < u { low = mid + 1 } else { high = mid }
            }
            keys.append(fmix32(UInt32(low)))
        }
        return keys
    }
}

/// One (trace, cache size) row of the miss-ratio table.
struct MissRow: Sendable {
    var trace: String
    var capacity: Int
    var percent: Int
    var ours: [ReplayPolicy: Double] = [:]
    var libLRU: Double?
    var libS3FIFO: Double?
}

final class PolicyBench {
    let quick: Bool
    let runs: Int
    let ops: Int
    let intervalNanoseconds: Int64 = 1_000_000_000
    let directory: String

    init(quick: Bool) {
        self.quick = quick
        runs = quick ? 3 : 5
        ops = quick ? 150_000 : 1_000_000
        let env = getenv("BENCH_TRACE_DIR").map { String(cString: $0) }
        directory = env ?? "/tmp/shmlru-traces-\(getpid())"
    }

    func progress(_ text: String) { writeAll(2, text + "\n") }

    func run() throws {
        mkdir(directory, 0o755)
        let rows = try missRatios()
        let throughputs = try hitThroughput()
        print(report(rows, throughputs))
        if getenv("BENCH_TRACE_DIR") == nil {
            for spec in TraceSpec.all { unlink("\(directory)/\(spec.name).u32") }
            rmdir(directory)
        }
    }

    // MARK: Miss ratios

    func missRatios() throws -> [MissRow] {
        var rows: [MissRow] = []
        var files: [(String, String)] = []
        for spec in TraceSpec.all {
            progress("policies: generating \(spec.name) (\(TraceSpec.requests) requests over \(TraceSpec.objects) objects)")
            let keys = spec.generate()
            let path = "\(directory)/\(spec.name).u32"
            try writeTrace(keys, to: path)
            files.append((spec.name, path))
            for percent in [1, 10] {
                let capacity = TraceSpec.objects * percent / 100
                var row = MissRow(trace: spec.name, capacity: capacity, percent: percent)
                for policy in ReplayPolicy.allCases {
                    let misses = try keys.withUnsafeBufferPointer { try replayMisses($0, capacity: capacity, policy: policy) }
                    row.ours[policy] = Double(misses) / Double(keys.count)
                }
                progress(
                    "  \(spec.name) \(percent) %: "
                        + ReplayPolicy.allCases.map { "\($0.rawValue) \(formatRatio(row.ours[$0]!))" }.joined(separator: ", "))
                rows.append(row)
            }
        }
        let reference = libCacheSim(files)
        for index in rows.indices {
            let key = "\(rows[index].trace) \(rows[index].capacity)"
            rows[index].libLRU = reference[key]?.lru
            rows[index].libS3FIFO = reference[key]?.s3fifo
        }
        return rows
    }

    /// libCacheSim's LRU and S3-FIFO miss ratios, keyed "trace capacity", from
    /// Sources/ShmLRUBench/Python/libcachesim-replay.py run by BENCH_PYTHON (default
    /// .bench-venv/bin/python); empty when that interpreter is absent.
    func libCacheSim(_ files: [(String, String)]) -> [String: (lru: Double, s3fifo: Double)] {
        let python = getenv("BENCH_PYTHON").map { String(cString: $0) } ?? ".bench-venv/bin/python"
        let script = getenv("BENCH_LIBCACHESIM_SCRIPT").map { String(cString: $0) } ?? "Sources/ShmLRUBench/Python/libcachesim-replay.py"
        guard access(python, X_OK) == 0, access(script, R_OK) == 0 else {
            progress("policies: no libCacheSim (\(python) absent: run `make bench-venv`); its columns stay empty")
            return [:]
        }
        var command = "'\(python)' '\(script)'"
        for (name, path) in files {
            for percent in [1, 10] { command += " '\(name)=\(path)=\(TraceSpec.objects * percent / 100)'" }
        }
        progress("policies: libCacheSim LRU and S3-FIFO on the same traces")
        guard let pipe = popen(command, "r") else { return [:] }
        var result: [String: (lru: Double, s3fifo: Double)] = [:]
        var line = [CChar](repeating: 0, count: 4096)
        while fgets(&line, Int32(line.count), pipe) != nil {
            // "NAME CAPACITY LRU S3FIFO"
            let fields = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).split(separator: " ").map { $0.trimmingCharacters() }
            guard fields.count == 4, let lru = Double(fields[2]), let s3 = Double(fields[3]) else { continue }
            result["\(fields[0]) \(fields[1])"] = (lru, s3)
        }
        let status = pclose(pipe)
        if status != 0 { progress("policies: libCacheSim script exited with status \(status)") }
        return result
    }

    // MARK: Hit throughput

    struct Throughput: Sendable {
        var policy: ReplayPolicy
        var capacity: Int
        var oneProcessNs: Double
        var twoProcessOps: Double
        var errors: Int
    }

    func hitThroughput() throws -> [Throughput] {
        var results: [Throughput] = []
        let value = ValueBuffer()
        defer { value.free() }
        for capacity in quick ? [10_000] : [10_000, 1_000_000] {
            var caches: [ReplayPolicy: ShmLRU] = [:]
            defer {
                for cache in caches.values {
                    try? cache.region.remove()
                    _ = try? cache.detach()
                }
            }
            progress("policies: preloading \(capacity) records per policy")
            for policy in ReplayPolicy.allCases {
                let cache = try ShmLRU.create(recordSize: Spec.recordSize, capacity: capacity, options: policy.options)
                _ = try LRUStore.preload(cache, capacity: capacity, value: value)
                caches[policy] = cache
            }
            var one: [ReplayPolicy: [Double]] = [:]
            var two: [ReplayPolicy: [Double]] = [:]
            var errors: [ReplayPolicy: Int] = [:]
            var version: UInt64 = 1 << 41
            for run in 0..<runs {
                let stream = KeyStream.make(
                    .getHit, capacity: capacity, ops: ops,
                    seed: streamSeed(workload: .getHit, capacity: capacity, run: run, process: 0) ^ 0x9011, zipf: nil)
                for policy in ReplayPolicy.allCases {  // interleaved: every policy sees the same machine state
                    var store = LRUStore(cache: caches[policy]!)
                    let result = runLoop(&store, .getHit, stream, value: value, version: &version)
                    one[policy, default: []].append(Double(result.nanoseconds) / Double(result.ops))
                    errors[policy, default: 0] += result.errors
                    // Workers attach with the policy of the segment (Options.policy nil).
                    let kind: StoreKind = policy == .lru ? .lruExact : .lruInterval
                    let jobs = (0..<2).map { p in
                        WorkerJob(
                            store: kind, key: caches[policy]!.key, capacity: capacity, workload: .getHit, ops: ops,
                            seed: streamSeed(workload: .getHit, capacity: capacity, run: run, process: p + 1) ^ 0x9011,
                            insertBase: 0, insertStep: 2, insertPhase: UInt64(p), intervalNanoseconds: intervalNanoseconds)
                    }
                    let together = try runTogether(jobs)
                    two[policy, default: []].append(throughput(together))
                    errors[policy, default: 0] += together.reduce(0) { $0 + $1.errors }
                }
            }
            for policy in ReplayPolicy.allCases {
                let row = Throughput(
                    policy: policy, capacity: capacity, oneProcessNs: median(one[policy]!), twoProcessOps: median(two[policy]!),
                    errors: errors[policy] ?? 0)
                progress("  \(capacity) \(policy.rawValue): \(fmt(row.oneProcessNs, 1)) ns/get, ×2 \(fmtRate(row.twoProcessOps))")
                results.append(row)
            }
        }
        return results
    }

    func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }

    // MARK: Report

    func report(_ rows: [MissRow], _ throughputs: [Throughput]) -> String {
        func cell(_ value: Double?) -> String { value.map { formatRatio($0) } ?? "n/a" }
        var out = "\n## Eviction policies: miss ratio (\(TraceSpec.requests / 1_000_000)M requests over \(TraceSpec.objects / 1000)K objects; get, and set on a miss)\n\n"
        out += "| trace | cache | lru | clock | sieve | s3fifo | libCacheSim LRU | libCacheSim S3-FIFO | best ≤ 1.02× lib S3-FIFO | best ≤ 0.9× LRU (LRU ≥ 0.2) |\n"
        out += "|---|---|---|---|---|---|---|---|---|---|\n"
        for row in rows {
            let best = min(row.ours[.sieve]!, row.ours[.s3fifo]!)
            let bestName = row.ours[.sieve]! < row.ours[.s3fifo]! ? "sieve" : "s3fifo"
            let lru = row.ours[.lru]!
            let vsLib = row.libS3FIFO.map { lib in (best <= 1.02 * lib ? "met" : "MISSED") + " (\(fmt(best / lib, 3))×)" } ?? "n/a"
            let vsLRU = lru >= 0.2 ? (best <= 0.9 * lru ? "met" : "MISSED") + " (\(fmt(best / lru, 3))×)" : "—"
            out += "| \(row.trace) | \(row.percent) % (\(row.capacity)) | \(cell(lru)) | \(cell(row.ours[.clock])) | \(cell(row.ours[.sieve])) "
            out += "| \(cell(row.ours[.s3fifo])) | \(cell(row.libLRU)) | \(cell(row.libS3FIFO)) | \(vsLib) \(bestName) | \(vsLRU) |\n"
        }
        out += "\n## Eviction policies: get-hit throughput (250-byte records, 200-byte values, uniform keys)\n\n"
        out += "| capacity | policy | 1 process ns/get | vs clock | ≤ 1.1× clock | 2 processes ops/s | vs clock | ≥ 0.9× clock | errors |\n"
        out += "|---|---|---|---|---|---|---|---|---|\n"
        for row in throughputs {
            guard let clock = throughputs.first(where: { $0.capacity == row.capacity && $0.policy == .clock }) else { continue }
            let oneRatio = row.oneProcessNs / clock.oneProcessNs
            let twoRatio = row.twoProcessOps / clock.twoProcessOps
            let judged = row.policy == .sieve || row.policy == .s3fifo
            out += "| \(fmtCapacity(row.capacity)) | \(row.policy.rawValue) | \(fmt(row.oneProcessNs, 1)) | \(fmt(oneRatio, 2))× "
            out += "| \(judged ? (oneRatio <= 1.1 ? "met" : "MISSED") : "—") | \(fmtRate(row.twoProcessOps)) | \(fmt(twoRatio, 2))× "
            out += "| \(judged ? (twoRatio >= 0.9 ? "met" : "MISSED") : "—") | \(row.errors) |\n"
        }
        return out
    }
}

extension Substring {
    func trimmingCharacters() -> String {
        String(self.filter { !$0.isWhitespace })
    }
}

func policyBenchMain(_ arguments: [String]) -> Int32 {
    let quick = arguments.contains("--quick")
    guard arguments.dropFirst().allSatisfy({ $0 == "--quick" }) else {
        writeAll(2, "usage: ShmLRUBench policies [--quick]\n")
        return 64
    }
    do {
        try PolicyBench(quick: quick).run()
        return 0
    } catch {
        writeAll(2, "ShmLRUBench policies: \(error)\n")
        return 1
    }
}
