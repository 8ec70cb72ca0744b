import FoundationEssentials

// Codable values, encoded as JSON by FoundationEssentials (part of the toolchain,
// no package; lighter than Foundation). JSON fragments are accepted at the top
// level, so 0, false and "" round-trip. This is the only file of the library
// that imports it. Values that are not Codable, or another encoding, go through
// the raw-bytes API.

extension ShmStore {
    /// Encodes `value` as JSON and stores it under `key`; see `set(_:bytes:expiry:)`.
    /// - Throws: `.codingFailed` if the value cannot be encoded, and everything
    ///   `set(_:bytes:expiry:)` throws.
    public func set<Value: Encodable>(_ key: String, _ value: Value, expiry: Expiry = .storeDefault) throws(ShmError) {
        let data: Data
        do { data = try JSONEncoder().encode(value) } catch {
            throw ShmError(.codingFailed, _operation("set", key), detail: "cannot encode \(Value.self): \(error)")
        }
        try set(key, bytes: [UInt8](data), expiry: expiry)
    }

    /// The value stored under `key`, decoded from JSON; nil when absent or expired.
    /// - Throws: `.codingFailed` if the stored bytes are not a `Value`.
    public func get<Value: Decodable>(_ key: String, as type: Value.Type = Value.self) throws(ShmError) -> Value? {
        guard let bytes = try bytes(key) else { return nil }
        return try _decode(Value.self, from: bytes, _operation("get", key))
    }
}

/// Encodes `value` as JSON bytes.
func _encode<Value: Encodable>(_ value: Value, _ operation: @autoclosure () -> String) throws(ShmError) -> [UInt8] {
    do { return [UInt8](try JSONEncoder().encode(value)) } catch {
        throw ShmError(.codingFailed, operation(), detail: "cannot encode \(Value.self): \(error)")
    }
}

/// Decodes JSON bytes (stored by `set(_:_:expiry:)`) as `Value`.
func _decode<Value: Decodable>(_ type: Value.Type, from bytes: [UInt8], _ operation: @autoclosure () -> String) throws(ShmError) -> Value {
    do { return try JSONDecoder().decode(Value.self, from: Data(bytes)) } catch {
        throw ShmError(.codingFailed, operation(), detail: "the stored \(bytes.count) bytes are not a \(Value.self): \(error)")
    }
}
