import CShm
import Glibc

/// A SysV IPC key: the name under which processes find one segment.
///
/// Keys are 32-bit; write them as integers (`ShmKey(0x5EED)`, or a literal where
/// a key is expected) or derive one from a file path with `ftok` so that
/// unrelated programs meet without passing numbers around.
public struct ShmKey: RawRepresentable, Hashable, Sendable, Comparable, ExpressibleByIntegerLiteral,
    CustomStringConvertible
{
    /// The `key_t` value handed to `shmget`.
    public var rawValue: Int32

    /// The key with this `key_t` value.
    public init(rawValue: Int32) { self.rawValue = rawValue }
    /// A key from its unsigned spelling, as `ipcs` prints it (`0x0000002a`).
    public init(_ value: UInt32) { self.rawValue = Int32(bitPattern: value) }
    /// A key written as a literal, e.g. `0x5EED`.
    public init(integerLiteral value: UInt32) { self.init(value) }

    /// `ftok(path, id)`: the same path (which must exist) and id give the same key
    /// in every process.  `id` uses its low 8 bits and must not be 0.
    public init(path: String, id: UInt8 = 1) throws(ShmError) {
        guard id != 0 else {
            throw ShmError(.invalidArgument, "ftok(\"\(path)\", \(id))", detail: "id must not be 0")
        }
        switch _ftok(path: path, id: Int32(id)) {
        case .success(let key): self.rawValue = key
        case .failure(let code):
            throw ShmError(code.code == ENOENT ? .notFound : .invalidArgument, "ftok(\"\(path)\", \(id))", errno: code.code)
        }
    }

    /// Parses `42` or `0x2a` (as the command-line tool accepts them).
    public init?(parsing text: String) {
        let trimmed = text.lowercased()
        let value: UInt32?
        if trimmed.hasPrefix("0x") {
            value = UInt32(trimmed.dropFirst(2), radix: 16)
        } else if trimmed.hasPrefix("-"), let signed = Int32(trimmed) {
            value = UInt32(bitPattern: signed)
        } else {
            value = UInt32(trimmed)
        }
        guard let value else { return nil }
        self.init(value)
    }

    /// The unsigned spelling of the key.
    public var unsignedValue: UInt32 { UInt32(bitPattern: rawValue) }

    /// `IPC_PRIVATE` (0) cannot be found again by key, so ShmLRU refuses it.
    public var isPrivate: Bool { rawValue == 0 }

    /// The key in hex, `0x0000beef`, as `ipcs -m` prints it.
    public var description: String { _hexKey(rawValue) }

    /// Orders keys by their unsigned value.
    public static func < (lhs: ShmKey, rhs: ShmKey) -> Bool { lhs.unsignedValue < rhs.unsignedValue }
}
