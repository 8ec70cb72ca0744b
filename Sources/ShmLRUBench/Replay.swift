// `ShmLRUBench replay --trace FILE --capacity N --policy NAME`: replays a trace
// of little-endian UInt32 keys through a fresh ShmLRU with get-or-set (a miss
// sets the key) and prints `policy=NAME capacity=N requests=R missRatio=0.12345`.
// `ShmLRUBench replay --list-policies` prints the policy names, one a line.
import Glibc
import ShmLRU

/// A policy as the replay tool and the miss-ratio section name it.
enum ReplayPolicy: String, CaseIterable, Sendable {
    /// Exact LRU (`.lru`, `.onEveryRead`).
    case lru
    /// Today's interval mode: LRU with lock-free marks and second chances (`.atMostEvery`).
    case clock
    case sieve
    case s3fifo

    var options: ShmLRU.Options {
        switch self {
        case .lru: ShmLRU.Options(policy: .lru)
        case .clock: ShmLRU.Options(promotion: .atMostEvery(.seconds(1)), policy: .lru)
        case .sieve: ShmLRU.Options(policy: .sieve)
        case .s3fifo: ShmLRU.Options(policy: .s3fifo)
        }
    }
}

/// Replays `keys` through a new cache of `capacity` records; returns the misses.
/// The cache's segment is removed before returning.
func replayMisses(_ keys: UnsafeBufferPointer<UInt32>, capacity: Int, policy: ReplayPolicy) throws -> Int {
    let cache = try ShmLRU.create(recordSize: 8, capacity: capacity, options: policy.options)
    defer {
        try? cache.region.remove()
        _ = try? cache.detach()
    }
    var misses = 0
    var buffer: UInt64 = 0
    try withUnsafeMutableBytes(of: &buffer) { (out) throws(ShmError) in
        for key in keys {
            if try cache.get(key, into: out) == nil {
                misses &+= 1
                var value = key
                _ = try withUnsafeBytes(of: &value) { (bytes) throws(ShmError) in try cache.set(key, bytes: bytes) }
            }
        }
    }
    return misses
}

/// Reads a file of little-endian UInt32 keys.
func readTrace(_ path: String) throws(BenchFailure) -> [UInt32] {
    guard let file = fopen(path, "rb") else { throw BenchFailure(description: "cannot open \(path): \(String(cString: strerror(errno)))") }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
        if n == 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
    }
    guard ferror(file) == 0 else { throw BenchFailure(description: "cannot read \(path)") }
    guard bytes.count % 4 == 0 else { throw BenchFailure(description: "\(path): \(bytes.count) bytes is not a whole number of UInt32 keys") }
    var keys = [UInt32](repeating: 0, count: bytes.count / 4)
    for i in 0..<keys.count {
        let b = 4 * i
        keys[i] = UInt32(bytes[b]) | UInt32(bytes[b + 1]) << 8 | UInt32(bytes[b + 2]) << 16 | UInt32(bytes[b + 3]) << 24
    }
    return keys
}

/// Writes keys as little-endian UInt32s.
func writeTrace(_ keys: [UInt32], to path: String) throws(BenchFailure) {
    guard let file = fopen(path, "wb") else { throw BenchFailure(description: "cannot create \(path): \(String(cString: strerror(errno)))") }
    defer { fclose(file) }
    let written = keys.map(\.littleEndian).withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
    guard written == keys.count * 4 else { throw BenchFailure(description: "cannot write \(path)") }
}

func formatRatio(_ value: Double) -> String {
    var buffer = [CChar](repeating: 0, count: 32)
    _ = withVaList([value]) { vsnprintf(&buffer, buffer.count, "%.5f", $0) }
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

func replayMain(_ arguments: [String]) -> Int32 {
    let usage = "usage: ShmLRUBench replay --trace FILE --capacity N --policy NAME | ShmLRUBench replay --list-policies\n"
    var rest = arguments.dropFirst()
    var trace: String?
    var capacity: Int?
    var policy: ReplayPolicy?
    var list = false
    while let flag = rest.popFirst() {
        switch flag {
        case "--list-policies": list = true
        case "--trace": trace = rest.popFirst()
        case "--capacity": capacity = rest.popFirst().flatMap { Int($0) }
        case "--policy":
            guard let name = rest.popFirst(), let named = ReplayPolicy(rawValue: name) else {
                writeAll(2, "ShmLRUBench replay: unknown policy (see --list-policies)\n")
                return 64
            }
            policy = named
        default:
            writeAll(2, usage)
            return 64
        }
    }
    if list {
        writeAll(1, ReplayPolicy.allCases.map { $0.rawValue + "\n" }.joined())
        return 0
    }
    guard let trace, let capacity, capacity >= 1, let policy else {
        writeAll(2, usage)
        return 64
    }
    do {
        let keys = try readTrace(trace)
        let misses = try keys.withUnsafeBufferPointer { try replayMisses($0, capacity: capacity, policy: policy) }
        let ratio = keys.isEmpty ? 0 : Double(misses) / Double(keys.count)
        writeAll(1, "policy=\(policy.rawValue) capacity=\(capacity) requests=\(keys.count) missRatio=\(formatRatio(ratio))\n")
        return 0
    } catch {
        writeAll(2, "ShmLRUBench replay: \(error)\n")
        return 1
    }
}
