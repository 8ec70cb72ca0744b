import CShm

// Keyed set / get / remove of raw bytes, under the data segment's lock. The
// Codable API (ShmStore+Codable.swift) encodes to bytes and comes through here.

extension ShmStore {
    /// Where a key was found, under the data lock.
    struct _Located {
        var hash: UInt32
        var slot: ShmLRU._Slot
        var header: _PayloadHeader
        var payload: UnsafeRawBufferPointer
    }

    /// Stores `value` under `key` (replacing any value), and tells the key's listeners.
    ///
    /// - Parameters:
    ///   - key: the entry's key.
    ///   - value: the bytes to store.
    ///   - expiry: how long the entry lives; by default the store's `maxAge`
    ///     (`.keepCurrent`: the entry keeps its expiry).
    /// - Throws: `.valueTooLarge` when 24 + the key's UTF-8 length + the value's
    ///   exceed the record size; `.keyCollision` when every probe hash of the key is
    ///   taken by live entries of other keys; `.full` when the store is full and
    ///   refuses to evict; `.invalidArgument` for a non-positive expiry; `.lockTimeout`.
    ///   Nothing is changed when it throws.
    public func set(_ key: String, bytes value: UnsafeRawBufferPointer, expiry: Expiry = .storeDefault) throws(ShmError) {
        var operation: String { _operation("set", key) }  // formatted only when thrown
        _ = try _maxAge(for: expiry, operation)  // a bad expiry throws before the lock
        try _withKey(key) { (keyBuffer, base) throws(ShmError) in
            try _checkFits(keyBuffer.count, value.count, operation)
            try cache._withLockedHandle(operation) { (lru) throws(ShmError) in
                let now = _monotonicNanoseconds()
                let (found, free) = try _locateLocked(lru, keyBuffer, base: base, now: now, reclaim: true)
                let (expiresAt, maxAge) = try _expiry(expiry, found: found, now: now, operation)  // `.keepCurrent` keeps found's
                try _writeLocked(
                    lru, keyBuffer, value: value, found: found, free: free, base: base, now: now,
                    expiresAt: expiresAt, maxAge: maxAge, operation)
            }
        }
    }

    /// Stores bytes under `key`; see `set(_:bytes:expiry:)`.
    public func set(_ key: String, bytes value: [UInt8], expiry: Expiry = .storeDefault) throws(ShmError) {
        try _withBytes(value) { (buffer) throws(ShmError) in try set(key, bytes: buffer, expiry: expiry) }
    }

    /// The bytes stored under `key`; nil when absent or expired. A hit is a use of
    /// the entry per the store's promotion policy (and renews its age with
    /// `renewsAgeOnGet`); with interval promotion it takes no lock (see
    /// ShmStore+LockFreeRead.swift).
    public func bytes(_ key: String) throws(ShmError) -> [UInt8]? {
        guard cache._lockFreeView.isAttached else { throw _detachedError("get", key) }
        if _readsLockFree {
            switch _bytesLockFree(key) {
            case .hit(let bytes): return bytes
            case .miss: return nil
            case .locked: break
            }
        }
        return try _withKey(key) { (keyBuffer, base) throws(ShmError) -> [UInt8]? in
            try _getLocked(keyBuffer, base: base, key: key, known: nil)?.bytes
        }
    }

    /// Removes `key`; false if it was absent (or had expired). Tells its listeners.
    @discardableResult
    public func remove(_ key: String) throws(ShmError) -> Bool {
        let operation = _operation("remove", key)
        return try _withKey(key) { (keyBuffer, base) throws(ShmError) -> Bool in
            try cache._withLockedHandle(operation) { (lru) throws(ShmError) -> Bool in
                let now = _monotonicNanoseconds()
                guard let found = try _locateLocked(lru, keyBuffer, base: base, now: now, reclaim: true).found else { return false }
                try _reclaimLocked(lru, found.slot, payload: found.payload, header: found.header, kind: .removed)
                return true
            }
        }
    }

    /// True if `key` holds a value that has not expired. Not a use: it neither
    /// promotes, renews nor reclaims anything.
    public func contains(_ key: String) throws(ShmError) -> Bool {
        try _withKey(key) { (keyBuffer, base) throws(ShmError) -> Bool in
            guard cache._lockFreeView.isAttached else { throw _detachedError("contains", key) }
            if let found = _containsLockFree(keyBuffer, base: base) { return found }
            return try cache._withLockedHandle(_operation("contains", key)) { (lru) throws(ShmError) -> Bool in
                try _locateLocked(lru, keyBuffer, base: base, now: _monotonicNanoseconds(), reclaim: false).found != nil
            }
        }
    }

    /// The keys of the live (unexpired) entries, most recently used first.
    public func keys() throws(ShmError) -> [String] {
        try cache._withLockedHandle("ShmStore.keys(key: \(key))") { (lru) throws(ShmError) -> [String] in
            let now = _monotonicNanoseconds()
            var result: [String] = []
            try lru.walkThrowing(from: .mostRecent) { (slot) throws(ShmError) -> Bool in
                let payload = try lru.value(slot)
                if let header = _PayloadHeader.read(payload), !header.isExpired(now: now) {
                    result.append(String(decoding: header.key(in: payload), as: UTF8.self))
                }
                return true
            }
            return result
        }
    }

    // MARK: Internals (under the data lock)

    /// Looks for `key` under its probe hashes. Returns where it is, and the first
    /// probe hash that is free (for a set). With `reclaim`, expired entries met on
    /// the way are removed (and reported as expired).
    func _locateLocked(
        _ lru: ShmLRU._LockedHandle, _ key: UnsafeRawBufferPointer, base: UInt32, now: UInt64, reclaim: Bool
    ) throws(ShmError) -> (found: _Located?, free: UInt32?) {
        try _recoverHeapIfNeeded(lru)
        var free: UInt32? = nil
        for probe in 0..<configuration.probeLimit {
            let hash = base &+ UInt32(probe)
            guard let slot = lru.find(hash) else {
                if free == nil { free = hash }
                continue
            }
            let payload = try lru.value(slot)
            guard let header = _PayloadHeader.read(payload) else { continue }  // not a store record: leave it alone
            let matches = header.key(in: payload).elementsEqual(key)
            if header.isExpired(now: now) {
                guard reclaim else {
                    if matches { return (nil, nil) }
                    continue
                }
                try _reclaimLocked(lru, slot, payload: payload, header: header, kind: .expired)
                if free == nil { free = hash }
                if matches { return (nil, free) }
                continue
            }
            if matches { return (_Located(hash: hash, slot: slot, header: header, payload: payload), free) }
        }
        return (nil, free)
    }

}

/// Lends an array's bytes to a closure that throws `ShmError` only.
@inline(__always)
func _withBytes<R>(_ array: [UInt8], _ body: (UnsafeRawBufferPointer) throws(ShmError) -> R) throws(ShmError) -> R {
    try array.withUnsafeBytes { buffer in Result { () throws(ShmError) -> R in try body(buffer) } }.get()
}
