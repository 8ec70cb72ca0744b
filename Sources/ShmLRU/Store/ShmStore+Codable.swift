import CShm

// Codable values, through the handle's codec (`ShmStore.codec`, JSON by default;
// ShmStoreCodec.swift) and its decoded cache (_DecodedCache.swift). Values that
// are not Codable go through the raw-bytes API.

extension ShmStore {
    /// Encodes `value` with the handle's codec and stores it under `key`; see `set(_:bytes:expiry:)`.
    /// A `[UInt8]` or `Data` value is stored as its bytes, as `set(_:bytes:)`
    /// does, and `get(_:as:)` of either type reads them back as they are.
    /// - Throws: `.codingFailed` if the value cannot be encoded, and everything
    ///   `set(_:bytes:expiry:)` throws.
    public func set<Value: Encodable>(_ key: String, _ value: Value, expiry: Expiry = .storeDefault) throws(ShmError) {
        try _withEncoded(value, _operation("set", key), codec: _decoded.codec) { (bytes) throws(ShmError) in
            try set(key, bytes: bytes, expiry: expiry)
        }
    }

    /// The value stored under `key`, decoded with the handle's codec; nil when
    /// absent or expired. A value this handle decoded before and that nobody has
    /// written since is returned from the decoded cache without decoding; that
    /// is checked against the record in shared memory on every call.
    /// - Throws: `.codingFailed` if the stored bytes are not a `Value`.
    @inlinable  // specialised in the caller: a decoded-cache hit then does nothing generic
    public func get<Value: Decodable>(_ key: String, as type: Value.Type = Value.self) throws(ShmError) -> Value? {
        // The hit copies the value straight into uninitialised memory (no
        // Optional to overwrite: that went through the type's value witnesses).
        let hit = withUnsafeTemporaryAllocation(of: Value.self, capacity: 1) { slot -> Value? in
            guard let out = slot.baseAddress,
                _decodedHit(key, ObjectIdentifier(Value.self), { box in out.initialize(to: box.value(as: Value.self)) })
            else { return nil }
            return out.move()
        }
        if let hit { return hit }
        return try _getDecoding(key, as: Value.self)
    }

    /// A get that reads the record (lock-free, or under the lock) and decodes,
    /// unless the locked read finds the cached version current. Only the decode
    /// and the box are generic: the read is `_readForDecoding`'s (a generic
    /// read cost ~3,000 instructions of metadata look-ups and value witnesses).
    @usableFromInline
    func _getDecoding<Value: Decodable>(_ key: String, as type: Value.Type) throws(ShmError) -> Value? {
        switch try _readForDecoding(key, ObjectIdentifier(Value.self)) {
        case .absent:
            return nil
        case .current(let box):
            return unsafeDowncast(box, to: _DecodedBox<Value>.self).value
        case .read(let bytes, let pending):
            let value = try _decode(Value.self, from: bytes, _operation("get", key), codec: _decoded.codec)
            if !(Value.self is AnyClass) { _decoded.insert(pending.entryHash, pending.entry(_DecodedBox(value))) }
            return value
        }
    }

    /// What a get that missed the decoded cache read.
    enum _DecodingRead {
        case absent
        /// The locked read found the cached version current: its box (a hit, counted).
        case current(AnyObject)
        /// The value's bytes, to decode (a miss, counted), and the entry to keep for them.
        case read([UInt8], _PendingEntry)
    }

    /// A decoded-cache entry waiting for its value.
    struct _PendingEntry {
        var entryHash: UInt32
        var read: _VersionedRead
        var type: ObjectIdentifier
        var key: _InlineKey
        var cost: Int

        func entry(_ box: AnyObject) -> _DecodedCache.Entry {
            .init(
                slot: read.slot, seq: read.seq, recordHash: read.hash, expiresAt: read.expiresAt, renews: read.renews, type: type,
                value: box, key: key, cost: cost, order: 0)
        }
    }

    /// `_getDecoding`'s read, not generic: the record's bytes (lock-free, or
    /// under the lock), or the cached box when the locked read finds its
    /// version current; drops the cached entry of an absent key.
    func _readForDecoding(_ key: String, _ typeID: ObjectIdentifier) throws(ShmError) -> _DecodingRead {
        try _withKeyBytes(key) { (keyBuffer) throws(ShmError) -> _DecodingRead in
            guard cache._lockFreeView.isAttached else { throw _detachedError("get", key) }
            let base = _keyHash(key, keyBuffer)
            let entryHash = _decoded.tableHash(keyBuffer)
            let cached = _decoded.entry(entryHash, type: typeID)
            let known = cached.map { (slot: $0.slot, seq: $0.seq) }
            guard let read = try _getVersioned(keyBuffer, base: base, key: key, known: known) else {
                if cached != nil { _decoded.remove(entryHash) }
                return .absent
            }
            guard let bytes = read.bytes else {  // the read found the cached version current (`known`: `cached` is there)
                _decoded.countHit()
                return .current(cached!.value)
            }
            _decoded.countMiss()
            let pending = _PendingEntry(
                entryHash: entryHash, read: read, type: typeID, key: _InlineKey(keyBuffer), cost: bytes.count + keyBuffer.count)
            return .read(bytes, pending)
        }
    }
}

/// Encodes `value` with `codec` (JSON by default); bytes (`[UInt8]`, `Data`) as they are.
func _encode<Value: Encodable>(
    _ value: Value, _ operation: @autoclosure () -> String, codec: any ShmStoreCodec = JSONStoreCodec()
) throws(ShmError) -> [UInt8] {
    if let bytes = _rawBytes(value) { return bytes }
    do { return try codec.encode(value) } catch {
        throw ShmError(.codingFailed, operation(), detail: "cannot encode \(Value.self): \(error)")
    }
}

/// Encodes `value` with `codec` and lends the bytes to `body` (the codec's own
/// buffer: no copy into an array); bytes (`[UInt8]`, `Data`) as they are.
/// Errors of `body` are rethrown as they are; the codec's as `.codingFailed`.
/// (Nothing generic but the value: the codec is called through its existential.)
func _withEncoded<Value: Encodable>(
    _ value: Value, _ operation: @autoclosure () -> String, codec: any ShmStoreCodec,
    _ body: (UnsafeRawBufferPointer) throws(ShmError) -> Void
) throws(ShmError) {
    if let bytes = _rawBytes(value) { return try _withBytes(bytes, body) }
    var lent = false
    var failure: ShmError? = nil
    do {
        try codec.withEncoded(value) { bytes in
            lent = true
            do throws(ShmError) { try body(bytes) } catch { failure = error }
        }
    } catch {
        throw ShmError(.codingFailed, operation(), detail: "cannot encode \(Value.self): \(error)")
    }
    if let failure { throw failure }
    guard lent else {
        throw ShmError(.codingFailed, operation(), detail: "the codec's withEncoded did not lend the bytes of \(Value.self)")
    }
}

extension ShmStore.Change {
    /// The new value of a `.set`, decoded with `codec` (the writer's); nil for other kinds.
    public func value<Value: Decodable>(as type: Value.Type = Value.self, codec: any ShmStoreCodec) throws(ShmError) -> Value? {
        guard let bytes else { return nil }
        return try _decode(Value.self, from: bytes, "ShmStore.Change.value(\"\(key)\")", codec: codec)
    }
}

/// Decodes stored bytes as `Value` with `codec` (JSON by default); bytes (`[UInt8]`, `Data`) as they are.
func _decode<Value: Decodable>(
    _ type: Value.Type, from bytes: [UInt8], _ operation: @autoclosure () -> String, codec: any ShmStoreCodec = JSONStoreCodec()
) throws(ShmError) -> Value {
    if let value = _fromRawBytes(bytes, as: Value.self) { return value }
    do { return try bytes.withUnsafeBytes { try codec.decode(Value.self, from: $0) } } catch {
        throw ShmError(.codingFailed, operation(), detail: "the stored \(bytes.count) bytes are not a \(Value.self): \(error)")
    }
}
