// `ShmLRUBench memory [--quick]` (run by `make bench` after the policies section):
// the store sized by memory (issue 13), its three targets, each against a figure
// measured in the same run.
//
//   efficiency     a store of `memory` bytes churned by values of log-uniform size
//                  64 B–64 KiB: live key + value bytes (summed by the bench over the
//                  keys the store lists, not taken from the store's own accounting)
//                  over the budget. Target ≥ 75 %.
//   set / get      the churn's set throughput, and random gets of the full store
//                  (hits counted, bytes checked) — reported, no target.
//   1 MiB get      `bytes(key, into:)` of a 1 MiB value as GB/s, against `memcpy` of
//                  1 MiB between two private buffers. Target ≥ 0.5×.
//   small values   `bytes(key, into:)` of 200-byte values from a memory-sized store
//                  and from a record-sized store (the layout before issue 13), each
//                  as a ratio to the lock-free ShmLRU get of the same run. Target: the
//                  memory-sized store's ratio at most 10 % above the record-sized
//                  store's (no slower, within noise).
import CShm
import Glibc
import ShmLRU

func memoryBenchMain(_ arguments: [String]) -> Int32 {
    do {
        try MemoryBench(quick: arguments.contains("--quick")).run()
        return 0
    } catch {
        writeAll(2, "ShmLRUBench memory: \(error)\n")
        return 1
    }
}

struct MemoryBench {
    let quick: Bool
    var runs: Int { quick ? 3 : 5 }

    func progress(_ text: String) { writeAll(2, text + "\n") }

    struct Row {
        var name: String
        var figure: String
        var against: String
        var target: String
        var met: Bool?
    }

    func run() throws {
        var rows: [Row] = []
        rows += try efficiencyAndThroughput()
        rows.append(try largeGet())
        rows += try smallValues()
        var out = "\nShmStore sized by memory (Configuration(memory:)): figures against baselines of the same run.\n\n"
        out += pad("measure", 34) + pad("figure", 24) + pad("against", 54) + "target\n"
        for row in rows {
            out += pad(row.name, 34) + pad(row.figure, 24) + pad(row.against, 54) + row.target
            if let met = row.met { out += met ? " met" : " MISSED" }
            out += "\n"
        }
        print(out)
    }

    // MARK: Memory efficiency, set and get throughput

    /// The value size of key `i`: log-uniform between 64 B and 64 KiB, fixed per key.
    static func valueSize(_ i: Int) -> Int {
        var rng = SplitMix64(seed: 0xA11C_0000 ^ UInt64(i))
        return Int((64.0 * pow(1024.0, rng.unit())).rounded(.down))
    }

    static func key(_ i: Int) -> String { "doc:\(i)" }

    /// A value that names its key: the key index in its first 8 bytes (when it has
    /// 8), then a byte pattern of the index.
    static func fill(_ buffer: UnsafeMutableRawBufferPointer, index i: Int, count: Int) {
        memset(buffer.baseAddress!, Int32(truncatingIfNeeded: i & 0xFF), count)
        if count >= 8 { buffer.storeBytes(of: UInt64(i), toByteOffset: 0, as: UInt64.self) }
    }

    static func looksRight(_ buffer: UnsafeRawBufferPointer, index i: Int, count: Int) -> Bool {
        guard count == valueSize(i) else { return false }
        if count >= 8 { return buffer.loadUnaligned(fromByteOffset: 0, as: UInt64.self) == UInt64(i) }
        return count == 0 || buffer[count - 1] == UInt8(truncatingIfNeeded: i)
    }

    func efficiencyAndThroughput() throws -> [Row] {
        let memory = (quick ? 32 : 128) << 20
        // About 1.1 × memory / 9.4 KB entries fit (the mean of log-uniform 64 B–64 KiB);
        // the key space is four times that, so the churn evicts all along.
        let keySpace = 4 * memory / 9_447
        let churn = 3 * keySpace
        let store = try ShmStore.create(key: freeStoreKey(), configuration: .init(memory: memory))
        defer {
            try? store.remove()
            try? store.detach()
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        defer { buffer.deallocate() }
        progress("memory: churning a \(memory >> 20) MiB store with \(churn) sets over \(keySpace) keys (64 B–64 KiB values)")
        var rng = SplitMix64(seed: 0xE44C)
        let setKeys = (0..<churn).map { _ in Int(rng.below(keySpace)) }
        var setBytes = 0
        let t0 = _monotonicNanoseconds()
        for i in setKeys {
            let size = Self.valueSize(i)
            Self.fill(buffer, index: i, count: size)
            try store.set(Self.key(i), bytes: UnsafeRawBufferPointer(rebasing: buffer[0..<size]))
            setBytes += size
        }
        let setNanoseconds = Double(_monotonicNanoseconds() - t0)

        // Live bytes, summed from what the store lists (each value read back and checked).
        var live = 0
        var wrong = 0
        for key in try store.keys() {
            guard key.hasPrefix("doc:"), let i = Int(key.dropFirst(4)) else {
                wrong += 1
                continue
            }
            guard let count = try store.bytes(key, into: buffer) else { continue }
            if !Self.looksRight(UnsafeRawBufferPointer(buffer), index: i, count: count) { wrong += 1 }
            live += key.utf8.count + count
        }
        let efficiency = Double(live) / Double(memory)
        let usage = try store.memoryUsage()
        let report = try store.verify()

        // Gets of the full store: random keys of the key space (hits and misses).
        let getKeys = (0..<(quick ? 100_000 : 400_000)).map { _ in Int(rng.below(keySpace)) }
        var samples: [Double] = []
        var hits = 0
        var hitBytes = 0
        for _ in 0..<runs {
            hits = 0
            hitBytes = 0
            let t = _monotonicNanoseconds()
            for i in getKeys {
                if let count = try store.bytes(Self.key(i), into: buffer) {
                    hits += 1
                    hitBytes += count
                    if !Self.looksRight(UnsafeRawBufferPointer(buffer), index: i, count: count) { wrong += 1 }
                }
            }
            samples.append(Double(_monotonicNanoseconds() - t) / Double(getKeys.count))
        }
        let getMedian = median(samples)
        var rows = [
            Row(
                name: "memory efficiency", figure: fmt(efficiency * 100, 1) + " % live",
                against: "\(live >> 20) MiB key+value in \(memory >> 20) MiB (store says " + fmt(usage.efficiency * 100, 1) + " %)", target: "≥ 75 %", met: efficiency >= 0.75),
            Row(
                name: "set 64 B–64 KiB (churning)", figure: fmt(setNanoseconds / Double(churn), 0) + " ns/op",
                against: fmt(Double(setBytes) / setNanoseconds, 2) + " GB/s of values written", target: ""),
            Row(
                name: "get 64 B–64 KiB (full store)", figure: fmt(getMedian, 0) + " ns/op",
                against: "hit ratio " + fmt(Double(hits) / Double(getKeys.count), 2) + ", "
                    + fmt(Double(hitBytes) / (getMedian * Double(getKeys.count)), 2) + " GB/s of hits", target: ""),
        ]
        if wrong > 0 || !report.isClean {
            rows.append(Row(name: "WRONG VALUES / VERIFY", figure: "\(wrong)", against: "\(report.problems.prefix(3))", target: "0", met: false))
        }
        return rows
    }

    // MARK: A 1 MiB value against memcpy

    func largeGet() throws -> Row {
        let size = 1 << 20
        let store = try ShmStore.create(key: freeStoreKey(), configuration: .init(memory: 8 << 20, maxValueSize: size))
        defer {
            try? store.remove()
            try? store.detach()
        }
        let source = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64)
        let destination = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64)
        defer {
            source.deallocate()
            destination.deallocate()
        }
        for i in 0..<size { source[i] = UInt8(truncatingIfNeeded: i &* 31 &+ i >> 9) }
        memset(destination.baseAddress!, 1, size)
        try store.set("big", bytes: UnsafeRawBufferPointer(source))
        let rounds = quick ? 300 : 1_000
        progress("memory: \(rounds) gets of a 1 MiB value and \(rounds) memcpy of 1 MiB, \(runs) runs")
        var copy: [Double] = []
        var get: [Double] = []
        var wrong = 0
        for _ in 0..<runs {
            var t = _monotonicNanoseconds()
            for _ in 0..<rounds { memcpy(destination.baseAddress!, source.baseAddress!, size) }
            copy.append(Double(size * rounds) / Double(_monotonicNanoseconds() - t))
            if memcmp(destination.baseAddress!, source.baseAddress!, size) != 0 { wrong += 1 }
            memset(destination.baseAddress!, 0, size)
            t = _monotonicNanoseconds()
            for _ in 0..<rounds where try store.bytes("big", into: destination) != size { wrong += 1 }
            get.append(Double(size * rounds) / Double(_monotonicNanoseconds() - t))
            if memcmp(destination.baseAddress!, source.baseAddress!, size) != 0 { wrong += 1 }
        }
        let ratio = median(get) / median(copy)
        return Row(
            name: "get of a 1 MiB value", figure: fmt(median(get), 2) + " GB/s = " + fmt(ratio, 2) + "×",
            against: "memcpy 1 MiB " + fmt(median(copy), 2) + " GB/s" + (wrong > 0 ? " WRONG BYTES: \(wrong)" : ""),
            target: "≥ 0.5×", met: ratio >= 0.5 && wrong == 0)
    }

    // MARK: Small values: no slower than the record-sized store

    func smallValues() throws -> [Row] {
        let capacity = 10_000
        let valueSize = 200
        let ops = quick ? 200_000 : 1_000_000
        progress("memory: 200-byte values, \(capacity) keys: memory-sized store, record-sized store, ShmLRU get")
        let lru = try ShmLRU.create(recordSize: StoreSpec.lruRecordSize, capacity: capacity, options: .init(promotion: .atMostEvery(.seconds(1))))
        let records = try ShmStore.create(
            key: freeStoreKey(), configuration: .init(capacity: capacity, recordSize: StoreSpec.recordSize, lockSlots: 16, lockWaiters: 16, changeLogCapacity: 16))
        let sized = try ShmStore.create(
            key: freeStoreKey(), configuration: .init(memory: 16 << 20, expectedEntries: capacity, lockSlots: 16, lockWaiters: 16, changeLogCapacity: 16))
        defer {
            try? lru.region.remove()
            _ = try? lru.detach()
            for store in [records, sized] {
                try? store.remove()
                try? store.detach()
            }
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
        defer { buffer.deallocate() }
        let keys = (0..<capacity).map(StoreSpec.key)
        for i in 0..<capacity {
            Self.fill(buffer, index: i, count: valueSize)
            let value = UnsafeRawBufferPointer(rebasing: buffer[0..<valueSize])
            try records.set(keys[i], bytes: value)
            try sized.set(keys[i], bytes: value)
            _ = try lru.set(benchKey(UInt64(i)), bytes: value)
        }
        var rng = SplitMix64(seed: 0x5A11)
        let stream = (0..<ops).map { _ in Int(rng.below(capacity)) }
        var base: [Double] = [], old: [Double] = [], new: [Double] = []
        var wrong = 0
        for _ in 0..<runs {
            var t = _monotonicNanoseconds()
            for i in stream where (try? lru.get(benchKey(UInt64(i)), into: buffer)) != valueSize { wrong += 1 }
            base.append(Double(_monotonicNanoseconds() - t) / Double(ops))
            t = _monotonicNanoseconds()
            for i in stream where ((try? records.bytes(keys[i], into: buffer)) ?? nil) != valueSize { wrong += 1 }
            old.append(Double(_monotonicNanoseconds() - t) / Double(ops))
            t = _monotonicNanoseconds()
            for i in stream where ((try? sized.bytes(keys[i], into: buffer)) ?? nil) != valueSize { wrong += 1 }
            new.append(Double(_monotonicNanoseconds() - t) / Double(ops))
        }
        let baseline = median(base)
        let oldRatio = median(old) / baseline
        let newRatio = median(new) / baseline
        let note = wrong > 0 ? " WRONG: \(wrong)" : ""
        return [
            Row(
                name: "200 B get, record-sized store", figure: fmt(median(old), 1) + " ns = " + fmt(oldRatio, 2) + "×",
                against: "ShmLRU get (lock-free) " + fmt(baseline, 1) + " ns" + note, target: ""),
            Row(
                name: "200 B get, memory-sized store", figure: fmt(median(new), 1) + " ns = " + fmt(newRatio, 2) + "×",
                against: "ShmLRU get; record-sized store " + fmt(oldRatio, 2) + "×" + note,
                target: "≤ " + fmt(oldRatio * 1.1, 2) + "×", met: newRatio <= oldRatio * 1.1 && wrong == 0),
        ]
    }

    func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
}
