import CShm

// Atomic operations on one key, under the data segment's lock alone: no per-key
// lock, so a process killed in the middle holds nothing another must wait out.
//
// * `update`: read-modify-write; the closure runs under the data lock (keep it
//   short, and do not call the store from it); returning nil removes the key.
// * `add`: insert if absent (an expired entry counts as absent).
// * `Expiry.keepCurrent`: a set (or update) that keeps the entry's expiry.

extension ShmStore {
    /// Reads the value under `key`, passes it to `body` (nil when absent or
    /// expired) and stores what `body` returns, all under the data segment's lock:
    /// no other process's set, remove or update of any key comes in between.
    /// Returning nil removes the key. Tells the key's listeners of the change.
    ///
    /// `body` runs while every other store operation of every process waits: keep
    /// it short, and do not call the store from it (that throws).
    ///
    /// - Parameters:
    ///   - key: the entry's key.
    ///   - type: the type the value is decoded as and encoded from.
    ///   - expiry: of the new value; by default the entry keeps its expiry
    ///     (a new entry gets the store's `maxAge`).
    ///   - body: given the current value (nil when absent), returns the new one (nil removes the key).
    /// - Returns: the value stored (nil: the key was removed, or stays absent).
    /// - Throws: what `body` throws (nothing changed then); `.codingFailed` when the
    ///   stored bytes are not a `Value`; everything `set` throws.
    @discardableResult
    public func update<Value: Codable>(
        _ key: String, as type: Value.Type = Value.self, expiry: Expiry = .keepCurrent, _ body: (Value?) throws -> Value?
    ) throws -> Value? {
        let operation = _operation("update", key)
        var thrown: (any Error)? = nil
        let result = try _withKey(key) { (keyBuffer, base) throws(ShmError) -> Value? in
            try cache._withLockedHandle(operation) { (lru) throws(ShmError) -> Value? in
                let now = _monotonicNanoseconds()
                let (found, free) = try _locateLocked(lru, keyBuffer, base: base, now: now, reclaim: true)
                let current = try found.map { (found) throws(ShmError) -> Value in
                    try _decode(Value.self, from: try _valueBytesLocked(lru, found.header, found.payload), operation, codec: _decoded.codec)
                }
                let next: Value?
                do { next = try body(current) } catch {
                    thrown = error
                    return nil
                }
                guard let next else {
                    if let found { try _reclaimLocked(lru, found.slot, payload: found.payload, header: found.header, kind: .removed) }
                    return nil
                }
                let bytes = try _encode(next, operation, codec: _decoded.codec)
                try _checkFits(keyBuffer.count, bytes.count, operation)
                let (expiresAt, maxAge) = try _expiry(expiry, found: found, now: now, operation)
                try _withBytes(bytes) { (value) throws(ShmError) in
                    try _writeLocked(lru, keyBuffer, value: value, found: found, free: free, base: base, now: now,
                        expiresAt: expiresAt, maxAge: maxAge, operation)
                }
                return next
            }
        }
        if let thrown { throw thrown }
        return result
    }

    /// Stores `value` under `key` only if the key is absent (or expired).
    /// - Returns: true if it was stored; false if the key held a live value (unchanged).
    /// - Throws: `.codingFailed` if the value cannot be encoded; everything `set` throws.
    @discardableResult
    public func add<Value: Encodable>(_ key: String, _ value: Value, expiry: Expiry = .storeDefault) throws(ShmError) -> Bool {
        try add(key, bytes: try _encode(value, _operation("add", key), codec: _decoded.codec), expiry: expiry)
    }

    /// `add(_:_:expiry:)` for raw bytes.
    @discardableResult
    public func add(_ key: String, bytes value: [UInt8], expiry: Expiry = .storeDefault) throws(ShmError) -> Bool {
        let operation = _operation("add", key)
        return try _withKey(key) { (keyBuffer, base) throws(ShmError) -> Bool in
            try _checkFits(keyBuffer.count, value.count, operation)
            return try _withBytes(value) { (valueBuffer) throws(ShmError) -> Bool in
                try cache._withLockedHandle(operation) { (lru) throws(ShmError) -> Bool in
                    let now = _monotonicNanoseconds()
                    let (found, free) = try _locateLocked(lru, keyBuffer, base: base, now: now, reclaim: true)
                    if found != nil { return false }
                    let (expiresAt, maxAge) = try _expiry(expiry, found: nil, now: now, operation)
                    try _writeLocked(lru, keyBuffer, value: valueBuffer, found: nil, free: free, base: base, now: now,
                        expiresAt: expiresAt, maxAge: maxAge, operation)
                    return true
                }
            }
        }
    }

    // MARK: Internals

}
