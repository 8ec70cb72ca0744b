import CShm

// Keyed set / get / remove of raw bytes, under the data segment's lock. The
// Codable API (ShmStore+Codable.swift) encodes to bytes and comes through here.

extension ShmStore {
    /// Where a key was found, under the data lock.
    struct _Located {
        var hash: UInt32
        var slot: UInt32
        var header: _PayloadHeader
        var payload: UnsafeRawBufferPointer
    }

    /// Stores `value` under `key` (replacing any value), and tells the key's listeners.
    ///
    /// - Parameter expiry: how long the entry lives; by default the store's `maxAge`.
    /// - Throws: `.valueTooLarge` when 24 + the key's UTF-8 length + the value's
    ///   exceed the record size; `.keyCollision` when every probe hash of the key is
    ///   taken by live entries of other keys; `.full` when the store is full and
    ///   refuses to evict; `.invalidArgument` for a non-positive expiry; `.lockTimeout`.
    ///   Nothing is changed when it throws.
    public func set(_ key: String, bytes value: UnsafeRawBufferPointer, expiry: Expiry = .storeDefault) throws(ShmError) {
        let operation = _operation("set", key)
        let maxAge = try _maxAge(for: expiry, operation)
        let keyBytes = Array(key.utf8)
        let total = _StoreLayout.payloadHeaderSize + keyBytes.count + value.count
        guard total <= cache.recordSize else {
            throw ShmError(
                .valueTooLarge, operation,
                detail: "24-byte header + \(keyBytes.count)-byte key + \(value.count)-byte value = \(total) bytes; records hold \(cache.recordSize)")
        }
        let base = _hash(key)
        try _withBytes(keyBytes) { (keyBuffer) throws(ShmError) in
            try cache._withLock(operation) { () throws(ShmError) in
                let now = cshm_monotonic_ns()
                let expiresAt = maxAge == 0 ? 0 : _saturatingAdd(now, maxAge)
                let payload = _makePayload(key: keyBuffer, value: value, expiresAt: expiresAt, maxAge: maxAge)
                let (found, free) = try _locateLocked(keyBuffer, base: base, now: now, reclaim: true)
                let hash: UInt32
                if let found {
                    hash = found.hash
                } else {
                    guard let free else {
                        throw ShmError(
                            .keyCollision, operation,
                            detail: "hashes \(base)...\(base &+ UInt32(configuration.probeLimit - 1)) are all taken by other keys")
                    }
                    hash = free
                    if Int(cache._segment.count) >= configuration.capacity { try _makeRoomLocked(now: now, operation) }
                }
                try _withBytes(payload) { (payloadBuffer) throws(ShmError) in
                    // An update goes to a fresh record (the store keeps one spare):
                    // a writer killed meanwhile leaves the previous value, not nothing.
                    var replaced = false
                    if let found { replaced = try cache._replaceLocked(found.slot, hash: hash, payloadBuffer) != nil }
                    if !replaced { _ = try cache._setLocked(hash, payloadBuffer, shareKey: nil) }
                    _store.appendChange(.set, payload: payloadBuffer)
                }
            }
        }
    }

    /// Stores bytes under `key`; see `set(_:bytes:expiry:)`.
    public func set(_ key: String, bytes value: [UInt8], expiry: Expiry = .storeDefault) throws(ShmError) {
        try _withBytes(value) { (buffer) throws(ShmError) in try set(key, bytes: buffer, expiry: expiry) }
    }

    /// The bytes stored under `key`; nil when absent or expired. A hit makes the
    /// entry the most recently used (and renews its age with `renewsAgeOnGet`).
    public func bytes(_ key: String) throws(ShmError) -> [UInt8]? {
        let operation = _operation("get", key)
        let base = _hash(key)
        return try _withBytes(Array(key.utf8)) { (keyBuffer) throws(ShmError) -> [UInt8]? in
            try cache._withLock(operation) { () throws(ShmError) -> [UInt8]? in
                let now = cshm_monotonic_ns()
                guard let found = try _locateLocked(keyBuffer, base: base, now: now, reclaim: true).found else { return nil }
                let value = Array(found.header.value(in: found.payload))
                try cache._promote(found.slot, now: now)
                if configuration.renewsAgeOnGet, found.header.maxAge != 0 {
                    _setExpiryLocked(found.slot, _saturatingAdd(now, found.header.maxAge))
                }
                return value
            }
        }
    }

    /// Removes `key`; false if it was absent (or had expired). Tells its listeners.
    @discardableResult
    public func remove(_ key: String) throws(ShmError) -> Bool {
        let operation = _operation("remove", key)
        let base = _hash(key)
        return try _withBytes(Array(key.utf8)) { (keyBuffer) throws(ShmError) -> Bool in
            try cache._withLock(operation) { () throws(ShmError) -> Bool in
                let now = cshm_monotonic_ns()
                guard let found = try _locateLocked(keyBuffer, base: base, now: now, reclaim: true).found else { return false }
                try _reclaimLocked(found.slot, payload: found.payload, header: found.header, kind: .removed)
                return true
            }
        }
    }

    /// True if `key` holds a value that has not expired. Not a use: it neither
    /// promotes, renews nor reclaims anything.
    public func contains(_ key: String) throws(ShmError) -> Bool {
        let operation = _operation("contains", key)
        let base = _hash(key)
        return try _withBytes(Array(key.utf8)) { (keyBuffer) throws(ShmError) -> Bool in
            try cache._withLock(operation) { () throws(ShmError) -> Bool in
                try _locateLocked(keyBuffer, base: base, now: cshm_monotonic_ns(), reclaim: false).found != nil
            }
        }
    }

    /// The keys of the live (unexpired) entries, most recently used first.
    public func keys() throws(ShmError) -> [String] {
        try cache._withLock("ShmStore.keys(key: \(key))") { () throws(ShmError) -> [String] in
            let s = cache._segment
            let now = cshm_monotonic_ns()
            var result: [String] = []
            var slot = s.head
            var steps = 0
            while slot != _Layout.none, steps < cache.capacity {
                guard s.isSlot(slot) else { throw cache._corrupted("LRU link \(slot) out of range") }
                let payload = try cache._valueLocked(slot)
                if let header = _PayloadHeader.read(payload), !header.isExpired(now: now) {
                    result.append(String(decoding: header.key(in: payload), as: UTF8.self))
                }
                slot = s.next(slot)
                steps += 1
            }
            return result
        }
    }

    // MARK: Internals (under the data lock)

    /// Looks for `key` under its probe hashes. Returns where it is, and the first
    /// probe hash that is free (for a set). With `reclaim`, expired entries met on
    /// the way are removed (and reported as expired).
    func _locateLocked(_ key: UnsafeRawBufferPointer, base: UInt32, now: UInt64, reclaim: Bool) throws(ShmError)
        -> (found: _Located?, free: UInt32?)
    {
        var free: UInt32? = nil
        for probe in 0..<configuration.probeLimit {
            let hash = base &+ UInt32(probe)
            guard let hit = cache._find(hash) else {
                if free == nil { free = hash }
                continue
            }
            let payload = try cache._valueLocked(hit.slot)
            guard let header = _PayloadHeader.read(payload) else { continue }  // not a store record: leave it alone
            let matches = header.key(in: payload).elementsEqual(key)
            if header.isExpired(now: now) {
                guard reclaim else {
                    if matches { return (nil, nil) }
                    continue
                }
                try _reclaimLocked(hit.slot, payload: payload, header: header, kind: .expired)
                if free == nil { free = hash }
                if matches { return (nil, free) }
                continue
            }
            if matches { return (_Located(hash: hash, slot: hit.slot, header: header, payload: payload), free) }
        }
        return (nil, free)
    }

    /// Removes a record and logs why (removed, expired).
    func _reclaimLocked(_ slot: UInt32, payload: UnsafeRawBufferPointer, header: _PayloadHeader, kind: _ChangeKind) throws(ShmError) {
        _store.appendChange(kind, payload: UnsafeRawBufferPointer(rebasing: payload[0..<(_StoreLayout.P.key + header.keyLength)]))
        try cache._removeLocked(slot, indexPosition: nil)
    }

    /// Frees a record for a new key in a full store: expired entries among the 32
    /// least recently used first; else the least recently used entry is evicted
    /// (or `.full` is thrown with `whenFull: .refuse`).
    func _makeRoomLocked(now: UInt64, _ operation: String) throws(ShmError) {
        if try _reclaimExpiredLocked(now: now, lookingAt: 32) > 0 { return }
        let s = cache._segment
        guard configuration.whenFull == .evictLeastRecentlyUsed else {
            throw ShmError(.full, operation, detail: "all \(configuration.capacity) entries are live")
        }
        let tail = s.tail
        guard tail != _Layout.none, s.isSlot(tail) else { throw cache._corrupted("full, but no tail") }
        let payload = try cache._valueLocked(tail)
        if let header = _PayloadHeader.read(payload) {
            _store.appendChange(.evicted, payload: UnsafeRawBufferPointer(rebasing: payload[0..<(_StoreLayout.P.key + header.keyLength)]))
        }
        guard let victim = try cache._evictTail() else { throw cache._corrupted("full, but nothing to evict") }
        cache._pushFree(victim.slot)
        s.publishChange()
    }

    /// Rewrites a live record's expiry inside its seqlock.
    func _setExpiryLocked(_ slot: UInt32, _ expiresAt: UInt64) {
        let s = cache._segment
        let seq = s.seqPointer(slot)
        let start = cshm_load_relaxed_u32(seq)
        cshm_store_relaxed_u32(seq, start | 1)
        cshm_fence_release()
        cshm_store_relaxed_u64((s.payload(slot) + _StoreLayout.P.expiresAt).assumingMemoryBound(to: UInt64.self), expiresAt)
        cshm_store_release_u32(seq, (start | 1) &+ 1)
    }
}

/// Lends an array's bytes to a closure that throws `ShmError` only.
@inline(__always)
func _withBytes<R>(_ array: [UInt8], _ body: (UnsafeRawBufferPointer) throws(ShmError) -> R) throws(ShmError) -> R {
    try array.withUnsafeBytes { buffer in Result { () throws(ShmError) -> R in try body(buffer) } }.get()
}

@inline(__always)
func _saturatingAdd(_ a: UInt64, _ b: UInt64) -> UInt64 {
    let (sum, overflow) = a.addingReportingOverflow(b)
    return overflow ? .max : sum
}
