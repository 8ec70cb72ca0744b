// Shared by the test helper and the tests of the store's read path: key names
// whose store hashes share probe hashes, and self-describing Codable values.

/// FNV-1a 32 of a string's UTF-8 bytes: the stores' key hash before layout
/// version 4 (now keyed per store: pass the store's `_recordHash`).
public func storeKeyHash(_ name: String) -> UInt32 {
    var hash: UInt32 = 0x811C_9DC5
    for byte in name.utf8 {
        hash ^= UInt32(byte)
        hash &*= 0x0100_0193
    }
    return hash
}

/// `count` names ("pk-N") in pairs whose hashes are less than `spread` apart, so
/// each pair's probe hashes (hash, hash+1, …) overlap: a key of one may live
/// under a probe hash of the other's. Deterministic for one `hash` (one store).
public func probeSharingNames(count: Int, spread: UInt32 = 4, hash: (String) -> UInt32 = storeKeyHash) -> [String] {
    var hashed = (0..<300_000).map { (hash: hash("pk-\($0)"), index: $0) }
    hashed.sort { $0.hash < $1.hash }
    var chosen: [Int] = []
    var seen = Set<Int>()
    for i in 1..<hashed.count where hashed[i].hash &- hashed[i - 1].hash < spread {
        for index in [hashed[i - 1].index, hashed[i].index] where seen.insert(index).inserted { chosen.append(index) }
        if chosen.count >= count { break }
    }
    return chosen.map { "pk-\($0)" }
}

/// A value written by the store tests' processes: names its key, its writer and
/// step, and carries padding and a check derived from all of them, so a torn,
/// stale-mixed or foreign value never passes `isWhole(for:)`.
public struct StoreProbeValue: Codable, Hashable, Sendable {
    public var name: String
    public var writer: Int
    public var step: Int
    public var padding: String
    public var check: UInt32

    public init(name: String, writer: Int, step: Int) {
        self.name = name
        self.writer = writer
        self.step = step
        padding = String(repeating: String(UnicodeScalar(UInt8(97 + (writer &+ step) % 26))), count: step % 97)
        check = Self.check(name: name, writer: writer, step: step, padding: padding)
    }

    static func check(name: String, writer: Int, step: Int, padding: String) -> UInt32 {
        storeKeyHash("\(name)/\(writer)/\(step)/\(padding)")
    }

    /// Written whole, by `StoreProbeValue(name:writer:step:)`, for `name`.
    public func isWhole(for name: String) -> Bool {
        self.name == name && self == StoreProbeValue(name: name, writer: writer, step: step)
            && check == Self.check(name: name, writer: writer, step: step, padding: padding)
    }
}

/// The bytes the lent-read tests' writer stores under `name` in round `round`:
/// the name's UTF-8, ":", the round (4 bytes, little-endian), then
/// `8 + round % spread` bytes of `round & 0xFF`. Lengths vary from round to
/// round, so a torn read (bytes of two rounds, or a length of one and bytes of
/// another) or another key's value never passes `isWholeLentValue`.
public func lentValue(name: String, round: Int, spread: Int) -> [UInt8] {
    let r = UInt32(truncatingIfNeeded: round)
    return Array(name.utf8) + [UInt8(ascii: ":"), UInt8(r & 0xFF), UInt8(r >> 8 & 0xFF), UInt8(r >> 16 & 0xFF), UInt8(r >> 24)]
        + [UInt8](repeating: UInt8(r & 0xFF), count: 8 + round % max(1, spread))
}

/// The round of a whole `lentValue(name:round:spread:)` for `name`; nil for anything else.
public func wholeLentValueRound(_ bytes: UnsafeRawBufferPointer, name: String, spread: Int) -> Int? {
    let prefix = Array(name.utf8) + [UInt8(ascii: ":")]
    guard bytes.count >= prefix.count + 4, Array(bytes[0..<prefix.count]) == prefix else { return nil }
    let at = prefix.count
    let round = Int(UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16 | UInt32(bytes[at + 3]) << 24)
    guard bytes.count == at + 4 + 8 + round % max(1, spread) else { return nil }
    for byte in bytes[(at + 4)...] where byte != UInt8(round & 0xFF) { return nil }
    return round
}
