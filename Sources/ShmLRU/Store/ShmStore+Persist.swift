import CShm

// What a framework's key/value driver needs beyond get and set (the Hummingbird
// PersistDriver of ShmLRUHummingbird, the Vapor Cache of ShmLRUVapor): a value
// read together with the time it has left. Insert-if-absent is `add` and
// "set, keeping the expiry" is `Expiry.keepCurrent` (ShmStore+Atomic.swift).
//
// One read: the value and its expiry instant come from the same record version
// (lock-free when the store's promotion allows, as `get`), so a set or remove by
// another process in between cannot pair a value with another version's expiry,
// which a `get` followed by `timeToLive` could.

extension ShmStore {
    /// The value stored under `key`, decoded with the handle's codec, and the time
    /// it has left, both from the same version of the entry; nil when absent or
    /// expired. A use of the entry, as `get` (it renews the age with `renewsAgeOnGet`,
    /// and the time left is then the renewed one).
    ///
    ///     if let (count, ttl) = try store.getWithTimeToLive("visits", as: Int.self),
    ///        case .remaining(let left) = ttl { print(count, "for another", left) }
    ///
    /// - Throws: `.codingFailed` if the stored bytes are not a `Value`; `.lockTimeout`.
    public func getWithTimeToLive<Value: Decodable>(
        _ key: String, as type: Value.Type = Value.self
    ) throws(ShmError) -> (value: Value, timeToLive: TimeToLive)? {
        try _withKey(key) { (keyBuffer, base) throws(ShmError) -> (value: Value, timeToLive: TimeToLive)? in
            guard cache._lockFreeView.isAttached else { throw _detachedError("get", key) }
            // `known: nil`: the read copies the value (bytes is nil only for a version the caller knows).
            guard let read = try _getVersioned(keyBuffer, base: base, key: key, known: nil),
                let bytes = read.bytes
            else { return nil }
            let value = try _decode(Value.self, from: bytes, _operation("getWithTimeToLive", key), codec: _decoded.codec)
            return (value, _timeToLive(expiresAt: read.expiresAt, now: _monotonicNanoseconds()))
        }
    }

    /// The time left of an entry expiring at `expiresAt` (0: never), at `now`.
    func _timeToLive(expiresAt: UInt64, now: UInt64) -> TimeToLive {
        if expiresAt == 0 { return .forever }
        return .remaining(.nanoseconds(Int64(clamping: expiresAt > now ? expiresAt - now : 0)))
    }
}
