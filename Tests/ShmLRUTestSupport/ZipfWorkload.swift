import Glibc

// Shared by the test helper and the snapshot tests: a Zipf-distributed key
// stream (replayable from its seed) and the self-describing values its writers
// store (key hash, writer and step, so a restored value can be checked).

/// Keys "z0" … "z<count-1>" drawn with probability ∝ 1 / (rank + 1)^exponent.
public struct ZipfKeys: Sendable {
    let cumulative: [Double]

    public init(count: Int, exponent: Double) {
        var sum = 0.0
        var cumulative: [Double] = []
        cumulative.reserveCapacity(count)
        for rank in 0..<count {
            sum += 1 / pow(Double(rank + 1), exponent)
            cumulative.append(sum)
        }
        self.cumulative = cumulative.map { $0 / sum }
    }

    /// The next key's index.
    public func next(_ random: inout SplitMix64) -> Int {
        let u = Double(random.next() >> 11) / Double(1 << 53)
        var low = 0
        var high = cumulative.count - 1
        while low < high {
            let mid = (low + high) / 2
            if cumulative[mid] < u { low = mid + 1 } else { high = mid }
        }
        return low
    }

    public static func name(_ index: Int) -> String { "z\(index)" }
}

/// The value writer `writer` stores at its step `step` for `name`.
public func zipfValue(_ name: String, writer: Int, step: Int) -> [UInt8] {
    let hash = storeKeyHash(name)
    return encodeValue(hash: hash, version: UInt32(writer) << 24 | UInt32(step & 0xFF_FFFF), length: 24 + Int(hash % 48))
}

/// The (writer, step) of a value made by `zipfValue` for `name`; nil if it is not whole or not for `name`.
public func decodeZipfValue(_ bytes: [UInt8], name: String) -> (writer: Int, step: Int)? {
    guard let version = decodeValue(bytes, hash: storeKeyHash(name)) else { return nil }
    return (Int(version >> 24), Int(version & 0xFF_FFFF))
}
