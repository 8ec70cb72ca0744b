// Shared by the test helper executable and the test target: a deterministic
// generator (so a failing seed replays) and the self-describing values that
// multi-process tests write and check (hash, version, length, then bytes derived
// from all three: a torn or foreign value never decodes).

/// A small deterministic generator (SplitMix64), so a failing seed replays.
public struct SplitMix64: RandomNumberGenerator {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The value a hammering process writes for (hash, version): self-describing, so
/// any reader can check that what it read was written whole and for that hash.
public func encodeValue(hash: UInt32, version: UInt32, length: Int) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: max(length, 12))
    withUnsafeBytes(of: hash.littleEndian) { bytes.replaceSubrange(0..<4, with: $0) }
    withUnsafeBytes(of: version.littleEndian) { bytes.replaceSubrange(4..<8, with: $0) }
    withUnsafeBytes(of: UInt32(bytes.count).littleEndian) { bytes.replaceSubrange(8..<12, with: $0) }
    for i in 12..<bytes.count { bytes[i] = UInt8(truncatingIfNeeded: hash &+ version &+ UInt32(i)) }
    return bytes
}

/// Checks a value made by `encodeValue`; returns its version, or nil if it is not whole or not for `hash`.
public func decodeValue(_ bytes: [UInt8], hash: UInt32) -> UInt32? {
    guard bytes.count >= 12 else { return nil }
    func word(_ at: Int) -> UInt32 { UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16 | UInt32(bytes[at + 3]) << 24 }
    guard word(0) == hash, Int(word(8)) == bytes.count else { return nil }
    let version = word(4)
    for i in 12..<bytes.count where bytes[i] != UInt8(truncatingIfNeeded: hash &+ version &+ UInt32(i)) { return nil }
    return version
}
