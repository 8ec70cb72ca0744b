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
