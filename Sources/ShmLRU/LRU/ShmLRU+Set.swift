import CShm

extension ShmLRU {
    /// What a `set` did.
    public struct SetResult: Sendable, Hashable {
        /// The record's byte offset in the segment (shm-typed-lru's return value): valid
        /// for `value(atOffset:)`, `remove(atOffset:)` and `setShareKey(_:atOffset:)`
        /// while the record lives.
        public var offset: Int
        /// True when the hash was present and its value replaced in place.
        public var updated: Bool
        /// The hash evicted to make room, if the cache was full.
        public var evictedHash: UInt32?
    }

    /// Stores `value` under `hash`. An existing hash is updated in place and
    /// becomes the most recently used; a new one takes a free record, or evicts
    /// the least recently used when the cache is full (unless `whenFull` is `.refuse`).
    ///
    /// - Parameters:
    ///   - hash: the record's key.
    ///   - value: the bytes, at most `recordSize` of them.
    ///   - shareKey: tags the record (see `reloadIndex(shareKey:)`); nil
    ///     keeps an updated record's tag (0 for a new one).
    /// - Throws: `.valueTooLarge` (nothing written) when `value` exceeds
    ///   `recordSize`; `.full` when full and refusing; `.lockTimeout`.
    @discardableResult
    public func set(_ hash: UInt32, bytes value: UnsafeRawBufferPointer, shareKey: UInt32? = nil) throws(ShmError) -> SetResult {
        guard value.count <= recordSize else {
            throw ShmError(
                .valueTooLarge, "set(\(hash), key: \(key))", detail: "\(value.count) bytes; records hold \(recordSize)")
        }
        if _attachment.isAttached { _probe.warm(hash) }  // hints: see `_Probe.warm(_:)`; never on a gone mapping
        return try _withLock("set(\(hash), key: \(key))") { () throws(ShmError) -> SetResult in
            try _setLocked(hash, value, shareKey: shareKey)
        }
    }

    /// Stores bytes under `hash`; see `set(_:bytes:shareKey:)`.
    @discardableResult
    public func set(_ hash: UInt32, _ value: [UInt8], shareKey: UInt32? = nil) throws(ShmError) -> SetResult {
        try value.withUnsafeBytes { buffer in
            Result { () throws(ShmError) -> SetResult in try set(hash, bytes: buffer, shareKey: shareKey) }
        }.get()
    }

    /// Stores a string's UTF-8 bytes under `hash`; see `set(_:bytes:shareKey:)`.
    @discardableResult
    public func set(_ hash: UInt32, _ value: String, shareKey: UInt32? = nil) throws(ShmError) -> SetResult {
        var value = value
        return try value.withUTF8 { buffer in
            Result { () throws(ShmError) -> SetResult in try set(hash, bytes: UnsafeRawBufferPointer(buffer), shareKey: shareKey) }
        }.get()
    }

    func _setLocked(_ hash: UInt32, _ value: UnsafeRawBufferPointer, shareKey: UInt32?) throws(ShmError) -> SetResult {
        let exactNow = _lockedNow()
        if let found = _find(hash) {
            // Each path takes its own copy of the segment handle: one `let` above
            // both made the compiler copy the whole `_Segment` (its layout: 112
            // bytes) to the stack on every update too, because the insert path below
            // hands it to functions that take it by address (+12 instructions a
            // set-update, issue 26).
            let s = _segment
            s.writeRecord(found.slot, hash: hash, state: _Layout.stateLive, value: value)
            if let shareKey { s.setShareKey(found.slot, shareKey) }
            try _promoteLocked(found.slot, now: exactNow)
            s.bumpStat(_Layout.H.statUpdates)
            s.publishChange()
            return SetResult(offset: s.layout.recordOffset(found.slot), updated: true, evictedHash: nil)
        }
        let s = _segment
        // A new record's stamp: read now, while no memory access is in flight
        // (the interval mode's coarse clock; exact LRU's precise one was read above).
        let now = exactNow != 0 ? exactNow : _coarseMonotonicNanoseconds()
        var evicted: UInt32? = nil
        let slot: UInt32
        if let free = try _allocate() {
            slot = free
            _fault(.setAllocated)
        } else {
            guard options.whenFull == .evict else {
                throw ShmError(.full, "set(\(hash), key: \(key))", detail: "all \(capacity) records are in use")
            }
            guard let victim = try _evictTail(reused: true) else { throw _corrupted("no free record and an empty LRU list") }
            slot = victim.slot
            evicted = victim.hash
            _fault(.setEvicted)
        }
        s.writeRecord(slot, hash: hash, state: _Layout.stateLive, value: value)
        s.setShareKey(slot, shareKey ?? 0)
        try _linkNew(slot, hash: hash, now: now)  // stamps, then links per the policy
        _fault(.setLinked)
        s.count &+= 1  // wraps rather than traps on a corrupt count (verify() reports it)
        do { try _indexInsert(hash, slot: slot) } catch {
            // Undo the insert so the structure stays whole, then report.
            try? _unlink(slot)
            s.markFree(slot)
            _pushFree(slot)
            s.count &-= 1
            throw error
        }
        s.bumpStat(_Layout.H.statInserts)
        s.publishChange()
        return SetResult(offset: s.layout.recordOffset(slot), updated: false, evictedHash: evicted)
    }

    /// Tags the live record at `offset` with `shareKey` (shm-typed-lru's `set_share_key`).
    /// - Throws: `.invalidOffset`, `.alreadyDeleted`.
    public func setShareKey(_ shareKey: UInt32, atOffset offset: Int) throws(ShmError) {
        let slot = try _slot(atOffset: offset, "setShareKey(\(shareKey), atOffset: \(offset))")
        try _withLock("setShareKey(atOffset: \(offset))") { () throws(ShmError) in
            guard _segment.isLive(meta: _segment.meta(slot)) else {
                throw ShmError(.alreadyDeleted, "setShareKey(\(shareKey), atOffset: \(offset))")
            }
            _segment.setShareKey(slot, shareKey)
        }
    }

    /// The slot of a record offset, or `.invalidOffset`.
    func _slot(atOffset offset: Int, _ operation: @autoclosure () -> String) throws(ShmError) -> UInt32 {
        guard let slot = _segment.layout.slot(atOffset: offset) else {
            throw ShmError(
                .invalidOffset, operation(),
                detail: "records start at \(_segment.layout.recordsOffset), every \(_segment.layout.stride) bytes, \(capacity) of them")
        }
        return slot
    }
}
