// The core-speed section (issue 18): per capacity, the get-hit stream on the
// floor, exact and lock-free gets, batched gets (per key), and at 1M the same on
// huge pages; then the issue's targets, each marked met or missed. Every store
// gets one untimed warm-up pass (page tables, TLB, caches), then the runs are
// interleaved store by store, so a slow period of the machine hits every store
// alike; the figure is the median. Figures go to $BENCH_CORE_JSON (default
// bench-core-results.json); peers' figures are read from $BENCH_PEERS_JSON
// (default bench-peers.json, written by `make bench-peers`) when present.
import CShm
import Glibc
import ShmLRU

struct CoreFigure: Sendable {
    var name: String
    var capacity: Int
    var hugePages: Bool
    var samples: [Double]  // ns per get (per key for batches), one per run
    var median: Double { samples.isEmpty ? .nan : samples.sorted()[samples.count / 2] }
    var spread: Double { samples.isEmpty ? .nan : ((samples.max()! - samples.min()!) / median) }
}

/// Keys per batched call in the bench.
let coreBatchSize = 64

/// The floor, read through the same batch shape (a slot per key), for reference.
struct CoreSection {
    let config: BenchConfig
    var figures: [CoreFigure] = []
    var notes: [String] = []
    let value = ValueBuffer()

    init(config: BenchConfig) { self.config = config }

    static var jsonPath: String { getenv("BENCH_CORE_JSON").map { String(cString: $0) } ?? "bench-core-results.json" }

    func progress(_ text: String) { writeAll(2, text + "\n") }

    mutating func run() throws {
        for capacity in config.capacities { try runCapacity(capacity) }
    }

    mutating func runCapacity(_ capacity: Int) throws {
        let ops = config.ops(capacity)
        progress("core speed, capacity \(capacity): floor, exact, lock-free and batched gets")
        let stores = try CoreStores(capacity: capacity, hugePages: false, intervalNanoseconds: config.intervalNanoseconds, value: value)
        defer { stores.remove() }
        var huge: CoreStores? = nil
        var reservation: HugePageReservation? = nil
        if capacity >= 1_000_000 {
            let pages = CoreStores.hugePagesNeeded(capacity: capacity)
            reservation = HugePageReservation(pages: pages)
            do {
                huge = try CoreStores(capacity: capacity, hugePages: true, intervalNanoseconds: config.intervalNanoseconds, value: value)
            } catch {
                notes.append("huge pages at \(fmtCapacity(capacity)): not measured (\(error))")
            }
        }
        defer {
            huge?.remove()
            reservation?.release()
        }
        if let reservation { notes.append(reservation.description) }

        var all: [(String, Bool, (KeyStream) -> Double)] = []
        func add(_ s: CoreStores, _ huge: Bool) {
            all.append(("floor", huge, { s.floorGets($0) }))
            all.append(("exact get", huge, { s.gets(s.exact, $0) }))
            all.append(("lock-free get", huge, { s.gets(s.interval, $0) }))
            all.append(("exact batched get", huge, { s.batchedGets(s.exact, $0) }))
            all.append(("lock-free batched get", huge, { s.batchedGets(s.interval, $0) }))
        }
        add(stores, false)
        if let huge { add(huge, true) }

        var samples = [[Double]](repeating: [], count: all.count)
        let warm = KeyStream.make(.getHit, capacity: capacity, ops: ops, seed: 0xC0DE, zipf: nil)
        for entry in all { _ = entry.2(warm) }
        for run in 0..<config.runs {
            let stream = KeyStream.make(.getHit, capacity: capacity, ops: ops, seed: 0xC0DE_0000 &+ UInt64(run), zipf: nil)
            for (i, entry) in all.enumerated() { samples[i].append(entry.2(stream)) }
        }
        for (i, entry) in all.enumerated() {
            figures.append(CoreFigure(name: entry.0, capacity: capacity, hugePages: entry.1, samples: samples[i]))
        }
        stores.checkErrors(&notes)
        huge?.checkErrors(&notes)
    }

    func figure(_ name: String, _ capacity: Int, huge: Bool = false) -> CoreFigure? {
        figures.first { $0.name == name && $0.capacity == capacity && $0.hugePages == huge }
    }

    /// The section's table and the targets. `cells`: the main table's (for two-process gets).
    func table(cells: [Cell]) -> String {
        var out = "\nCore speed (issue 18): get-hit, ns per get (per key for batches of \(coreBatchSize)), median of \(config.runs) interleaved runs after a warm-up; spread = (max − min) / median.\n\n"
        out += pad("cap", 5) + pad("pages", 7) + pad("store", 24) + pad("median", 9, right: true) + pad("spread", 9, right: true)
            + pad("×floor", 9, right: true) + "\n"
        for f in figures {
            let floor = figure("floor", f.capacity)?.median ?? .nan
            out += pad(fmtCapacity(f.capacity), 5) + pad(f.hugePages ? "2 MiB" : "4 KiB", 7) + pad(f.name, 24)
                + pad(fmt(f.median, 1), 9, right: true) + pad(fmt(f.spread * 100, 0) + " %", 9, right: true)
                + pad(fmt(f.median / floor, 2), 9, right: true) + "\n"
        }
        for note in notes { out += "note: \(note)\n" }
        out += "\nTargets (issue 18; ratios to the 4 KiB floor of this run):\n"
        for target in targets(cells: cells) { out += "  [\(target.met.map { $0 ? "met" : "missed" } ?? "not measured")] \(target.text)\n" }
        return out
    }

    struct TargetLine {
        var text: String
        var met: Bool?
    }

    func targets(cells: [Cell]) -> [TargetLine] {
        var lines: [TargetLine] = []
        func ratio(_ name: String, _ capacity: Int, huge: Bool = false) -> Double? {
            guard let f = figure(name, capacity, huge: huge), let floor = figure("floor", capacity) else { return nil }
            return f.median / floor.median
        }
        for (capacity, limit) in [(10_000, 4.0), (1_000_000, 5.0)] {
            let r = ratio("exact get", capacity)
            lines.append(
                TargetLine(
                    text: "exact get ≤ \(fmt(limit, 0))× floor at \(fmtCapacity(capacity)): \(r.map { fmt($0, 2) + "×" } ?? "-")",
                    met: r.map { $0 <= limit }))
        }
        let peers = PeerFigures.load()
        for capacity in config.capacities {
            let mine = cells.first { $0.workload == .getHit && $0.capacity == capacity && $0.processes == 2 && $0.store == .lruExact }
            let boost = peers?.twoProcessGets(store: "boost-interprocess", capacity: capacity)
            var text = "exact two-process gets ≥ Boost.Interprocess's at \(fmtCapacity(capacity)): "
            text += mine.map { fmtRate($0.median) } ?? "-"
            text += " vs " + (boost.map { fmtRate($0) + " (bench-peers, same machine)" } ?? "no peer figures (run make bench-peers first)")
            lines.append(TargetLine(text: text, met: mine.flatMap { m in boost.map { m.median >= $0 } }))
        }
        let huge = ratio("lock-free get", 1_000_000, huge: true)
        lines.append(
            TargetLine(
                text: "lock-free get at 1M on huge pages ≤ 3× floor: \(huge.map { fmt($0, 2) + "×" } ?? "-")", met: huge.map { $0 <= 3 }))
        for name in ["lock-free batched get", "exact batched get"] {
            let r = ratio(name, 1_000_000)
            lines.append(TargetLine(text: "\(name) at 1M ≤ 2× floor per key: \(r.map { fmt($0, 2) + "×" } ?? "-")", met: r.map { $0 <= 2 }))
        }
        return lines
    }

    func json(cells: [Cell]) -> String {
        var items: [String] = []
        for f in figures {
            let floor = figure("floor", f.capacity)?.median ?? 0
            items.append(
                "{\"store\":\"\(f.name)\",\"capacity\":\(f.capacity),\"hugePages\":\(f.hugePages),\"nsPerGet\":{\"median\":\(fmt(f.median, 2)),"
                    + "\"min\":\(fmt(f.samples.min() ?? 0, 2)),\"max\":\(fmt(f.samples.max() ?? 0, 2))},\"floorMedian\":\(fmt(floor, 2))}")
        }
        let targets = targets(cells: cells).map {
            "{\"target\":\"\($0.text.replacing("\"", with: "'"))\",\"met\":\($0.met.map { $0 ? "true" : "false" } ?? "null")}"
        }
        return "{\"figures\":[\n" + items.joined(separator: ",\n") + "\n],\"targets\":[\n" + targets.joined(separator: ",\n") + "\n]}\n"
    }
}

/// The section's stores at one capacity: a floor array and two caches, preloaded.
struct CoreStores {
    let floorRegion: ShmRegion
    let exact: ShmLRU
    let interval: ShmLRU
    var errors = 0

    static func hugePagesNeeded(capacity: Int) -> Int {
        let page = ShmRegion.hugePageSize
        let cache = (capacity * (Spec.recordSize + 40) + 8 * capacity + (4 << 20)) / page + 2
        return capacity * Spec.recordSize / page + 1 + 2 * cache
    }

    init(capacity: Int, hugePages: Bool, intervalNanoseconds: Int64, value: ValueBuffer) throws {
        floorRegion = try ShmRegion.create(byteCount: capacity * Spec.recordSize, hugePages: hugePages)
        do {
            exact = try ShmLRU.create(
                recordSize: Spec.recordSize, capacity: capacity,
                options: lruOptions(.lruExact, intervalNanoseconds: intervalNanoseconds), hugePages: hugePages)
        } catch {
            try? floorRegion.remove()
            throw error
        }
        do {
            interval = try ShmLRU.create(
                recordSize: Spec.recordSize, capacity: capacity,
                options: lruOptions(.lruInterval, intervalNanoseconds: intervalNanoseconds), hugePages: hugePages)
        } catch {
            try? floorRegion.remove()
            try? exact.region.remove()
            throw error
        }
        _ = try LRUStore.preload(exact, capacity: capacity, value: value)
        _ = try LRUStore.preload(interval, capacity: capacity, value: value)
        try floorRegion.withUnsafeMutableBytes { FloorStore.preload(base: $0.baseAddress!, capacity: capacity, value: value) }
    }

    func remove() {
        for region in [floorRegion, exact.region, interval.region] {
            try? region.remove()
            _ = try? region.detach()
        }
    }

    func checkErrors(_ notes: inout [String]) {
        if errors > 0 { notes.append("WRONG VALUES: \(errors)") }
    }

    func floorGets(_ stream: KeyStream) -> Double {
        var version: UInt64 = 0
        return (try? floorRegion.withUnsafeMutableBytes { bytes -> Double in
            var floor = FloorStore(base: bytes.baseAddress!)
            let r = runLoop(&floor, .getHit, stream, value: ValueBuffer(), version: &version)
            return Double(r.nanoseconds) / Double(r.ops)
        }) ?? .nan
    }

    func gets(_ cache: ShmLRU, _ stream: KeyStream) -> Double {
        var version: UInt64 = 0
        var store = LRUStore(cache: cache)
        let r = runLoop(&store, .getHit, stream, value: ValueBuffer(), version: &version)
        return r.errors == 0 ? Double(r.nanoseconds) / Double(r.ops) : .nan
    }

    /// The stream in batches of `coreBatchSize` keys; every value's key checked.
    func batchedGets(_ cache: ShmLRU, _ stream: KeyStream) -> Double {
        runBatchedLoop(cache, stream)
    }
}

@inline(never)
func runBatchedLoop(_ cache: ShmLRU, _ stream: KeyStream) -> Double {
    let stride = Spec.recordSize
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: coreBatchSize * stride, alignment: 64)
    let lengths = UnsafeMutableBufferPointer<Int>.allocate(capacity: coreBatchSize)
    defer {
        buffer.deallocate()
        lengths.deallocate()
    }
    var errors = 0
    let start = _monotonicNanoseconds()
    stream.keys.withUnsafeBufferPointer { keys in
        var i = 0
        while i < keys.count {
            let n = min(coreBatchSize, keys.count - i)
            let part = UnsafeBufferPointer(rebasing: keys[i..<(i + n)])
            do {
                let hits = try cache.get(part, into: buffer, stride: stride, lengths: lengths)
                if hits != n { errors += n - hits }
                for j in 0..<n where lengths[j] != Spec.valueSize || valueKey(buffer.baseAddress! + j * stride) != part[j] { errors += 1 }
            } catch {
                errors += n
            }
            i += n
        }
    }
    let end = _monotonicNanoseconds()
    return errors == 0 ? Double(end - start) / Double(stream.count) : .nan
}

/// Huge pages reserved for the bench's own run (as root), released after: the
/// pool grows by what the section needs and goes back to its size before.
struct HugePageReservation: CustomStringConvertible {
    let before: Int
    let reserved: Bool
    let pages: Int

    static let path = "/proc/sys/vm/nr_hugepages"

    init(pages: Int) {
        self.pages = pages
        before = HugePageReservation.read() ?? 0
        if ShmRegion.hugePagesFree >= pages {
            reserved = false
        } else if getuid() == 0, HugePageReservation.write(before + pages - ShmRegion.hugePagesFree) {
            reserved = true
        } else {
            reserved = false
        }
    }

    func release() {
        if reserved { _ = HugePageReservation.write(before) }
    }

    var description: String {
        reserved
            ? "huge pages: reserved \(pages) x \(ShmRegion.hugePageSize >> 20) MiB for this run (nr_hugepages \(before) → back to \(before) after)"
            : "huge pages: \(ShmRegion.hugePagesFree) free of \(HugePageReservation.read() ?? 0) reserved (\(pages) wanted; root reserves them)"
    }

    static func read() -> Int? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var number: Int = 0
        return fscanf_int(file, &number) ? number : nil
    }

    static func write(_ pages: Int) -> Bool {
        guard let file = fopen(path, "w") else { return false }
        let text = "\(pages)\n"
        let ok = fputs(text, file) >= 0
        return fclose(file) == 0 && ok
    }
}

private func fscanf_int(_ file: UnsafeMutablePointer<FILE>, _ out: inout Int) -> Bool {
    var line = [CChar](repeating: 0, count: 64)
    guard fgets(&line, 64, file) != nil else { return false }
    let text = String(decoding: line.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    guard let n = Int(text) else { return false }
    out = n
    return true
}

/// Figures of the peers (`make bench-peers`), when their JSON file is there:
/// one object per line, {"store":…,"capacity":…,"processes":…,"median":…}.
struct PeerFigures {
    var lines: [String]

    static var path: String { getenv("BENCH_PEERS_JSON").map { String(cString: $0) } ?? "bench-peers.json" }

    static func load() -> PeerFigures? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var lines: [String] = []
        var buffer = [CChar](repeating: 0, count: 1024)
        while fgets(&buffer, 1024, file) != nil {
            lines.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return PeerFigures(lines: lines)
    }

    /// A number field of one line ("\"median\":12.5" -> 12.5).
    static func field(_ line: String, _ name: String) -> String? {
        guard let range = line.firstRange(of: "\"\(name)\":") else { return nil }
        let rest = line[range.upperBound...].drop { $0 == " " || $0 == "\"" }
        return String(rest.prefix { $0 != "," && $0 != "}" && $0 != "\"" })
    }

    func figure(store: String, workload: String, capacity: Int, processes: Int) -> Double? {
        for line in lines
        where PeerFigures.field(line, "store") == store && PeerFigures.field(line, "workload") == workload
            && PeerFigures.field(line, "capacity") == String(capacity) && PeerFigures.field(line, "processes") == String(processes)
        {
            return PeerFigures.field(line, "median").flatMap(Double.init)
        }
        return nil
    }

    func twoProcessGets(store: String, capacity: Int) -> Double? {
        figure(store: store, workload: "get-hit", capacity: capacity, processes: 2)
    }

    /// Every peer figure, for printing beside ShmLRU's.
    func table() -> String {
        var out = "\nPeers (make bench-peers, \(PeerFigures.path)): one process ns/op, two processes total ops/s\n"
        for line in lines where PeerFigures.field(line, "store") != nil {
            let store = PeerFigures.field(line, "store") ?? "?"
            let workload = PeerFigures.field(line, "workload") ?? "?"
            let capacity = PeerFigures.field(line, "capacity").flatMap(Int.init) ?? 0
            let processes = PeerFigures.field(line, "processes") ?? "?"
            let median = PeerFigures.field(line, "median").flatMap(Double.init) ?? .nan
            out += "  " + pad(store, 22) + pad(workload, 18) + pad(fmtCapacity(capacity), 5) + pad(processes, 3)
                + pad(processes == "1" ? fmt(median, 1) + " ns" : fmtRate(median), 12, right: true) + "\n"
        }
        return out
    }
}
