import FoundationEssentials

// How a store turns Codable values into bytes and back. JSON (FoundationEssentials,
// part of the toolchain: no package) is the default; any encoder/decoder pair can
// be plugged in per store handle (`ShmStore.codec`), e.g. a binary codec. Every
// process that reads a key must use the codec that wrote it: the bytes carry no
// tag. This is the only file of the library that imports FoundationEssentials.

/// An encoder/decoder pair for a store's `Codable` values (`ShmStore.codec`).
///
///     struct PropertyListCodec: ShmStoreCodec { … }
///     store.codec = PropertyListCodec()
public protocol ShmStoreCodec: Sendable {
    /// The bytes stored for `value`.
    func encode<Value: Encodable>(_ value: Value) throws -> [UInt8]
    /// The value stored as `bytes` (lent for the call only: do not keep the pointer).
    func decode<Value: Decodable>(_ type: Value.Type, from bytes: UnsafeRawBufferPointer) throws -> Value
    /// Encodes `value` and lends its bytes to `body` for the call only (the
    /// store's Codable writes use it). The default lends the array of
    /// `encode(_:)`; a codec whose encoder leaves its output in a buffer of its
    /// own (JSON: a `Data`) lends that, without copying it into an array.
    func withEncoded<Value: Encodable>(_ value: Value, _ body: (UnsafeRawBufferPointer) throws -> Void) throws
}

extension ShmStoreCodec {
    /// Lends the bytes of `encode(_:)` to `body`.
    public func withEncoded<Value: Encodable>(_ value: Value, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        try encode(value).withUnsafeBytes(body)
    }
}

/// JSON, by FoundationEssentials' `JSONEncoder` and `JSONDecoder`: the default
/// codec. Top-level fragments are accepted, so 0, false and "" round-trip.
///
/// One encoder and one decoder with the default options serve every call
/// (making one costs ~2,000 instructions, 4 % of encoding a 200-byte value):
/// they are Sendable, read their options once per call and are never changed.
public struct JSONStoreCodec: ShmStoreCodec {
    public init() {}

    private static let encoder = JSONEncoder()
    private static let decoder = JSONDecoder()

    public func encode<Value: Encodable>(_ value: Value) throws -> [UInt8] {
        let data = try Self.encoder.encode(value)
        return [UInt8](unsafeUninitializedCapacity: data.count) { buffer, initialized in
            initialized = data.copyBytes(to: buffer)
        }
    }

    /// Lends the encoder's `Data` itself: no copy into an array.
    public func withEncoded<Value: Encodable>(_ value: Value, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        try Self.encoder.encode(value).withUnsafeBytes(body)
    }

    public func decode<Value: Decodable>(_ type: Value.Type, from bytes: UnsafeRawBufferPointer) throws -> Value {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return try Self.decoder.decode(type, from: Data()) }
        // The decoder reads the caller's bytes in place: no copy into a Data.
        let data = Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: base), count: bytes.count, deallocator: .none)
        return try Self.decoder.decode(type, from: data)
    }
}

// MARK: Bytes stay bytes

/// The bytes to store for `value` when it is itself bytes (`[UInt8]` or `Data`):
/// those are stored as they are, never through the codec (a JSON array would
/// triple their size). nil for every other type.
/// (The type is compared, not cast: an empty `[Int]` casts to `[UInt8]`.)
@inline(__always)
func _rawBytes<Value>(_ value: Value) -> [UInt8]? {
    if Value.self == [UInt8].self { return (value as! [UInt8]) }
    if Value.self == Data.self { return [UInt8](value as! Data) }
    return nil
}

/// `bytes` as a `Value` that is itself bytes (`[UInt8]` or `Data`); nil for every other type.
@inline(__always)
func _fromRawBytes<Value>(_ bytes: [UInt8], as type: Value.Type) -> Value? {
    if Value.self == [UInt8].self { return (bytes as! Value) }
    if Value.self == Data.self { return (Data(bytes) as! Value) }
    return nil
}
