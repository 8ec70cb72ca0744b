import CShm

// The store's write path, under the data segment's lock: every set, update, add,
// remove, expiry and eviction of a store (records sized by records or by memory)
// ends here. The public entry points (ShmStore+Values.swift: set, remove;
// ShmStore+Atomic.swift: update, add; ShmStore+Load.swift, ShmStore+TTL.swift,
// the snapshot restore) lend the key's bytes and probe hash (`_withKey`),
// locate it (`_locateLocked`), then:
//
//   _checkFits ── _expiry ── _writeLocked ─┬─ _makeRoomLocked ── _reclaimExpiredLocked
//                                          │        └─ _evictOneLocked (the policy's victim; logged, chunks freed)
//                                          ├─ _writeWithHeapLocked (memory mode: ShmStore+SpilledValues.swift)
//                                          └─ _storeRecordLocked (lru.set / lru.replace, then the change log)
//   _reclaimLocked (remove, expiry)   _setExpiryLocked (a renewing get)
//
// A payload is built by `_StorePayload` (the one writer of its format), on the
// stack for a record (`withPayload`: no array allocated per write).

extension ShmStore {
    func _checkFits(_ keyCount: Int, _ valueCount: Int, _ operation: @autoclosure () -> String) throws(ShmError) {
        if let heap = _heap { return try _checkFitsHeap(heap, keyCount, valueCount, operation()) }
        let total = _StoreLayout.payloadHeaderSize + keyCount + valueCount
        guard total <= cache.recordSize else {
            throw ShmError(
                .valueTooLarge, operation(),
                detail: "24-byte header + \(keyCount)-byte key + \(valueCount)-byte value = \(total) bytes; records hold \(cache.recordSize)")
        }
    }

    /// The expiry instant and max age of a value written now with `expiry`.
    func _expiry(_ expiry: Expiry, found: _Located?, now: UInt64, _ operation: @autoclosure () -> String) throws(ShmError)
        -> (expiresAt: UInt64, maxAge: UInt64)
    {
        if case .keepCurrent = expiry, let found { return (found.header.expiresAt, found.header.maxAge) }
        let maxAge = try _maxAge(for: expiry, operation())
        return (maxAge == 0 ? 0 : _saturatingAdd(now, maxAge), maxAge)
    }

    /// Writes a value for a key located under the data lock: over its record when
    /// found, else under the first free probe hash (making room in a full store).
    /// The same steps as `set(_:bytes:expiry:)`.
    func _writeLocked(
        _ lru: ShmLRU._LockedHandle, _ key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, found: _Located?, free: UInt32?, base: UInt32, now: UInt64,
        expiresAt: UInt64, maxAge: UInt64, _ operation: @autoclosure () -> String
    ) throws(ShmError) {
        let hash: UInt32
        if let found {
            hash = found.hash
        } else {
            guard let free else {
                throw ShmError(
                    .keyCollision, operation(),
                    detail: "hashes \(base)...\(base &+ UInt32(configuration.probeLimit - 1)) are all taken by other keys")
            }
            hash = free
            // The data segment holds one spare record beyond the store's capacity.
            if lru.count >= configuration.capacity { try _makeRoomLocked(lru, now: now, operation()) }
        }
        if let heap = _heap {
            return try _writeWithHeapLocked(
                lru, heap, key, value: value, found: found, hash: hash, now: now, expiresAt: expiresAt, maxAge: maxAge, operation())
        }
        try _StorePayload.withPayload(key: key, value: value, expiresAt: expiresAt, maxAge: maxAge) { (payload) throws(ShmError) in
            try _storeRecordLocked(lru, payload, found: found, hash: hash)
        }
    }

    /// Writes a record payload for a key located under the data lock, and logs it.
    func _storeRecordLocked(_ lru: ShmLRU._LockedHandle, _ payload: UnsafeRawBufferPointer, found: _Located?, hash: UInt32)
        throws(ShmError)
    {
        // An update goes to a fresh record (the spare, at least): a writer
        // killed meanwhile leaves the previous value, not nothing.
        if let found, try lru.replace(found.slot, hash: hash, payload) {
        } else {
            try lru.set(hash, payload)
        }
        _store.appendChange(.set, payload: payload)
    }

    /// Removes a record and logs why (removed, expired).
    func _reclaimLocked(
        _ lru: ShmLRU._LockedHandle, _ slot: ShmLRU._Slot, payload: UnsafeRawBufferPointer, header: _PayloadHeader,
        kind: _ChangeKind
    ) throws(ShmError) {
        _store.appendChange(kind, payload: header.keyed(in: payload))
        try _releasingChunks(header, payload) { () throws(ShmError) in try lru.remove(slot) }
    }

    /// Frees a record for a new key in a full store: expired entries among the 32
    /// least recently used first; else the entry the eviction policy chooses is
    /// evicted (or `.full` is thrown with `whenFull: .refuse`), never `sparing`.
    func _makeRoomLocked(_ lru: ShmLRU._LockedHandle, now: UInt64, _ operation: String, sparing: ShmLRU._Slot? = nil) throws(ShmError) {
        if try _reclaimExpiredLocked(lru, now: now, lookingAt: 32) > 0 { return }
        guard configuration.whenFull == .evict else {
            throw ShmError(.full, operation, detail: "all \(configuration.capacity) entries are live")
        }
        try _evictOneLocked(lru, sparing: sparing)
    }

    /// Evicts the entry the policy chooses, logging it and freeing its chunks.
    /// `sparing` (the record being updated) is promoted first and never evicted:
    /// if the policy still picks it, it is passed over (a few times, then `.full`).
    func _evictOneLocked(_ lru: ShmLRU._LockedHandle, sparing: ShmLRU._Slot?) throws(ShmError) {
        for _ in 0..<8 {
            if let sparing { try lru.promote(sparing) }
            var chunks: _ValueHeap.Descriptor? = nil
            var spilled = false
            let victim: (slot: ShmLRU._Slot, hash: UInt32)?
            do {
                victim = try lru.evict { (victim) throws(ShmError) in
                    if victim == sparing { throw ShmError(.full, _ShmStoreSpare.operation) }
                    // Its key goes to the log while its record still holds it.
                    let payload = try lru.value(victim)
                    guard let header = _PayloadHeader.read(payload) else { return }
                    _store.appendChange(.evicted, payload: header.keyed(in: payload))
                    if let heap = _heap, _isSpilled(header) {
                        spilled = true
                        chunks = _spilledDescriptor(header, payload)
                        heap.begin()
                    }
                }
            } catch where error.code == .full && error.operation == _ShmStoreSpare.operation {
                continue
            }
            guard victim != nil else { throw lru.corrupted("full, but nothing to evict") }
            if spilled, let heap = _heap, let chunks, heap.free(chunks) { heap.end() }
            return
        }
        throw ShmError(.full, "ShmStore.set(key: \(key))", detail: "the eviction policy keeps choosing the entry being updated")
    }

    /// Rewrites a live record's expiry inside its seqlock.
    func _setExpiryLocked(_ lru: ShmLRU._LockedHandle, _ slot: ShmLRU._Slot, _ expiresAt: UInt64) {
        lru.rewritePayload(slot) { payload in _StorePayload.storeExpiry(expiresAt, at: payload) }
    }
}

/// The marker error `_evictOneLocked` throws from `willEvict` to pass over the spared record.
enum _ShmStoreSpare {
    static let operation = "ShmStore._evictOneLocked(sparing:)"
}
