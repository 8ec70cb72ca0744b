// `ShmLRUBench profile STORE WORKLOAD CAPACITY OPS [INTERVAL_MS]`: one store, one
// workload, one run, for a profiler (`valgrind --tool=callgrind
// --toggle-collect='*runLoop*'` counts only the timed loop).
import CShm
import ShmLRU

func profileMain(_ arguments: [String]) throws -> Int32 {
    guard arguments.count >= 5, let kind = StoreKind(rawValue: arguments[1]), let workload = Workload(rawValue: arguments[2]),
        let capacity = Int(arguments[3]), let ops = Int(arguments[4])
    else {
        writeAll(2, "usage: ShmLRUBench profile STORE WORKLOAD CAPACITY OPS [INTERVAL_MS]\n")
        return 2
    }
    let intervalNanoseconds = (arguments.count > 5 ? Int64(arguments[5]) ?? 1_000 : 1_000) * 1_000_000
    let value = ValueBuffer()
    let zipf = workload == .mixed ? Zipf(n: capacity, theta: Spec.zipfTheta) : nil
    let stream = KeyStream.make(workload, capacity: capacity, ops: ops, seed: 42, zipf: zipf)
    var version: UInt64 = 1
    let result: LoopResult
    switch kind {
    case .floor, .dictionary:
        let region = try ShmRegion.create(byteCount: capacity * Spec.recordSize)
        defer { try? region.remove() }
        result = try region.withUnsafeMutableBytes { bytes -> LoopResult in
            FloorStore.preload(base: bytes.baseAddress!, capacity: capacity, value: value)
            if kind == .floor {
                var store = FloorStore(base: bytes.baseAddress!)
                return runLoop(&store, workload, stream, value: value, version: &version)
            }
            var store = DictionaryStore(base: bytes.baseAddress!, capacity: capacity)
            return runLoop(&store, workload, stream, value: value, version: &version)
        }
    case .lruExact, .lruInterval:
        let cache = try ShmLRU.create(
            recordSize: Spec.recordSize, capacity: capacity, options: lruOptions(kind, intervalNanoseconds: intervalNanoseconds))
        defer { try? cache.region.remove() }
        _ = try LRUStore.preload(cache, capacity: capacity, value: value)
        var store = LRUStore(cache: cache)
        result = runLoop(&store, workload, stream, value: value, version: &version)
        writeAll(1, "promotions \(cache.stats.promotions)\n")
    }
    writeAll(1, "\(kind.rawValue) \(workload.rawValue) \(capacity): \(fmt(Double(result.nanoseconds) / Double(result.ops), 1)) ns/op, errors \(result.errors)\n")
    return result.errors == 0 ? 0 : 1
}
