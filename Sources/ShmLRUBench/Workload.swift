// The fixed workload of WORKLOAD.md: keys, values, key and operation streams.
// Everything here runs before a timer starts.
import Glibc
import ShmLRU

/// The four workloads, timed separately and in this order.
enum Workload: String, CaseIterable, Sendable {
    case getHit = "get-hit"
    case setUpdate = "set-update"
    case mixed = "mixed-90-10-zipf"
    case insertEvict = "set-insert-evict"
}

enum Spec {
    /// Bytes of payload per record in the cache's own layout (and per floor slot).
    static let recordSize = 250
    /// Bytes per value.
    static let valueSize = 200
    /// Zipf skew of the mixed workload.
    static let zipfTheta = 0.99
    /// Longest key stream generated; longer runs would replay it.
    static let maxStream = 2_000_000
}

/// The key of record index `i` (a bijection: keys are distinct and scattered by
/// the murmur3 finalizer, the index's own `_mix32`).
@inline(__always)
func benchKey(_ index: UInt64) -> UInt32 { _mix32(UInt32(truncatingIfNeeded: index) ^ 0x9e37_79b9) }

/// SplitMix64: small, fast, and good enough to draw key indices.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
    /// Uniform in [0, n) (Lemire's multiply-shift; the bias is below 2^-32 n).
    mutating func below(_ n: Int) -> UInt32 {
        UInt32((UInt64(UInt32(truncatingIfNeeded: next() >> 32)) &* UInt64(n)) >> 32)
    }
    /// Uniform in [0, 1).
    mutating func unit() -> Double { Double(next() >> 11) * 0x1p-53 }
}

/// The YCSB Zipfian generator (Gray et al., "Quickly generating billion-record
/// synthetic databases"): rank 0 is the most popular.
struct Zipf {
    let n: Int
    let theta: Double
    let zetaN: Double
    let alpha: Double
    let eta: Double
    let halfPowTheta: Double

    init(n: Int, theta: Double) {
        self.n = n
        self.theta = theta
        var zeta = 0.0
        for i in 1...n { zeta += 1.0 / pow(Double(i), theta) }
        zetaN = zeta
        let zeta2 = 1.0 + pow(0.5, theta)
        alpha = 1.0 / (1.0 - theta)
        eta = (1.0 - pow(2.0 / Double(n), 1.0 - theta)) / (1.0 - zeta2 / zeta)
        halfPowTheta = pow(0.5, theta)
    }

    func next(_ rng: inout SplitMix64) -> UInt32 {
        let u = rng.unit()
        let uz = u * zetaN
        if uz < 1.0 { return 0 }
        if uz < 1.0 + halfPowTheta { return 1 }
        let rank = Int(Double(n) * pow(eta * u - eta + 1.0, alpha))
        return UInt32(min(max(rank, 0), n - 1))
    }
}

/// A key stream: for each operation the record index (what the floor uses), the
/// key (what the caches use) and, for the mixed workload, whether it is a set.
struct KeyStream: Sendable {
    var indices: [UInt32]
    var keys: [UInt32]
    /// 1 = set, 0 = get (mixed workload only; empty otherwise).
    var isSet: [UInt8]
    var count: Int { keys.count }

    /// The stream one process runs.
    /// - Parameters:
    ///   - seed: the process's (and run's) seed, for workloads 1–3.
    ///   - insertBase, insertStep, insertPhase: workload 4 inserts `key(N + g)` with
    ///     `g = insertBase + insertStep * i + insertPhase` (step 2 and phase p in two processes).
    static func make(
        _ workload: Workload, capacity: Int, ops: Int, seed: UInt64, zipf: Zipf?,
        insertBase: UInt64 = 0, insertStep: UInt64 = 1, insertPhase: UInt64 = 0
    ) -> KeyStream {
        let count = min(ops, Spec.maxStream)
        var rng = SplitMix64(seed: seed)
        var indices = [UInt32](repeating: 0, count: count)
        var keys = [UInt32](repeating: 0, count: count)
        var isSet: [UInt8] = []
        switch workload {
        case .getHit, .setUpdate:
            for i in 0..<count {
                let index = rng.below(capacity)
                indices[i] = index
                keys[i] = benchKey(UInt64(index))
            }
        case .mixed:
            let zipf = zipf ?? Zipf(n: capacity, theta: Spec.zipfTheta)
            isSet = [UInt8](repeating: 0, count: count)
            for i in 0..<count {
                let index = zipf.next(&rng)
                indices[i] = index
                keys[i] = benchKey(UInt64(index))
                isSet[i] = rng.below(10) == 0 ? 1 : 0
            }
        case .insertEvict:
            let n = UInt64(capacity)
            for i in 0..<count {
                let g = insertBase &+ insertStep &* UInt64(i) &+ insertPhase
                indices[i] = UInt32(g % n)  // the floor's slot: record index N + g, direct-indexed
                keys[i] = benchKey(n &+ g)
            }
        }
        return KeyStream(indices: indices, keys: keys, isSet: isSet)
    }
}

/// The seed of one process's stream in one run (the same for every store, so
/// every store replays the same keys).
func streamSeed(workload: Workload, capacity: Int, run: Int, process: Int) -> UInt64 {
    let w = UInt64(Workload.allCases.firstIndex(of: workload)!)
    return 0x5EED_0000_0000 &+ UInt64(capacity) &* 1_000_003 &+ w &* 10_007 &+ UInt64(run) &* 101 &+ UInt64(process)
}

/// A 200-byte value: bytes 0..7 a version counter, 8..11 the key, the rest a pattern.
struct ValueBuffer {
    let pointer: UnsafeMutableRawPointer

    init() {
        pointer = UnsafeMutableRawPointer.allocate(byteCount: Spec.recordSize, alignment: 16)
        for i in 0..<Spec.recordSize { pointer.storeBytes(of: UInt8(truncatingIfNeeded: i &* 7 &+ 1), toByteOffset: i, as: UInt8.self) }
    }

    func free() { pointer.deallocate() }

    @inline(__always) func stamp(version: UInt64, key: UInt32) {
        pointer.storeBytes(of: version, toByteOffset: 0, as: UInt64.self)
        pointer.storeBytes(of: key, toByteOffset: 8, as: UInt32.self)
    }
}

/// The check on every get: the value carries the asked key.
@inline(__always)
func valueKey(_ buffer: UnsafeRawPointer) -> UInt32 { buffer.loadUnaligned(fromByteOffset: 8, as: UInt32.self) }
