// The driver: for each capacity, preload every store, then run each workload
// single-process (every store on the same key streams, runs interleaved) and
// two-process (workers released together), then the costs that grow.
import CShm
import Glibc
import ShmLRU

struct BenchConfig: Sendable {
    var quick: Bool
    var capacities: [Int]
    var runs: Int
    /// Operations per timed run (and per process in two-process cells), below and from 1M records.
    var opsSmall: Int
    var opsLarge: Int
    func ops(_ capacity: Int) -> Int { capacity >= 1_000_000 ? opsLarge : opsSmall }
    var intervalNanoseconds: Int64
    var jsonPath: String
    var svgPath: String

    static func fromEnvironment(quick: Bool) -> BenchConfig {
        let env = { (name: String) -> String? in getenv(name).map { String(cString: $0) } }
        let interval = env("BENCH_INTERVAL_MS").flatMap(Int64.init) ?? 1_000
        return BenchConfig(
            quick: quick,
            capacities: [10_000, 1_000_000],
            runs: quick ? 3 : 5,
            opsSmall: quick ? 150_000 : 1_000_000,
            opsLarge: quick ? 150_000 : 1_000_000,
            intervalNanoseconds: interval * 1_000_000,
            jsonPath: env("BENCH_JSON") ?? "bench-results.json",
            svgPath: env("BENCH_SVG") ?? "bench-results.svg")
    }
}

/// One cell of the table: a store on a workload, capacity and process count.
struct Cell: Sendable {
    var workload: Workload
    var capacity: Int
    var processes: Int
    var store: StoreKind
    /// ns/op (one process) or total ops/s (two processes), one per run.
    var samples: [Double]
    var errors: Int
    /// Interval mode: records moved to the head at the LRU tail (marked used, so
    /// given a second chance instead of being evicted), per operation.
    var secondChancesPerOp: Double?
    var floorMedian: Double = 0

    var unit: String { processes == 1 ? "ns/op" : "ops/s" }
    var median: Double { samples.sorted()[samples.count / 2] }
    var min: Double { samples.min() ?? 0 }
    var max: Double { samples.max() ?? 0 }
    /// ns/op ÷ floor ns/op (lower is better) or ops/s ÷ floor ops/s (higher is better).
    var ratio: Double { floorMedian > 0 ? median / floorMedian : 0 }
}

/// The issue's targets, as ratios to the floor in the same run.
struct Target: Sendable {
    var limit: Double
    var atMost: Bool  // ratio ≤ limit (time); else ≥ limit (throughput)

    static func of(_ workload: Workload, capacity: Int, processes: Int) -> Target? {
        let big = capacity >= 1_000_000
        if processes == 1 {
            switch workload {
            case .getHit: return Target(limit: big ? 1.6 : 2.5, atMost: true)
            case .setUpdate: return Target(limit: big ? 2 : 3, atMost: true)
            case .insertEvict: return Target(limit: big ? 4 : 10, atMost: true)
            case .mixed: return nil
            }
        }
        return workload == .getHit ? Target(limit: big ? 0.5 : 0.35, atMost: false) : nil
    }

    func met(_ ratio: Double) -> Bool { atMost ? ratio <= limit : ratio >= limit }
    var text: String { (atMost ? "≤ " : "≥ ") + fmt(limit, limit < 1 ? 2 : 1) + "×" }
}

/// The costs that grow with the cache, measured at the largest capacity.
struct GrowthCosts: Sendable {
    var capacity = 0
    var attachMedianMs = 0.0
    var attachMinMs = 0.0
    var reloadMedianMs = 0.0
    var reloadMinMs = 0.0
    var localAttachMs = 0.0
    var recordHeaderBytes = 0
    var sharedIndexBytesPerRecord = 0.0
}

final class Bench {
    let config: BenchConfig
    var cells: [Cell] = []
    var costs = GrowthCosts()
    let value = ValueBuffer()

    init(config: BenchConfig) { self.config = config }

    func progress(_ text: String) { writeAll(2, text + "\n") }

    func run() throws {
        let started = _monotonicNanoseconds()
        progress(
            "ShmLRUBench\(config.quick ? " (quick)" : ""): capacities \(config.capacities.map(String.init).joined(separator: ", ")), "
                + "\(config.runs) runs per cell, interval promotion every \(config.intervalNanoseconds / 1_000_000) ms")
        for capacity in config.capacities {
            try runCapacity(capacity)
        }
        try measureReload(capacity: config.capacities.max()!)
        var core = CoreSection(config: config)  // issue 18: CoreSpeed.swift
        try core.run()
        let store = try runStoreSection()  // issue 12: StoreBench.swift
        let seconds = Double(_monotonicNanoseconds() - started) / 1e9
        var report = Report(config: config, cells: cells, costs: costs, seconds: seconds)
        report.store = store
        print(report.table())
        print(PeerFigures.load()?.table() ?? "\nPeers: no \(PeerFigures.path) (make bench-peers writes it)")
        print(core.table(cells: cells))
        try report.writeFile(CoreSection.jsonPath, core.json(cells: cells))
        try report.writeJSON()
        try report.writeSVG()
        print("wrote \(config.jsonPath) and \(config.svgPath) (\(fmt(seconds, 1)) s)")
        try measureKeyLocks(quick: config.quick)  // LockHandoff.swift
        let wrong = cells.filter { $0.errors > 0 }
        let wrongStore = store.cells.filter { $0.errors > 0 }
        if !wrongStore.isEmpty {
            throw BenchFailure(description: "wrong store values: " + wrongStore.map { "\($0.operation) \($0.capacity) ×\($0.processes): \($0.errors)" }.joined(separator: "; "))
        }
        if !wrong.isEmpty {
            throw BenchFailure(
                description: "wrong values: " + wrong.map { "\($0.store.rawValue) \($0.workload.rawValue) \($0.capacity) ×\($0.processes): \($0.errors)" }.joined(separator: "; "))
        }
    }

    func runCapacity(_ capacity: Int) throws {
        let ops = config.ops(capacity)
        progress("capacity \(capacity): preloading \(capacity) records into each store")
        let floorRegion = try ShmRegion.create(byteCount: capacity * Spec.recordSize)
        let exact = try ShmLRU.create(
            recordSize: Spec.recordSize, capacity: capacity, options: lruOptions(.lruExact, intervalNanoseconds: config.intervalNanoseconds))
        let interval = try ShmLRU.create(
            recordSize: Spec.recordSize, capacity: capacity,
            options: lruOptions(.lruInterval, intervalNanoseconds: config.intervalNanoseconds))
        defer {
            for region in [floorRegion, exact.region, interval.region] {
                try? region.remove()
                _ = try? region.detach()
            }
        }
        let sharedFirstRecord = try LRUStore.preload(exact, capacity: capacity, value: value)
        _ = try LRUStore.preload(interval, capacity: capacity, value: value)

        try floorRegion.withUnsafeMutableBytes { bytes in
            let base = bytes.baseAddress!
            FloorStore.preload(base: base, capacity: capacity, value: value)
            var floor = FloorStore(base: base)
            var dictionary = DictionaryStore(base: base, capacity: capacity)
            var lruExact = LRUStore(cache: exact)
            var lruInterval = LRUStore(cache: interval)
            let zipf = Zipf(n: capacity, theta: Spec.zipfTheta)
            var version: UInt64 = 1 << 40

            for workload in Workload.allCases {
                // One process: the same stream for every store, runs interleaved.
                var samples: [StoreKind: [Double]] = [:]
                var errors: [StoreKind: Int] = [:]
                let promotionsBefore = interval.stats.promotions
                var counted = 0
                for run in 0..<config.runs {
                    let stream = KeyStream.make(
                        workload, capacity: capacity, ops: ops,
                        seed: streamSeed(workload: workload, capacity: capacity, run: run, process: 0), zipf: zipf,
                        insertBase: UInt64(run * ops))
                    counted += stream.count
                    for kind in StoreKind.allCases {
                        let result: LoopResult
                        switch kind {
                        case .floor: result = runLoop(&floor, workload, stream, value: value, version: &version)
                        case .dictionary: result = runLoop(&dictionary, workload, stream, value: value, version: &version)
                        case .lruExact: result = runLoop(&lruExact, workload, stream, value: value, version: &version)
                        case .lruInterval: result = runLoop(&lruInterval, workload, stream, value: value, version: &version)
                        }
                        samples[kind, default: []].append(Double(result.nanoseconds) / Double(result.ops))
                        errors[kind, default: 0] += result.errors
                    }
                }
                let promotions = interval.stats.promotions - promotionsBefore
                addCells(workload, capacity, processes: 1, samples, errors, promotions: promotions, ops: counted)

                // Two processes at once.
                samples = [:]
                errors = [:]
                let twoBefore = interval.stats.promotions
                counted = 0
                for run in 0..<config.runs {
                    for kind in StoreKind.allCases {
                        let key: ShmKey =
                            switch kind {
                            case .floor, .dictionary: floorRegion.key
                            case .lruExact: exact.key
                            case .lruInterval: interval.key
                            }
                        let jobs = (0..<2).map { p in
                            WorkerJob(
                                store: kind, key: key, capacity: capacity, workload: workload, ops: ops,
                                seed: streamSeed(workload: workload, capacity: capacity, run: run, process: p + 1),
                                insertBase: UInt64((config.runs + 2 * run) * ops), insertStep: 2, insertPhase: UInt64(p),
                                intervalNanoseconds: config.intervalNanoseconds)
                        }
                        let results = try runTogether(jobs)
                        samples[kind, default: []].append(throughput(results))
                        errors[kind, default: 0] += results.reduce(0) { $0 + $1.errors }
                    }
                    counted += 2 * min(ops, Spec.maxStream)
                }
                addCells(workload, capacity, processes: 2, samples, errors, promotions: interval.stats.promotions - twoBefore, ops: counted)
                let single = cells.filter { $0.workload == workload && $0.capacity == capacity && $0.processes == 1 }
                let two = cells.filter { $0.workload == workload && $0.capacity == capacity && $0.processes == 2 }
                progress(
                    "  \(workload.rawValue): "
                        + single.map { "\($0.store.short) \(fmt($0.median, 1)) ns" }.joined(separator: ", ") + " | ×2: "
                        + two.map { "\($0.store.short) \(fmtRate($0.median))" }.joined(separator: ", "))
            }
        }

        // Costs that grow: attaching the full shared-index segment.
        if capacity == config.capacities.max()! {
            var times: [Double] = []
            for _ in 0..<21 {
                let t0 = _monotonicNanoseconds()
                let peer = try ShmLRU.attach(key: exact.key, recordSize: Spec.recordSize)
                let t1 = _monotonicNanoseconds()
                _ = try peer.detach()
                times.append(Double(t1 - t0) / 1e6)
            }
            times.sort()
            costs.capacity = capacity
            costs.attachMedianMs = times[times.count / 2]
            costs.attachMinMs = times[0]
            costs.sharedIndexBytesPerRecord = Double(sharedFirstRecord)  // finished in measureReload
            costs.recordHeaderBytes = try recordHeaderSize(exact)
        }
    }

    func addCells(
        _ workload: Workload, _ capacity: Int, processes: Int, _ samples: [StoreKind: [Double]], _ errors: [StoreKind: Int],
        promotions: UInt64, ops: Int
    ) {
        var new = StoreKind.allCases.map { kind in
            Cell(
                workload: workload, capacity: capacity, processes: processes, store: kind, samples: samples[kind] ?? [0],
                errors: errors[kind] ?? 0,
                secondChancesPerOp: kind == .lruInterval && ops > 0 ? Double(promotions) / Double(ops) : nil)
        }
        let floor = new[0].median
        for i in new.indices { new[i].floorMedian = floor }
        cells += new
    }

    /// The bytes between a record's start (its offset) and its payload, as the API shows them.
    func recordHeaderSize(_ cache: ShmLRU) throws -> Int {
        let base = cache.region.withUnsafeBytes { Int(bitPattern: $0.baseAddress) }
        let key = benchKey(UInt64(cache.capacity - 1))
        let buffer = [UInt8](repeating: 0, count: Spec.valueSize)
        let offset = try buffer.withUnsafeBytes { try cache.set(key, bytes: $0).offset }
        let payload = try cache.withValue(atOffset: offset) { Int(bitPattern: $0.baseAddress) }
        return payload - base - offset
    }

    /// reloadIndex of a full process-local-index cache; and the shared index's bytes per record.
    func measureReload(capacity: Int) throws {
        progress("costs that grow: \(capacity)-record process-local cache, reloadIndex")
        let local = try ShmLRU.create(recordSize: Spec.recordSize, capacity: capacity, index: .processLocal)
        defer {
            try? local.region.remove()
            _ = try? local.detach()
        }
        let localFirstRecord = try LRUStore.preload(local, capacity: capacity, value: value)
        // The records start later in a shared-index segment by exactly the index's size.
        costs.sharedIndexBytesPerRecord = (costs.sharedIndexBytesPerRecord - Double(localFirstRecord)) / Double(capacity)
        var times: [Double] = []
        for _ in 0..<(config.quick ? 3 : 5) {
            let t0 = _monotonicNanoseconds()
            let count = try local.reloadIndex()
            let t1 = _monotonicNanoseconds()
            guard count == capacity else { throw BenchFailure(description: "reloadIndex found \(count) records") }
            times.append(Double(t1 - t0) / 1e6)
        }
        times.sort()
        costs.reloadMedianMs = times[times.count / 2]
        costs.reloadMinMs = times[0]
        let t0 = _monotonicNanoseconds()
        let peer = try ShmLRU.attach(key: local.key, recordSize: Spec.recordSize)
        costs.localAttachMs = Double(_monotonicNanoseconds() - t0) / 1e6
        _ = try peer.detach()
    }
}
