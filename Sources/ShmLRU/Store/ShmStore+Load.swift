import CShm

// Get-or-load with cross-process single-flight, after lua-resty-mlcache's `get`
// with a callback (its L3 loader under resty.lock, `neg_ttl`, `resurrect_ttl`):
//
// 1. A live value is returned as `get` would (promoted, age renewed if so
//    configured); a remembered miss returns nil.
// 2. On a miss, the caller takes the key's *load lock* (a per-key lock of its
//    own kind in the lock table, so it never blocks the key's ordinary lock),
//    asynchronously: at most one caller in all processes loads at a time.
// 3. Holding it, it looks again: a value that another process loaded while this
//    one waited is returned without loading. Otherwise `load` runs; its value is
//    stored (the store's default expiry), or its nil remembered for `negativeTTL`.
// 4. If `load` throws and the key's value expired at most `staleIfError` ago
//    (and has not been reclaimed since), that stale value is returned instead.
//
// A remembered miss is an entry under a reserved key: U+0000 "neg" U+0000 and the
// key (reserved: applications should not use keys starting with U+0000). It
// shows in `keys()` and to listeners of that reserved key only.

extension ShmStore {
    /// The value under `key`, loading it with `load` on a miss, once for all
    /// processes: when any number of callers in any number of processes miss the
    /// same key at once, one runs `load` and the others wait (asynchronously,
    /// without a thread each) and receive its value.
    ///
    /// - Parameters:
    ///   - key: the entry's key.
    ///   - type: the value's type.
    ///   - load: returns the value to store (the store's default expiry),
    ///     or nil for "there is none" (remembered for the store's `negativeTTL`).
    /// - Returns: the value, or nil when there is none.
    /// - Throws: what `load` throws, unless a value expired at most `staleIfError`
    ///   ago is still present (then that value is returned); `.lockTimeout` when
    ///   another caller's load took longer than this handle's `lockTimeout`;
    ///   `.codingFailed` when the stored bytes are not a `V`; `.cancelled`.
    public func get<V: Codable & Sendable>(
        _ key: String, as type: V.Type = V.self, orLoad load: @Sendable () async throws -> V?
    ) async throws -> V? {
        let operation = _operation("get(orLoad:)", key)
        switch try _lookupForLoad(key, operation) {
        case .value(let bytes): return try _decode(V.self, from: bytes, operation, codec: _decoded.codec)
        case .negative: return nil
        case .miss: break
        }
        let identity = try _locks.identity(key, kind: _LockTable.kindLoad, operation)
        let grant = try await _asyncLocks.lock(identity, deadline: _locks.deadline(nil), operation)
        do {
            let result = try await _loadHoldingLock(key, as: V.self, load, operation)
            try _unlock(identity, id: grant.id, operation)
            return result
        } catch {
            try? _unlock(identity, id: grant.id, operation)
            throw error
        }
    }

    private func _loadHoldingLock<V: Codable & Sendable>(
        _ key: String, as type: V.Type, _ load: @Sendable () async throws -> V?, _ operation: String
    ) async throws -> V? {
        let stale: [UInt8]?
        switch try _lookupForLoad(key, operation) {
        case .value(let bytes): return try _decode(V.self, from: bytes, operation, codec: _decoded.codec)  // loaded while we waited
        case .negative: return nil
        case .miss(let expired): stale = expired
        }
        let value: V?
        do { value = try await load() } catch {
            if let stale { return try _decode(V.self, from: stale, operation, codec: _decoded.codec) }
            throw error
        }
        let negativeKey = _negativeKey(key)
        if let value {
            try set(key, value)
            if _negativeTTLNanoseconds != 0 { try remove(negativeKey) }
        } else if _negativeTTLNanoseconds != 0, _fitsRecord(negativeKey) {
            try set(negativeKey, bytes: [], expiry: .after(.nanoseconds(Int64(clamping: _negativeTTLNanoseconds))))
        }
        return value
    }

    enum _LoadLookup {
        case value([UInt8])
        case negative
        /// Absent, with the value if it expired at most `staleIfError` ago.
        case miss(stale: [UInt8]?)
    }

    /// One look under the data lock: the live value (used, as a `get`), a
    /// remembered miss, or a miss with the stale value if any. Reclaims nothing.
    func _lookupForLoad(_ key: String, _ operation: String) throws(ShmError) -> _LoadLookup {
        let keyBytes = Array(key.utf8)
        let negativeBytes = Array(_negativeKey(key).utf8)
        let base = _hash(key)
        let negativeBase = _hash(_negativeKey(key))
        let window = _staleIfErrorNanoseconds
        return try _withBytes(keyBytes) { (keyBuffer) throws(ShmError) -> _LoadLookup in
            try _withBytes(negativeBytes) { (negativeBuffer) throws(ShmError) -> _LoadLookup in
                try cache._withLockedHandle(operation) { (lru) throws(ShmError) -> _LoadLookup in
                    let now = _monotonicNanoseconds()
                    var stale: [UInt8]? = nil
                    if let found = try _findAnyLocked(lru, keyBuffer, base: base) {
                        if !found.header.isExpired(now: now) {
                            let value = try _valueBytesLocked(lru, found.header, found.payload)
                            try lru.promote(found.slot)
                            if configuration.renewsAgeOnGet, found.header.maxAge != 0 {
                                _setExpiryLocked(lru, found.slot, _saturatingAdd(now, found.header.maxAge))
                            }
                            return .value(value)
                        }
                        if window != 0, _saturatingAdd(found.header.expiresAt, window) > now {
                            stale = try _valueBytesLocked(lru, found.header, found.payload)
                        }
                    }
                    if _negativeTTLNanoseconds != 0, let negative = try _findAnyLocked(lru, negativeBuffer, base: negativeBase),
                        !negative.header.isExpired(now: now)
                    {
                        return .negative
                    }
                    return .miss(stale: stale)
                }
            }
        }
    }

    /// The record of `key` under its probe hashes, expired or not (under the data lock).
    func _findAnyLocked(_ lru: ShmLRU._LockedHandle, _ key: UnsafeRawBufferPointer, base: UInt32) throws(ShmError) -> _Located? {
        try _recoverHeapIfNeeded(lru)
        for probe in 0..<configuration.probeLimit {
            let hash = base &+ UInt32(probe)
            guard let slot = lru.find(hash) else { continue }
            let payload = try lru.value(slot)
            guard let header = _PayloadHeader.read(payload), header.key(in: payload).elementsEqual(key) else { continue }
            return _Located(hash: hash, slot: slot, header: header, payload: payload)
        }
        return nil
    }

    func _negativeKey(_ key: String) -> String { "\u{0}neg\u{0}" + key }

    func _fitsRecord(_ key: String) -> Bool {
        _StoreLayout.payloadHeaderSize + key.utf8.count + (_heap == nil ? 0 : _ValueHeap.descriptorSize) <= cache.recordSize
    }

    var _negativeTTLNanoseconds: UInt64 { configuration.negativeTTL.map { UInt64(max(1, _nanoseconds($0))) } ?? 0 }
    var _staleIfErrorNanoseconds: UInt64 { configuration.staleIfError.map { UInt64(max(1, _nanoseconds($0))) } ?? 0 }
}
