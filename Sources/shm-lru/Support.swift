#if CLI
import ArgumentParser
import Glibc
import ShmLRU

/// The tool's exit codes (documented in `shm-lru --help`).
enum Exit {
    static let hashNotFound: Int32 = 1
    static let noSegment: Int32 = 2
    static let notShmLRU: Int32 = 3
    static let problems: Int32 = 4
    static let failure: Int32 = 5
}

/// A failure with its message and exit code; `reporting` prints and exits with it.
struct ToolFailure: Error {
    var message: String
    var exitCode: Int32
    init(_ message: String, exitCode: Int32) {
        self.message = message
        self.exitCode = exitCode
    }
}

/// Writes to standard error, unbuffered.
func printError(_ text: String) {
    var line = text + "\n"
    line.withUTF8 { buffer in
        var offset = 0
        while offset < buffer.count {
            let n = write(2, buffer.baseAddress! + offset, buffer.count - offset)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            offset += n
        }
    }
}

/// Runs a command's body; a `ToolFailure` or `ShmError` becomes a message on
/// standard error and the matching exit code.
func reporting(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let failure as ToolFailure {
        printError("shm-lru: " + failure.message)
        throw ExitCode(failure.exitCode)
    } catch let error as ShmError {
        let failure = describe(error, key: nil)
        printError("shm-lru: " + failure.message)
        throw ExitCode(failure.exitCode)
    }
}

/// A clear message and exit code for a library error about segment `key`.
func describe(_ error: ShmError, key: ShmKey?) -> ToolFailure {
    let segment = key.map { "segment \($0)" } ?? "segment"
    switch error.code {
    case .notFound:
        return ToolFailure(
            "no segment with key \(key.map(\.description) ?? "?") (see `shm-lru list` or `ipcs -m`)",
            exitCode: Exit.noSegment)
    case .incompatibleSegment:
        return ToolFailure(
            "\(segment) is not a ShmLRU cache (\(error.detail ?? error.description))", exitCode: Exit.notShmLRU)
    case .corrupted:
        return ToolFailure(
            "\(segment) has a damaged ShmLRU header (\(error.detail ?? error.description))", exitCode: Exit.notShmLRU)
    case .exists:
        return ToolFailure(
            "a segment with key \(key.map(\.description) ?? "?") already exists (\(error.description))",
            exitCode: Exit.failure)
    case .permissionDenied:
        return ToolFailure("\(segment): permission denied (\(error.description))", exitCode: Exit.failure)
    default:
        return ToolFailure(error.description, exitCode: Exit.failure)
    }
}

/// Checks the header read-only first (so a foreign segment is reported, never
/// locked or written), then attaches the cache.
func openCache(_ key: ShmKey) throws(ToolFailure) -> ShmLRU {
    do {
        _ = try ShmLRU.probe(key: key)
        return try ShmLRU.attach(
            key: key, options: ShmLRU.Options(lockTimeout: .seconds(5), attachWait: .milliseconds(200)))
    } catch {
        throw describe(error, key: key)
    }
}

/// The cache a key names: itself, or for a store's key, the store's data segment.
func cacheKey(following key: ShmKey) -> ShmKey {
    (try? ShmStore.probe(key: key))?.dataKey ?? key
}

/// Runs `body` on an open cache; a library error becomes a clear failure.
func withCache(_ key: ShmKey, _ body: (ShmLRU) throws(ShmError) -> Void) throws(ToolFailure) {
    let cache = try openCache(key)
    do { try body(cache) } catch { throw describe(error, key: key) }
}

// MARK: Argument parsing

struct ParseFailure: Error, CustomStringConvertible {
    var description: String
}

/// KEY: decimal or 0x-hex, not 0.
func parseKey(_ text: String) throws -> ShmKey {
    guard let key = ShmKey(parsing: text) else {
        throw ParseFailure(description: "a key is a 32-bit number, decimal (1234) or hexadecimal (0x4d2)")
    }
    guard !key.isPrivate else { throw ParseFailure(description: "key 0 (IPC_PRIVATE) names no shared segment") }
    return key
}

/// HASH: a UInt32, decimal or 0x-hex.
func parseHash(_ text: String) throws -> UInt32 {
    let lower = text.lowercased()
    let value = lower.hasPrefix("0x") ? UInt32(lower.dropFirst(2), radix: 16) : UInt32(lower)
    guard let value else { throw ParseFailure(description: "a hash is a number in 0...4294967295, decimal or 0x-hex") }
    return value
}

/// Lower-case hex of bytes.
func hexString(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef")
    var text = ""
    text.reserveCapacity(bytes.count * 2)
    for byte in bytes {
        text.append(digits[Int(byte >> 4)])
        text.append(digits[Int(byte & 15)])
    }
    return text
}

/// Left-aligned columns, two spaces apart.
func table(_ rows: [[String]]) -> String {
    guard let first = rows.first else { return "" }
    var widths = [Int](repeating: 0, count: first.count)
    for row in rows {
        for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) }
    }
    return rows.map { row in
        row.enumerated().map { i, cell in
            i == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[i] - cell.count)
        }.joined(separator: "  ")
    }.joined(separator: "\n")
}

// MARK: JSON output (--json)

/// A table's cell as JSON: a number when it reads as one, null for "-", else a string.
private func jsonValue(_ text: String) -> String {
    if let number = Int(text) { return String(number) }
    return text == "-" ? "null" : _jsonString(text)
}

/// A JSON name from a column or row title: `record size` → `recordSize`.
private func jsonName(_ title: String) -> String {
    let words = title.lowercased().split(whereSeparator: { !$0.isLetter && !$0.isNumber })
    guard let first = words.first else { return "_" }
    return String(first) + words.dropFirst().map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined()
}

/// A table (first row: the column titles) as a JSON array of objects.
func jsonArray(_ rows: [[String]]) -> String {
    guard let titles = rows.first else { return "[]" }
    let names = titles.map(jsonName)
    let objects = rows.dropFirst().map { row in
        "{" + zip(names, row).map { "\(jsonValue($0)): \(jsonValue($1))" }.joined(separator: ", ") + "}"
    }
    return "[\n  " + objects.joined(separator: ",\n  ") + "\n]"
}

/// Name / value rows as one JSON object.
func jsonObject(_ rows: [[String]]) -> String {
    let members = rows.compactMap { row -> String? in
        guard row.count >= 2 else { return nil }
        return "  \(jsonValue(jsonName(row[0]))): \(jsonValue(row[1]))"
    }
    return "{\n" + members.joined(separator: ",\n") + "\n}"
}
#endif  // CLI
