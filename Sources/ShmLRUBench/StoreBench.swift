// The store section of `make bench`: ShmStore's read and write paths, against
// the lock-free ShmLRU get measured in the same run (same capacity, same
// 200-byte values, same key indices). 16-byte String keys ("user:" + 11
// digits), a Codable value of 8 fields whose JSON is ~200 bytes.
//
//   bytes              store.bytes(key): lock-free lookup over the probe hashes, key compare, copy
//   bytes into         store.bytes(key, into:) a caller's buffer; withBytes: store.withBytes(key) { lent }
//   get L1 hit         store.get(key, as:) of a value this handle decoded before (a hot set of keys)
//   get after write    store.get(key, as:) right after a peer handle rewrote the key: the L1 misses, decodes
//   set Codable        store.set(key, value), against the codec's encode(value) alone (and the get after a
//                      write against the codec's decode alone): the codec's share is printed beside them
//   ×2 processes       every lock-free read (bytes, into, withBytes, L1 hit) in two processes at once
//                      (spawned workers), against one such worker alone in the same rounds; the get after
//                      a peer's write has no two-process cell
//
// Each operation's key is a String of its own, made before the timer in the
// order of the operations (`keyStream`), as a server has the key it just parsed
// from a request: reading the key is not a cache miss in a table of every key
// (at 1M, that table and the strings' storage were ~2.4 of a read's ~7.9
// last-level misses, cachegrind), which the ShmLRU baseline, whose key is
// computed from the index, never paid.
import CShm
import FoundationEssentials
import Glibc
import ShmLRU

/// The value stored: 8 fields, ~200 bytes of JSON.
struct BenchUser: Codable, Equatable, Sendable {
    var id: Int
    var name: String
    var email: String
    var age: Int
    var active: Bool
    var score: Double
    var tags: [String]
    var bio: String

    init(_ i: Int) {
        id = i
        name = "user-\(i)"
        email = "user-\(i)@example.com"
        age = 18 + i % 60
        active = i % 3 != 0
        score = Double(i % 10_000) / 4
        tags = ["alpha", "beta", "gamma"]
        bio = "Writes Swift on Linux; shares a cache across processes without a broker process."
    }
}

enum StoreSpec {
    static let recordSize = 320
    static let lruRecordSize = 256
    /// "user:" + 11 digits: 16 bytes.
    static func key(_ i: Int) -> String {
        let digits = String(i)
        return "user:" + String(repeating: "0", count: max(0, 11 - digits.count)) + digits
    }
    /// The L1 hot set: every key at 10K, a 100K-key subset at 1M.
    static func hotSet(_ capacity: Int) -> Int { min(capacity, 100_000) }
    /// Keys rewritten by the peer then read back, per run.
    static func missKeys(_ capacity: Int) -> Int { min(capacity, 20_000) }
}

/// The keys of `indices`, one new String each, allocated in this order (so
/// they lie in memory in the order the operations read them).
func keyStream(_ indices: [Int]) -> [String] { indices.map(StoreSpec.key) }

/// One measured store figure.
struct StoreCell: Sendable {
    var operation: String
    var capacity: Int
    var processes: Int
    /// ns/op (one process) or total ops/s (two processes), one per run.
    var samples: [Double]
    var errors: Int
    /// What the figure is compared with, and its median in the same run.
    var baselineName: String
    var baseline: Double
    /// The target on `ratio` (nil: reported only), or on ns/op with `absolute`.
    var limit: Double?
    var atMost = true
    var absolute = false
    /// Printed after the target: the codec's share of a Codable figure, its ratio to the ShmLRU get.
    var note = ""

    var median: Double { samples.sorted()[samples.count / 2] }
    var ratio: Double { baseline > 0 ? median / baseline : 0 }
    var met: Bool? {
        guard let limit else { return nil }
        let value = absolute ? median : ratio
        return atMost ? value <= limit : value >= limit
    }
    var targetText: String {
        guard let limit else { return "" }
        let digits = absolute ? 0 : ((limit * 10).rounded() == limit * 10 ? 1 : 2)  // 1.15 stays 1.15
        return (atMost ? "≤ " : "≥ ") + fmt(limit, digits) + (absolute ? " ns" : "×")
    }
}

struct StoreSection: Sendable {
    var cells: [StoreCell] = []
    var valueBytes = 0

    func table() -> String {
        var out = "\nShmStore (\(valueBytes)-byte JSON values, 16-byte keys): median ns/op of the runs (two processes: total M ops/s), "
        out += "ratio to the baseline measured in the same run.\n"
        out += "Load while measuring (uptime): \(loadAverage()). Ratios hold only on a quiet machine.\n\n"
        out += pad("operation", 26) + pad("cap", 5) + pad("procs", 6) + pad("median", 10, right: true)
            + pad("ratio", 9, right: true) + "  " + pad("baseline", 34) + "target\n"
        for cell in cells {
            let figure = cell.processes == 1 ? fmt(cell.median, 1) : fmt(cell.median / 1e6, 2)
            let baseline = cell.processes == 1 ? fmt(cell.baseline, 1) + " ns" : fmtRate(cell.baseline)
            var line = pad(cell.operation, 26) + pad(fmtCapacity(cell.capacity), 5) + pad("\(cell.processes)", 6)
                + pad(figure, 10, right: true) + pad(fmt(cell.ratio, 2) + "×", 9, right: true) + "  "
                + pad("\(cell.baselineName) \(baseline)", 34)
            if let met = cell.met { line += cell.targetText + (met ? " met" : " MISSED") }
            if !cell.note.isEmpty { line += "  " + cell.note }
            if cell.errors > 0 { line += "  WRONG VALUES: \(cell.errors)" }
            out += line + "\n"
        }
        return out
    }

    func json() -> String {
        func number(_ value: Double) -> String { value.isFinite ? fmt(value, 3) : "null" }
        let items = cells.map { cell -> String in
            var fields = [
                "\"operation\": \"\(cell.operation)\"", "\"capacity\": \(cell.capacity)", "\"processes\": \(cell.processes)",
                "\"unit\": \"\(cell.processes == 1 ? "ns/op" : "ops/s")\"", "\"median\": \(number(cell.median))",
                "\"runs\": [\(cell.samples.map(number).joined(separator: ", "))]",
                "\"baseline\": \"\(cell.baselineName)\"", "\"baseline_median\": \(number(cell.baseline))",
                "\"ratio\": \(fmt(cell.ratio, 4))", "\"errors\": \(cell.errors)",
            ]
            if let limit = cell.limit, let met = cell.met {
                fields.append(
                    "\"target\": {\"\(cell.absolute ? "ns_per_op" : "ratio")\": \(limit), \"at_most\": \(cell.atMost), \"met\": \(met)}")
            }
            return "      {" + fields.joined(separator: ", ") + "}"
        }
        return "{\n    \"value_bytes\": \(valueBytes),\n    \"cells\": [\n" + items.joined(separator: ",\n") + "\n    ]\n  }"
    }

    /// A panel of horizontal bars, one per one-process cell: ns/op, with the baseline marked.
    func svgPanel(top: Double, left: Double, width: Double) -> String {
        let single = cells.filter { $0.processes == 1 }
        let two = cells.filter { $0.processes == 2 }
        guard !single.isEmpty else { return "" }
        let rowHeight = 22.0
        var out = "<text x=\"\(left)\" y=\"\(top)\" font-size=\"14\" font-weight=\"bold\" fill=\"#222\">"
            + xmlEscaped("ShmStore (\(valueBytes)-byte JSON values, 16-byte keys): ns/op, log scale; | = its baseline in the same run")
            + "</text>\n"
        let maxValue = max(single.map(\.median).max() ?? 1, single.map(\.baseline).max() ?? 1) * 1.3
        let labelWidth = 300.0
        let barSpace = width - labelWidth - 140
        func x(_ value: Double) -> Double { left + labelWidth + barSpace * log10(max(value, 1)) / log10(max(maxValue, 10)) }
        for (row, cell) in single.enumerated() {
            let y = top + 14 + Double(row) * rowHeight
            let color = cell.met == false ? "#d62728" : "#1f77b4"
            out += "<text x=\"\(left)\" y=\"\(y + 14)\" font-size=\"11\" fill=\"#222\">"
                + xmlEscaped("\(cell.operation) \(fmtCapacity(cell.capacity))") + "</text>\n"
            out += "<rect x=\"\(left + labelWidth)\" y=\"\(y + 3)\" width=\"\(max(1, x(cell.median) - left - labelWidth))\" height=\"14\" fill=\"\(color)\"/>\n"
            out += "<line x1=\"\(x(cell.baseline))\" y1=\"\(y)\" x2=\"\(x(cell.baseline))\" y2=\"\(y + 20)\" stroke=\"#222\" stroke-width=\"2\"/>\n"
            let note = fmt(cell.median, 0) + " ns (" + fmt(cell.ratio, 2) + "× " + cell.baselineName + ")"
                + (cell.met.map { $0 ? " target met" : " target MISSED" } ?? "")
            out += "<text x=\"\(x(cell.median) + 6)\" y=\"\(y + 14)\" font-size=\"11\" fill=\"#444\">" + xmlEscaped(note) + "</text>\n"
        }
        var y = top + 14 + Double(single.count) * rowHeight + 16
        for cell in two {
            let note = "two processes, \(cell.operation) \(fmtCapacity(cell.capacity)): \(fmtRate(cell.median)) = "
                + fmt(cell.ratio, 2) + "× one process" + (cell.met.map { $0 ? " (target met)" : " (target MISSED)" } ?? "")
            out += "<text x=\"\(left)\" y=\"\(y)\" font-size=\"11\" fill=\"#444\">" + xmlEscaped(note) + "</text>\n"
            y += 16
        }
        return out
    }

    var svgHeight: Double { cells.isEmpty ? 0 : 60 + Double(cells.filter { $0.processes == 1 }.count) * 22 + Double(cells.filter { $0.processes == 2 }.count) * 16 }
}

/// The id of the user stored under `key`, through the decoded cache (nil on a miss or an error).
@inline(__always)
func storedID(_ store: ShmStore, _ key: String) -> Int? {
    do { return try store.get(key, as: BenchUser.self)?.id } catch { return nil }
}

/// The length of the bytes `withBytes` lends for `key` (0 on a miss or an error).
func lentLength(_ store: ShmStore, _ key: String) -> Int {
    do { return try store.withBytes(key) { $0.count } ?? 0 } catch { return 0 }
}

/// The load average, as `uptime` prints it (from /proc/loadavg).
func loadAverage() -> String {
    guard let text = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8) else { return "unknown" }
    return text.split(separator: " ").prefix(3).joined(separator: ", ")
}

/// The length of the bytes stored under `key` (0 on a miss or an error).
@inline(__always)
func storedLength(_ store: ShmStore, _ key: String) -> Int {
    do { return try store.bytes(key)?.count ?? 0 } catch { return 0 }
}

/// Times `body` over `count` operations; ns/op.
@inline(__always)
func timed(_ count: Int, _ body: () -> Int) -> (nanoseconds: Double, errors: Int) {
    let t0 = _monotonicNanoseconds()
    let errors = body()
    let t1 = _monotonicNanoseconds()
    return (Double(t1 - t0) / Double(max(count, 1)), errors)
}

/// A store key no segment uses now.
func freeStoreKey() -> ShmKey {
    while true {
        let key = ShmKey(UInt32.random(in: 0x5000_0000...0x5FFF_FFFF))
        if !ShmRegion.exists(key: key) { return key }
    }
}

extension Bench {
    func runStoreSection() throws -> StoreSection {
        var section = StoreSection()
        section.valueBytes = try JSONEncoder().encode(BenchUser(123_456)).count
        for capacity in config.capacities {
            try runStore(capacity: capacity, into: &section)
        }
        return section
    }

    func runStore(capacity: Int, into section: inout StoreSection) throws {
        let runs = config.runs
        let ops = config.quick ? 100_000 : 400_000
        let setOps = config.quick ? 10_000 : 40_000
        progress("store, capacity \(capacity): preloading the store and a ShmLRU of the same size")
        let keys = (0..<capacity).map(StoreSpec.key)
        let lru = try ShmLRU.create(
            recordSize: StoreSpec.lruRecordSize, capacity: capacity,
            options: .init(promotion: .atMostEvery(.nanoseconds(config.intervalNanoseconds))))
        let store = try ShmStore.create(
            key: freeStoreKey(),
            configuration: .init(
                capacity: capacity, recordSize: StoreSpec.recordSize, lockSlots: 16, lockWaiters: 16, changeLogCapacity: 16,
                promotion: .atMostEvery(.nanoseconds(config.intervalNanoseconds))))
        defer {
            try? lru.region.remove()
            _ = try? lru.detach()
            try? store.remove()
            try? store.detach()
        }
        let codec = JSONStoreCodec()
        for i in 0..<capacity {
            let bytes = try codec.encode(BenchUser(i))
            try store.set(keys[i], bytes: bytes)
            value.stamp(version: 0, key: benchKey(UInt64(i)))
            _ = try lru.set(benchKey(UInt64(i)), bytes: UnsafeRawBufferPointer(start: value.pointer, count: Spec.valueSize))
        }
        let peer = try ShmStore.attach(key: store.key)
        defer { try? peer.detach() }
        let hot = StoreSpec.hotSet(capacity)
        store.decodedCacheLimits = .init(maxEntries: hot + StoreSpec.missKeys(capacity), maxBytes: 1 << 30)

        var random = SplitMix64(seed: 0x5705E ^ UInt64(capacity))
        let stream = (0..<ops).map { _ in Int(random.below(capacity)) }
        let hotStream = (0..<ops).map { _ in Int(random.below(hot)) }
        let (streamKeys, hotKeys) = (keyStream(stream), keyStream(hotStream))
        /// Decoded gets (`get(as:)`) of `indices` (their keys: `keys`) whose value is not that key's.
        func wrongIDs(_ indices: [Int], _ keys: [String]) -> Int {
            var wrong = 0
            for n in indices.indices where storedID(store, keys[n]) != indices[n] { wrong += 1 }
            return wrong
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: StoreSpec.lruRecordSize, alignment: 16)
        defer { buffer.deallocate() }

        var lruGet: [Double] = [], bytes: [Double] = [], bytesInto: [Double] = [], hit: [Double] = [], miss: [Double] = []
        var set: [Double] = [], encoder: [Double] = [], decoder: [Double] = [], lent: [Double] = []
        var errors = (lruGet: 0, bytes: 0, hit: 0, miss: 0, set: 0)
        for run in 0..<runs {
            // The lock-free ShmLRU get: the baseline.
            var r = timed(ops) {
                var wrong = 0
                for i in stream {
                    let length = try? lru.get(benchKey(UInt64(i)), into: buffer)
                    if length != Spec.valueSize { wrong += 1 }
                }
                return wrong
            }
            lruGet.append(r.nanoseconds)
            errors.lruGet += r.errors
            r = timed(ops) {
                var wrong = 0
                for key in streamKeys {
                    if storedLength(store, key) < 100 { wrong += 1 }
                }
                return wrong
            }
            bytes.append(r.nanoseconds)
            errors.bytes += r.errors
            r = timed(ops) {
                var wrong = 0
                for key in streamKeys where ((try? store.bytes(key, into: buffer)) ?? nil ?? 0) < 100 { wrong += 1 }
                return wrong
            }
            bytesInto.append(r.nanoseconds)
            errors.bytes += r.errors
            r = timed(ops) {
                var wrong = 0
                for key in streamKeys where lentLength(store, key) < 100 { wrong += 1 }
                return wrong
            }
            lent.append(r.nanoseconds)
            errors.bytes += r.errors
            for i in 0..<hot { _ = try store.get(keys[i], as: BenchUser.self) }  // re-decode what the last run's sets changed
            r = timed(ops) { wrongIDs(hotStream, hotKeys) }
            hit.append(r.nanoseconds)
            errors.hit += r.errors
            // After a peer's write: the L1 holds each key, the peer rewrites them (untimed), then each get decodes.
            let missCount = StoreSpec.missKeys(capacity)
            let start = (run * missCount) % capacity
            let missKeys = (0..<missCount).map { (start + $0) % capacity }
            for i in missKeys { _ = try store.get(keys[i], as: BenchUser.self) }
            for i in missKeys { try peer.set(keys[i], bytes: try codec.encode(BenchUser(i))) }
            let missStream = keyStream(missKeys)
            r = timed(missCount) { wrongIDs(missKeys, missStream) }
            miss.append(r.nanoseconds)
            errors.miss += r.errors
            // The decoder alone, on the same keys' bytes: the codec's share of the get after a write.
            let encoded = try missKeys.map { i in try codec.encode(BenchUser(i)) }
            r = timed(missCount) {
                var wrong = 0
                for (n, i) in missKeys.enumerated() {
                    let id = encoded[n].withUnsafeBytes { try? codec.decode(BenchUser.self, from: $0).id }
                    if id != i { wrong += 1 }
                }
                return wrong
            }
            decoder.append(r.nanoseconds)
            // set(Codable) and the encoder alone, on the same values.
            let setKeys = (0..<setOps).map { _ in Int(random.below(capacity)) }
            let values = setKeys.map(BenchUser.init)
            let setStream = keyStream(setKeys)
            r = timed(setOps) {
                var wrong = 0
                let encoder = JSONEncoder()
                for value in values where ((try? encoder.encode(value))?.count ?? 0) < 100 { wrong += 1 }
                return wrong
            }
            encoder.append(r.nanoseconds)
            r = timed(setOps) {
                var wrong = 0
                for n in setStream.indices {
                    do { try store.set(setStream[n], values[n]) } catch { wrong += 1 }
                }
                return wrong
            }
            set.append(r.nanoseconds)
            errors.set += r.errors
        }
        let lruMedian = lruGet.sorted()[lruGet.count / 2]
        let small = capacity < 1_000_000
        section.cells.append(
            StoreCell(
                operation: "ShmLRU get (lock-free)", capacity: capacity, processes: 1, samples: lruGet, errors: errors.lruGet,
                baselineName: "itself", baseline: lruMedian))
        func median(_ samples: [Double]) -> Double { samples.sorted()[samples.count / 2] }
        func times(_ value: Double) -> String { "= " + fmt(value / lruMedian, 2) + "× ShmLRU get" }
        section.cells.append(
            StoreCell(
                operation: "bytes(key)", capacity: capacity, processes: 1, samples: bytes, errors: errors.bytes,
                baselineName: "ShmLRU get", baseline: lruMedian, limit: 2))
        section.cells.append(
            StoreCell(
                operation: "bytes(key, into:)", capacity: capacity, processes: 1, samples: bytesInto, errors: 0,
                baselineName: "ShmLRU get", baseline: lruMedian, limit: 1.5))
        section.cells.append(
            StoreCell(
                operation: "withBytes(key)", capacity: capacity, processes: 1, samples: lent, errors: 0,
                baselineName: "ShmLRU get", baseline: lruMedian, limit: 1.5))
        var hitCell = StoreCell(
            operation: "get(as:) L1 hit", capacity: capacity, processes: 1, samples: hit, errors: errors.hit,
            baselineName: "ShmLRU get", baseline: lruMedian, limit: 1.5, note: "codec share 0 % (no decode on a hit)")
        if small {
            hitCell.limit = 100
            hitCell.absolute = true
        }
        section.cells.append(hitCell)
        /// The codec alone (against the ShmLRU get), then the Codable operation against it and its share.
        func codecCells(_ codec: String, _ alone: [Double], _ operation: String, _ samples: [Double], errors: Int, limit: Double) {
            let codecMedian = median(alone)
            section.cells.append(
                StoreCell(
                    operation: "JSON \(codec) alone", capacity: capacity, processes: 1, samples: alone, errors: 0,
                    baselineName: "ShmLRU get", baseline: lruMedian))
            section.cells.append(
                StoreCell(
                    operation: operation, capacity: capacity, processes: 1, samples: samples, errors: errors,
                    baselineName: "\(codec) alone", baseline: codecMedian, limit: limit,
                    note: "codec share \(fmt(100 * codecMedian / median(samples), 0)) % \(times(median(samples)))"))
        }
        codecCells("decoder", decoder, "get(as:) after peer write", miss, errors: errors.miss, limit: 1.1)
        let encoderMedian = median(encoder)
        codecCells("encoder", encoder, "set(Codable)", set, errors: errors.set, limit: 1.15)
        progress(
            "  store \(capacity): lru get \(fmt(lruMedian, 1)) ns, bytes \(fmt(bytes.sorted()[runs / 2], 1)) ns, L1 hit \(fmt(hit.sorted()[runs / 2], 1)) ns, "
                + "after write \(fmt(miss.sorted()[runs / 2], 1)) ns, set \(fmt(set.sorted()[runs / 2], 1)) ns (encoder \(fmt(encoderMedian, 1)) ns)")

        // Two processes reading at once, against one.
        let twoProcessReads = [
            ("bytes", "bytes(key)"), ("into", "bytes(key, into:)"), ("with", "withBytes(key)"), ("hit", "get(as:) L1 hit"),
        ]
        // The one-process rate they are compared with is one worker's, measured
        // by the same harness in the same rounds (interleaved: one worker, then
        // two), not the one-process cell above: a lone worker, which builds
        // its own key stream, ran 25-35 % slower per read than the parent's
        // loop, which has read its stream in earlier runs (BENCH_DEBUG prints
        // each worker's ns/op).
        for (mode, name) in twoProcessReads {
            var samples: [Double] = [], alone: [Double] = []
            var wrong = 0
            for run in 0..<runs {
                let lists = (0..<2).map { p in
                    ["store-worker", String(store.key.unsignedValue), String(capacity), mode, String(ops), String(run * 2 + p + 1)]
                }
                for workers in [1, 2] {
                    let results = try runTogether(argumentLists: Array(lists.prefix(workers)), label: "store \(mode) ×\(workers)")
                    if workers == 1 { alone.append(throughput(results)) } else { samples.append(throughput(results)) }
                    wrong += results.reduce(0) { $0 + $1.errors }
                }
            }
            section.cells.append(
                StoreCell(
                    operation: name, capacity: capacity, processes: 2, samples: samples, errors: wrong,
                    baselineName: "one worker", baseline: alone.sorted()[alone.count / 2], limit: 1.8, atMost: false))
        }
    }
}

/// `ShmLRUBench store-worker STORE-KEY CAPACITY MODE OPS SEED`: attaches the
/// store, reads keys as the parent's cell does (MODE bytes, into, with or hit), released
/// with the other worker (see TwoProcesses.swift).
func storeWorkerMain(_ arguments: [String]) -> Int32 {
    guard arguments.count == 6, let key = UInt32(arguments[1]), let capacity = Int(arguments[2]), let ops = Int(arguments[4]),
        let seed = UInt64(arguments[5]), ["bytes", "into", "with", "hit"].contains(arguments[3])
    else {
        writeAll(2, "usage: ShmLRUBench store-worker STORE-KEY CAPACITY bytes|into|with|hit OPS SEED\n")
        return 2
    }
    let hitMode = arguments[3] == "hit"
    do {
        let store = try ShmStore.attach(key: ShmKey(key))
        try store.cache.region.withUnsafeMutableBytes { prefault($0) }
        let keys = (0..<capacity).map(StoreSpec.key)
        let range = hitMode ? StoreSpec.hotSet(capacity) : capacity
        var random = SplitMix64(seed: seed &* 0x9E37_79B9)
        let stream = (0..<ops).map { _ in Int(random.below(range)) }
        let streamKeys = keyStream(stream)
        if hitMode {
            store.decodedCacheLimits = .init(maxEntries: range, maxBytes: 1 << 30)
            for i in 0..<range { _ = try store.get(keys[i], as: BenchUser.self) }
        }
        writeAll(1, "ready\n")
        var byte: UInt8 = 0
        while true {
            let n = read(WorkerFD.release, &byte, 1)
            if n < 0 && errno == EINTR { continue }
            break
        }
        var wrong = 0
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: StoreSpec.lruRecordSize, alignment: 16)
        defer { buffer.deallocate() }
        // At 10K a pass lasts ~30 ms, and the workers' starts may differ by a
        // scheduler tick (2-4 ms, BENCH_DEBUG): four passes make that ~3 % of the span.
        let passes = capacity <= 100_000 ? 4 : 1
        let start = _monotonicNanoseconds()
        for _ in 0..<passes {
            switch arguments[3] {
            case "hit": for n in stream.indices where storedID(store, streamKeys[n]) != stream[n] { wrong += 1 }
            case "into": for key in streamKeys where ((try? store.bytes(key, into: buffer)) ?? nil ?? 0) < 100 { wrong += 1 }
            case "with": for key in streamKeys where lentLength(store, key) < 100 { wrong += 1 }
            default: for key in streamKeys where storedLength(store, key) < 100 { wrong += 1 }
            }
        }
        let end = _monotonicNanoseconds()
        try? store.detach()
        writeAll(1, "done \(start) \(end) \(ops * passes) \(wrong)\n")
        return wrong == 0 ? 0 : 1
    } catch {
        writeAll(2, "store-worker: \(error)\n")
        return 1
    }
}

/// The timed part of `store-profile`, out of line so that `valgrind --tool=callgrind
/// --toggle-collect='*storeProfileLoop*'` counts only it (and what it calls).
@inline(never)
func storeProfileLoop(_ body: () -> Int) -> Int { body() }

/// `ShmLRUBench store-profile OP CAPACITY OPS`: one store operation (lru, bytes,
/// into, with, hit, miss, after, set, encode, decode, decode-keep) over OPS keys of a preloaded CAPACITY store, for a
/// profiler; prints ns/op. Instructions per op: callgrind's Ir of
/// `storeProfileLoop` ÷ OPS.
func storeProfileMain(_ arguments: [String]) throws -> Int32 {
    guard arguments.count == 4, let capacity = Int(arguments[2]), let ops = Int(arguments[3]) else {
        writeAll(2, "usage: ShmLRUBench store-profile lru|bytes|into|with|hit|miss|after|set|encode|decode|decode-keep CAPACITY OPS\n")
        return 2
    }
    let op = arguments[1]
    let keys = (0..<capacity).map(StoreSpec.key)
    let interval = ShmLRU.Promotion.atMostEvery(.seconds(1))
    let lru = try ShmLRU.create(recordSize: StoreSpec.lruRecordSize, capacity: capacity, options: .init(promotion: interval))
    let store = try ShmStore.create(
        key: freeStoreKey(),
        configuration: .init(
            capacity: capacity, recordSize: StoreSpec.recordSize, lockSlots: 16, lockWaiters: 16, changeLogCapacity: 16,
            promotion: interval))
    defer {
        try? lru.region.remove()
        try? store.remove()
    }
    let value = ValueBuffer()
    let codec = JSONStoreCodec()
    for i in 0..<capacity {
        try store.set(keys[i], bytes: try codec.encode(BenchUser(i)))
        value.stamp(version: 0, key: benchKey(UInt64(i)))
        _ = try lru.set(benchKey(UInt64(i)), bytes: UnsafeRawBufferPointer(start: value.pointer, count: Spec.valueSize))
    }
    let peer = try ShmStore.attach(key: store.key)
    store.decodedCacheLimits = .init(maxEntries: capacity, maxBytes: 1 << 30)
    var random = SplitMix64(seed: 7)
    let stream = (0..<ops).map { _ in Int(random.below(capacity)) }
    let users = stream.map(BenchUser.init)
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: StoreSpec.lruRecordSize, alignment: 16)
    defer { buffer.deallocate() }
    let encoded = op.hasPrefix("decode") ? try stream.map { i in try codec.encode(BenchUser(i)) } : []
    // `decode-keep`: the decode alone, each value kept in place of an older one decoded long before (as the L1 keeps it).
    var kept: [BenchUser?] = op == "decode-keep" ? try (0..<capacity).map { i in try codec.encode(BenchUser(i)).withUnsafeBytes { try codec.decode(BenchUser.self, from: $0) } } : []
    // `after`: distinct keys (OPS <= CAPACITY), each decoded into the L1, then rewritten by the peer, then read once.
    var distinct = op == "after" ? Array(0..<min(ops, capacity)) : []
    for n in distinct.indices.reversed() { distinct.swapAt(n, Int(random.below(n + 1))) }  // Fisher-Yates
    for i in distinct { _ = try store.get(keys[i], as: BenchUser.self) }
    for i in distinct { try peer.set(keys[i], bytes: try codec.encode(BenchUser(i))) }
    if op == "hit" || op == "miss" { for i in stream { _ = try store.get(keys[i], as: BenchUser.self) } }
    if op == "miss" { for i in stream { try peer.set(keys[i], bytes: try codec.encode(BenchUser(i))) } }
    // SHMLRU_PROFILE_WAIT set: say "ready" on stderr and wait for a line on stdin, so that a profiler started with
    // its instrumentation off (`valgrind --tool=callgrind --instr-atstart=no`, slow setups at 1M) turns it on
    // (`callgrind_control -i on`) for the loop only.
    let streamKeys = keyStream(stream)  // as the store section's: one String per operation, in order
    if getenv("SHMLRU_PROFILE_WAIT") != nil {
        writeAll(2, "ready\n")
        _ = readLine()
    }
    let t0 = _monotonicNanoseconds()
    let wrong = storeProfileLoop {
        var wrong = 0
        switch op {
        case "lru": for i in stream where (try? lru.get(benchKey(UInt64(i)), into: buffer)) != Spec.valueSize { wrong += 1 }
        case "into": for key in streamKeys where ((try? store.bytes(key, into: buffer)) ?? nil ?? 0) < 100 { wrong += 1 }
        case "bytes": for key in streamKeys where storedLength(store, key) < 100 { wrong += 1 }
        case "with": for key in streamKeys where lentLength(store, key) < 100 { wrong += 1 }
        case "hit", "miss": for n in stream.indices where storedID(store, streamKeys[n]) != stream[n] { wrong += 1 }
        case "after": for i in distinct where storedID(store, keys[i]) != i { wrong += 1 }
        case "set": for n in stream.indices where (try? store.set(streamKeys[n], users[n])) == nil { wrong += 1 }
        case "encode":
            let encoder = JSONEncoder()
            for user in users where ((try? encoder.encode(user))?.count ?? 0) < 100 { wrong += 1 }
        case "decode-keep":
            for (n, i) in stream.enumerated() {
                kept[i] = encoded[n].withUnsafeBytes { try? codec.decode(BenchUser.self, from: $0) }
                if kept[i]?.id != i { wrong += 1 }
            }
        case "decode":  // the codec's decode alone, on the bytes `miss` reads back
            for (n, i) in stream.enumerated() {
                let id = encoded[n].withUnsafeBytes { try? codec.decode(BenchUser.self, from: $0).id }
                if id != i { wrong += 1 }
            }
        default: wrong = -1
        }
        return wrong
    }
    let t1 = _monotonicNanoseconds()
    writeAll(1, "\(op) \(capacity): \(fmt(Double(t1 - t0) / Double(ops), 1)) ns/op, wrong \(wrong), L1 \(store.decodedCacheStats)\n")
    return wrong == 0 ? 0 : 1
}
