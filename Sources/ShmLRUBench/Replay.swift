// `ShmLRUBench replay --trace FILE --capacity N --policy NAME [--format F]`:
// replays a trace through a fresh ShmLRU with get-or-set (a miss sets the key) and
// prints `policy=NAME capacity=N requests=R missRatio=0.12345`. `--policy default`
// replays with the store's default (`ShmLRU.EvictionPolicy.storeDefault`).
// `ShmLRUBench replay --list-policies` prints the policy names, one a line.
//
// Trace formats (`--format`, else from the file's name; see `TraceFormat`):
//   u32            the tool's own: little-endian UInt32 keys (.u32, anything unnamed)
//   oracleGeneral  libCacheSim's binary: 24-byte little-endian records (UInt32
//                  time, UInt64 object id, UInt32 size, Int64 next access)
//   csv[:N]        libCacheSim's csv: a header line naming the columns; the key is
//                  column N (1-based), else the one named obj_id, id, key, lbn or object
//   be32, be64     Caffeine's simulator key-only binary streams: big-endian Int32
//                  (cache2k, cloud_physics) or Int64 (scarab) keys
//   lirs           Caffeine's LIRS text: one decimal key a line, `*` and blank lines skipped
// A key wider than 32 bits is folded to one (`high ^ low`): the same folding for
// every policy and for libCacheSim, which replays the folded keys.
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
    case tinylfu

    /// The store's default policy (what `--policy default` replays).
    static var storeDefault: ReplayPolicy {
        switch ShmLRU.EvictionPolicy.storeDefault {
        case .lru: .clock  // the store reads lock-free: interval promotion
        case .sieve: .sieve
        case .s3fifo: .s3fifo
        case .tinylfu: .tinylfu
        }
    }

    var options: ShmLRU.Options {
        switch self {
        case .lru: ShmLRU.Options(policy: .lru)
        case .clock: ShmLRU.Options(promotion: .atMostEvery(.seconds(1)), policy: .lru)
        case .sieve: ShmLRU.Options(policy: .sieve)
        case .s3fifo: ShmLRU.Options(policy: .s3fifo)
        case .tinylfu: ShmLRU.Options(policy: .tinylfu)
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

/// The trace formats the tool reads (see the file's notes).
enum TraceFormat: Equatable, Sendable {
    case u32, oracleGeneral, be32, be64, lirs
    /// libCacheSim csv; the key's column (1-based), nil: by the header's names.
    case csv(column: Int?)

    init?(name: String) {
        switch name {
        case "u32": self = .u32
        case "oracleGeneral": self = .oracleGeneral
        case "be32": self = .be32
        case "be64": self = .be64
        case "lirs": self = .lirs
        case "csv": self = .csv(column: nil)
        default:
            guard name.hasPrefix("csv:"), let column = Int(name.dropFirst(4)), column >= 1 else { return nil }
            self = .csv(column: column)
        }
    }

    /// The format a file's name says, nil for one the tool does not know.
    static func guess(_ path: String) -> TraceFormat? {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        if name.hasSuffix(".oracleGeneral.bin") || name.hasSuffix(".oracleGeneral") { return .oracleGeneral }
        if name.hasSuffix(".csv") { return .csv(column: nil) }
        if name.hasSuffix(".be32") { return .be32 }
        if name.hasSuffix(".be64") { return .be64 }
        if name.hasSuffix(".lirs") { return .lirs }
        if name.hasSuffix(".u32") { return .u32 }
        return nil
    }
}

/// Reads a whole file.
func readFile(_ path: String) throws(BenchFailure) -> [UInt8] {
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
    return bytes
}

/// A key of up to 64 bits folded to the cache's 32.
@inline(__always) func foldKey(_ key: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: key ^ (key >> 32)) }

/// Reads a trace's keys, in request order.
func readTrace(_ path: String, format: TraceFormat? = nil) throws(BenchFailure) -> [UInt32] {
    let format = format ?? TraceFormat.guess(path) ?? .u32
    let bytes = try readFile(path)
    func fixed(_ size: Int) throws(BenchFailure) -> Int {
        guard bytes.count % size == 0 else {
            throw BenchFailure(description: "\(path): \(bytes.count) bytes is not a whole number of \(size)-byte records")
        }
        return bytes.count / size
    }
    func little(_ at: Int, _ width: Int) -> UInt64 {
        var value: UInt64 = 0
        for i in (0..<width).reversed() { value = value << 8 | UInt64(bytes[at + i]) }
        return value
    }
    func big(_ at: Int, _ width: Int) -> UInt64 {
        var value: UInt64 = 0
        for i in 0..<width { value = value << 8 | UInt64(bytes[at + i]) }
        return value
    }
    switch format {
    case .u32:
        return (0..<(try fixed(4))).map { UInt32(little(4 * $0, 4)) }
    case .oracleGeneral:
        return (0..<(try fixed(24))).map { foldKey(little(24 * $0 + 4, 8)) }
    case .be32:
        return (0..<(try fixed(4))).map { UInt32(big(4 * $0, 4)) }
    case .be64:
        return (0..<(try fixed(8))).map { foldKey(big(8 * $0, 8)) }
    case .lirs:
        var keys: [UInt32] = []
        for (number, line) in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() {
            let text = String(decoding: line, as: UTF8.self).filter { !$0.isWhitespace }
            if text.isEmpty || text == "*" { continue }
            guard let key = Int64(text) else { throw BenchFailure(description: "\(path):\(number + 1): not a key: \(text.prefix(40))") }
            keys.append(foldKey(UInt64(bitPattern: key)))
        }
        return keys
    case .csv(let wanted):
        var lines = bytes.split(separator: UInt8(ascii: "\n")).makeIterator()
        guard let header = lines.next() else { return [] }
        let names = String(decoding: header, as: UTF8.self).split(separator: ",").map { $0.filter { !$0.isWhitespace }.lowercased() }
        var column = wanted.map { $0 - 1 }
        if column == nil {
            for name in ["obj_id", "id", "key", "lbn", "object"] where column == nil { column = names.firstIndex(of: name) }
        }
        guard let column, column >= 0 else {
            throw BenchFailure(description: "\(path): no key column among \(names) (name one: --format csv:N)")
        }
        var keys: [UInt32] = []
        var number = 1
        while let line = lines.next() {
            number += 1
            let fields = line.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false)
            guard column < fields.count,
                let key = UInt64(String(decoding: fields[column], as: UTF8.self).filter { !$0.isWhitespace })
            else { throw BenchFailure(description: "\(path):\(number): no key in column \(column + 1)") }
            keys.append(foldKey(key))
        }
        return keys
    }
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
    let usage =
        "usage: ShmLRUBench replay --trace FILE --capacity N --policy NAME|default [--format u32|oracleGeneral|csv[:N]|be32|be64|lirs]"
        + " | ShmLRUBench replay --list-policies\n"
    var rest = arguments.dropFirst()
    var trace: String?
    var capacity: Int?
    var policy: ReplayPolicy?
    var format: TraceFormat?
    var list = false
    while let flag = rest.popFirst() {
        switch flag {
        case "--list-policies": list = true
        case "--trace": trace = rest.popFirst()
        case "--capacity": capacity = rest.popFirst().flatMap { Int($0) }
        case "--format":
            guard let name = rest.popFirst(), let named = TraceFormat(name: name) else {
                writeAll(2, "ShmLRUBench replay: unknown format\n" + usage)
                return 64
            }
            format = named
        case "--policy":
            guard let name = rest.popFirst(), let named = name == "default" ? ReplayPolicy.storeDefault : ReplayPolicy(rawValue: name) else {
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
        writeAll(1, ReplayPolicy.allCases.map { $0.rawValue + "\n" }.joined() + "default (\(ReplayPolicy.storeDefault.rawValue))\n")
        return 0
    }
    guard let trace, let capacity, capacity >= 1, let policy else {
        writeAll(2, usage)
        return 64
    }
    do {
        let keys = try readTrace(trace, format: format)
        let misses = try keys.withUnsafeBufferPointer { try replayMisses($0, capacity: capacity, policy: policy) }
        let ratio = keys.isEmpty ? 0 : Double(misses) / Double(keys.count)
        writeAll(1, "policy=\(policy.rawValue) capacity=\(capacity) requests=\(keys.count) missRatio=\(formatRatio(ratio))\n")
        return 0
    } catch {
        writeAll(2, "ShmLRUBench replay: \(error)\n")
        return 1
    }
}
