// `ShmLRUBench profile STORE WORKLOAD CAPACITY OPS [ROUNDS] [INTERVAL_MS]`: one store
// and the floor, one workload, `ROUNDS` alternating runs (default 1); prints the
// best ns/op of each and their ratio. For a profiler: `valgrind --tool=callgrind
// --toggle-collect='*runLoop*'` counts only the timed loops.
import CShm
import Glibc
import ShmLRU

func profileMain(_ arguments: [String]) throws -> Int32 {
    if arguments.count >= 3, arguments[1] == "reload", let capacity = Int(arguments[2]) {
        // `profile reload CAPACITY`: reloadIndex of a full process-local-index cache.
        let local = try ShmLRU.create(recordSize: Spec.recordSize, capacity: capacity, index: .processLocal)
        defer { try? local.region.remove() }
        _ = try LRUStore.preload(local, capacity: capacity, value: ValueBuffer())
        for _ in 0..<5 {
            let t0 = _monotonicNanoseconds()
            let count = try local.reloadIndex()
            writeAll(1, "reloadIndex: \(count) records in \(fmt(Double(_monotonicNanoseconds() - t0) / 1e6, 2)) ms\n")
        }
        return 0
    }
    guard arguments.count >= 5, let kind = StoreKind(rawValue: arguments[1]), let workload = Workload(rawValue: arguments[2]),
        let capacity = Int(arguments[3]), let ops = Int(arguments[4])
    else {
        writeAll(2, "usage: ShmLRUBench profile STORE WORKLOAD CAPACITY OPS [ROUNDS] [INTERVAL_MS]\n")
        return 2
    }
    let rounds = arguments.count > 5 ? Int(arguments[5]) ?? 1 : 1
    let intervalNanoseconds = (arguments.count > 6 ? Int64(arguments[6]) ?? 1_000 : 1_000) * 1_000_000
    let value = ValueBuffer()
    let zipf = workload == .mixed ? Zipf(n: capacity, theta: Spec.zipfTheta) : nil
    var version: UInt64 = 1
    let region = try ShmRegion.create(byteCount: capacity * Spec.recordSize)
    defer { try? region.remove() }
    var cache: ShmLRU? = nil
    if kind == .lruExact || kind == .lruInterval {
        cache = try ShmLRU.create(
            recordSize: Spec.recordSize, capacity: capacity, options: lruOptions(kind, intervalNanoseconds: intervalNanoseconds))
        _ = try LRUStore.preload(cache!, capacity: capacity, value: value)
        if getenv("PROFILE_REATTACH") != nil {
            let fresh = try ShmLRU.attach(key: cache!.key, options: cache!.options)
            try fresh.region.withUnsafeMutableBytes { prefault($0) }
            cache = fresh
        }
    }
    defer { try? cache?.region.remove() }
    var best = (floor: Double.infinity, store: Double.infinity)
    var errors = 0
    try region.withUnsafeMutableBytes { bytes in
        let base = bytes.baseAddress!
        FloorStore.preload(base: base, capacity: capacity, value: value)
        var floor = FloorStore(base: base)
        var dictionary = kind == .dictionary ? DictionaryStore(base: base, capacity: capacity) : nil
        var lru = cache.map { LRUStore(cache: $0) }
        for round in 0..<rounds {
            let stream = KeyStream.make(
                workload, capacity: capacity, ops: ops, seed: UInt64(42 + round), zipf: zipf, insertBase: UInt64(round * ops))
            let f = runLoop(&floor, workload, stream, value: value, version: &version)
            best.floor = min(best.floor, Double(f.nanoseconds) / Double(f.ops))
            let r: LoopResult
            switch kind {
            case .floor: r = runLoop(&floor, workload, stream, value: value, version: &version)
            case .dictionary: r = runLoop(&dictionary!, workload, stream, value: value, version: &version)
            case .lruExact, .lruInterval: r = runLoop(&lru!, workload, stream, value: value, version: &version)
            }
            best.store = min(best.store, Double(r.nanoseconds) / Double(r.ops))
            errors += r.errors
        }
    }
    let promotions = cache.map { " promotions \($0.stats.promotions)" } ?? ""
    writeAll(
        1,
        "\(kind.rawValue) \(workload.rawValue) \(capacity): \(fmt(best.store, 1)) ns/op, floor \(fmt(best.floor, 1)) ns/op, "
            + "ratio \(fmt(best.store / best.floor, 2))\(promotions), errors \(errors)\n")
    return errors == 0 ? 0 : 1
}
