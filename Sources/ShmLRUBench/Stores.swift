// The stores the workload runs on: the floor, the in-process Dictionary index
// over the same flat array, and ShmLRU in its two promotion modes. Each exposes
// the three operations of the timed loops; the loops (Loops.swift) are generic
// over them and specialised per store, so a store costs only its own work.
import Glibc
import ShmLRU

/// What the timed loops call. `index` is the record index (the floor's slot),
/// `key` the record's key; a get copies the value into `buffer`.
protocol BenchStore {
    mutating func get(_ index: UInt32, _ key: UInt32, into buffer: UnsafeMutableRawPointer) -> Bool
    mutating func update(_ index: UInt32, _ key: UInt32, _ value: UnsafeRawPointer) -> Bool
    mutating func insert(_ index: UInt32, _ key: UInt32, _ value: UnsafeRawPointer) -> Bool
}

/// The stores of every cell, in table order.
enum StoreKind: String, CaseIterable, Sendable {
    case floor
    case dictionary
    case lruExact = "shmlru-exact"
    case lruInterval = "shmlru-interval"

    var title: String {
        switch self {
        case .floor: "floor (direct-indexed shm array)"
        case .dictionary: "Dictionary<UInt32, Int> + shm array"
        case .lruExact: "ShmLRU exact LRU (.onEveryRead)"
        case .lruInterval: "ShmLRU interval (.atMostEvery)"
        }
    }
    var short: String {
        switch self {
        case .floor: "floor"
        case .dictionary: "dictionary"
        case .lruExact: "shmlru exact"
        case .lruInterval: "shmlru interval"
        }
    }
}

/// (a) The floor: a direct-indexed array of 250-byte slots in a shared segment
/// (slot = record index, no lookup); every operation is the 200-byte copy.
struct FloorStore: BenchStore {
    let base: UnsafeMutableRawPointer

    @inline(__always) func slot(_ index: UInt32) -> UnsafeMutableRawPointer { base + Int(index) &* Spec.recordSize }

    @inline(__always)
    func get(_ index: UInt32, _ key: UInt32, into buffer: UnsafeMutableRawPointer) -> Bool {
        buffer.copyMemory(from: slot(index), byteCount: Spec.valueSize)
        return true
    }
    @inline(__always)
    func update(_ index: UInt32, _ key: UInt32, _ value: UnsafeRawPointer) -> Bool {
        slot(index).copyMemory(from: value, byteCount: Spec.valueSize)
        return true
    }
    @inline(__always)
    func insert(_ index: UInt32, _ key: UInt32, _ value: UnsafeRawPointer) -> Bool {
        slot(index).copyMemory(from: value, byteCount: Spec.valueSize)
        return true
    }

    /// Writes record `i`'s value into slot `i`, for every record.
    static func preload(base: UnsafeMutableRawPointer, capacity: Int, value: ValueBuffer) {
        for i in 0..<capacity {
            value.stamp(version: 0, key: benchKey(UInt64(i)))
            (base + i * Spec.recordSize).copyMemory(from: value.pointer, byteCount: Spec.valueSize)
        }
    }
}

/// (b) An in-process `Dictionary<UInt32, Int>` index (key -> slot) over the same
/// flat array. Inserts reuse slots first-in first-out (slot = g mod N: the array
/// has no LRU order), dropping the slot's previous key from the index.
struct DictionaryStore: BenchStore {
    let base: UnsafeMutableRawPointer
    var index: [UInt32: Int]
    /// The key each slot holds (to drop it from the index on reuse).
    var slotKeys: [UInt32]

    init(base: UnsafeMutableRawPointer, capacity: Int) {
        self.base = base
        var index = [UInt32: Int](minimumCapacity: capacity)
        var slotKeys = [UInt32](repeating: 0, count: capacity)
        for i in 0..<capacity {
            let key = benchKey(UInt64(i))
            index[key] = i
            slotKeys[i] = key
        }
        self.index = index
        self.slotKeys = slotKeys
    }

    @inline(__always)
    func get(_ i: UInt32, _ key: UInt32, into buffer: UnsafeMutableRawPointer) -> Bool {
        guard let slot = index[key] else { return false }
        buffer.copyMemory(from: base + slot &* Spec.recordSize, byteCount: Spec.valueSize)
        return true
    }
    @inline(__always)
    func update(_ i: UInt32, _ key: UInt32, _ value: UnsafeRawPointer) -> Bool {
        guard let slot = index[key] else { return false }
        (base + slot &* Spec.recordSize).copyMemory(from: value, byteCount: Spec.valueSize)
        return true
    }
    @inline(__always)
    mutating func insert(_ i: UInt32, _ key: UInt32, _ value: UnsafeRawPointer) -> Bool {
        let slot = Int(i)
        index.removeValue(forKey: slotKeys[slot])
        index[key] = slot
        slotKeys[slot] = key
        (base + slot &* Spec.recordSize).copyMemory(from: value, byteCount: Spec.valueSize)
        return true
    }
}

/// ShmLRU through its public API, as a user calls it.
struct LRUStore: BenchStore {
    let cache: ShmLRU
    let capacity = Spec.recordSize

    @inline(__always)
    func get(_ index: UInt32, _ key: UInt32, into buffer: UnsafeMutableRawPointer) -> Bool {
        do {
            return try cache.get(key, into: UnsafeMutableRawBufferPointer(start: buffer, count: capacity)) == Spec.valueSize
        } catch {
            return false
        }
    }
    @inline(__always)
    func update(_ index: UInt32, _ key: UInt32, _ value: UnsafeRawPointer) -> Bool {
        do {
            return try cache.set(key, bytes: UnsafeRawBufferPointer(start: value, count: Spec.valueSize)).updated
        } catch {
            return false
        }
    }
    @inline(__always)
    func insert(_ index: UInt32, _ key: UInt32, _ value: UnsafeRawPointer) -> Bool {
        do {
            let result = try cache.set(key, bytes: UnsafeRawBufferPointer(start: value, count: Spec.valueSize))
            return !result.updated && result.evictedHash != nil
        } catch {
            return false
        }
    }

    /// Inserts records `0..<capacity`; returns the offset of the first (the start of the records).
    static func preload(_ cache: ShmLRU, capacity: Int, value: ValueBuffer) throws(ShmError) -> Int {
        var first = 0
        for i in 0..<capacity {
            let key = benchKey(UInt64(i))
            value.stamp(version: 0, key: key)
            let result = try cache.set(key, bytes: UnsafeRawBufferPointer(start: value.pointer, count: Spec.valueSize))
            if i == 0 { first = result.offset }
        }
        return first
    }
}

/// ShmLRU's options for a store kind.
func lruOptions(_ kind: StoreKind, intervalNanoseconds: Int64) -> ShmLRU.Options {
    var options = ShmLRU.Options()
    if kind == .lruInterval { options.promotion = .atMostEvery(.nanoseconds(intervalNanoseconds)) }
    // PROFILE_POLICY (profile only): the eviction policy, for a profiler's count of its hit path.
    if let name = getenv("PROFILE_POLICY").map({ String(cString: $0) }) { options.policy = ShmLRU.EvictionPolicy(rawValue: name) }
    return options
}
