import Glibc
import ShmLRU

typealias HelperCommand = @Sendable ([String]) throws -> Void

struct HelperFailure: Error { var message: String }

/// Minimal unbuffered output (no Foundation in the helper).
struct FileHandleLite {
    let fd: Int32
    static let standardOutput = FileHandleLite(fd: 1)
    static let standardError = FileHandleLite(fd: 2)
    func write(_ text: String) {
        var text = text
        text.withUTF8 { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if n <= 0 { return }
                offset += n
            }
        }
    }
}

func emit(_ key: String, _ value: Any) { FileHandleLite.standardOutput.write("\(key)=\(value)\n") }

func argument(_ arguments: [String], _ index: Int, _ name: String) throws -> String {
    guard index < arguments.count else { throw HelperFailure(message: "missing argument \(name)") }
    return arguments[index]
}
func keyArgument(_ arguments: [String], _ index: Int) throws -> ShmKey {
    let text = try argument(arguments, index, "KEY")
    guard let key = ShmKey(parsing: text) else { throw HelperFailure(message: "bad key \(text)") }
    return key
}
func intArgument<T: FixedWidthInteger>(_ arguments: [String], _ index: Int, _ name: String, as: T.Type = Int.self) throws -> T {
    let text = try argument(arguments, index, name)
    guard let value = T(text) else { throw HelperFailure(message: "bad \(name) \(text)") }
    return value
}

/// A small deterministic generator (SplitMix64), so a failing seed replays.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The value a hammering process writes for (hash, version): self-describing, so
/// any reader can check that what it read was written whole and for that hash.
func encodeValue(hash: UInt32, version: UInt32, length: Int) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: max(length, 12))
    withUnsafeBytes(of: hash.littleEndian) { bytes.replaceSubrange(0..<4, with: $0) }
    withUnsafeBytes(of: version.littleEndian) { bytes.replaceSubrange(4..<8, with: $0) }
    withUnsafeBytes(of: UInt32(bytes.count).littleEndian) { bytes.replaceSubrange(8..<12, with: $0) }
    for i in 12..<bytes.count { bytes[i] = UInt8(truncatingIfNeeded: hash &+ version &+ UInt32(i)) }
    return bytes
}

/// Checks a value made by `encodeValue`; returns its version, or nil if it is not whole or not for `hash`.
func decodeValue(_ bytes: [UInt8], hash: UInt32) -> UInt32? {
    guard bytes.count >= 12 else { return nil }
    func word(_ at: Int) -> UInt32 { UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16 | UInt32(bytes[at + 3]) << 24 }
    guard word(0) == hash, Int(word(8)) == bytes.count else { return nil }
    let version = word(4)
    for i in 12..<bytes.count where bytes[i] != UInt8(truncatingIfNeeded: hash &+ version &+ UInt32(i)) { return nil }
    return version
}
