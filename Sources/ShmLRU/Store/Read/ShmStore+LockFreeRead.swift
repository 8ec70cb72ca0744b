import CShm
import Glibc

// Lock-free store reads. With interval promotion (`Configuration.promotion`,
// the default) a read that finds its key takes no lock: for each probe hash of
// the key (hash, hash+1, … probeLimit) it finds the record through the data
// segment's shared index, exactly as `ShmLRU.get` does in interval mode, and
// inside the record's seqlock (sequence even and unchanged around every read)
// checks the record's hash and state, the store header's key length against the
// record's length, and the stored key against the asked one; then it copies the
// value (or, for a decoded-cache check, only notes the record's version). A read
// that met a writer retries, and after `ShmLRU._optimisticAttempts` attempts
// takes the lock, which also repairs a record a dead writer left odd.
//
// An expired entry is never returned: `contains` reports it absent without the
// lock; a get that meets it takes the lock to reclaim it (once: then it is gone),
// as every get did before, and reports it absent. A get that must renew the
// entry's age (`renewsAgeOnGet` and an entry with a max age) writes, so it takes
// the lock too. Neither is a hit on a live entry, the path kept lock-free. With exact promotion (`.onEveryRead`) every get
// takes the lock and moves its record to the head, as before.
//
// The copy reads (`bytes(_:into:)`, `withBytes`, `bytes(_:)`) try a leaner
// attempt first (`_copyOnce`: a live entry without an expiry, copied as
// `ShmLRU.get` copies, no view and no closure); whatever it does not settle
// goes through the general attempt above.
//
// The hit path formats no string (an error's description is built only when it
// is thrown), allocates nothing for the key (it is hashed and compared from the
// String's own UTF-8 storage) and reads no clock unless the entry has an expiry
// (then CLOCK_MONOTONIC, the expiry's clock); the use mark takes the cache
// handle's coarse clock (`ShmLRU._readClock`).
//
// Cache lines per read (issue 28; cachegrind --cache-sim=yes, last level 32 MiB,
// `ShmLRUBench store-profile` at 1M entries, 16-byte keys, ~220-byte JSON
// values): a copy read (`bytes(_:into:)`, `withBytes`, `bytes(_:)`) touches the
// index entry's line and the record's lines (its header: sequence, hash,
// length, use stamp; the payload header and key; the value), ~5.5 last-level
// misses per read in the store's code, against ~4.5 for the cache's own get of
// a 200-byte value in a 288-byte stride: the one more is the longer record (32
// + 24 + 16 + ~220 bytes in a 352-byte stride, which starts mid-line every
// other slot). No other shared line is touched but the index sequence's
// (segment header line 3, which holds nothing else and is written only when
// the index is reshaped, so it stays cached), as in the cache's get: no hint
// or statistics word (the hit counter is the handle's), and the use mark
// writes the header line the read already holds, at most once per interval
// per record (and on the first few uses, for S3-FIFO's frequency). The bench's other ~2.4 misses per
// read (7.9 in all) are its caller's key: the array of 1M Strings and each
// String's storage, loaded before the store is called, at the head of the
// chain of dependent loads (key bytes, hash, index entry, record) that the
// cache's get, given a computed hash, does not have. A decoded-cache hit: see
// _DecodedCache.swift.

extension ShmStore {
    /// Where a lock-free read found its key: the record, its slot and sequence
    /// (its version: every write of the record changes it), and the payload's fields.
    struct _RecordView {
        var record: UnsafeMutableRawPointer
        var slot: UInt32
        var seq: UInt32
        var hash: UInt32
        var expiresAt: UInt64
        /// The value's bytes in the segment: read them only inside the seqlock window.
        /// For a spilled value (`flags`, memory mode), its heap descriptor.
        var value: UnsafeRawBufferPointer
        /// The payload's flags (`_StoreLayout.payloadSpilled`).
        var flags: UInt32
    }

    enum _LockFreeOutcome<R> {
        case hit(R, _RecordView)
        case miss
        /// A writer was met: retry, then take the lock.
        case contended
        /// The read must write (renew the age): take the lock.
        case needsLock
    }

    /// Whether a store read may go lock-free (interval promotion).
    @inline(__always) var _readsLockFree: Bool { cache._lockFreeView.readsLockFree }

    /// The thrown `.detached` error, formatted off the hot path.
    @inline(never)
    func _detachedError(_ name: StaticString, _ key: String) -> ShmError {
        ShmError(.detached, _operation("\(name)", key))
    }

    /// Runs `body` on one lock-free sight of `key`, inside the record's seqlock,
    /// with retries; nil after `ShmLRU._optimisticAttempts` contended attempts
    /// (the caller then takes the lock). `body` may run more than once and its
    /// result is kept only if the record did not change around it: it must read
    /// the record only through the view, and check every length it uses; it
    /// returns nil when a spilled value's chunks changed under it (a retry).
    /// - Parameter use: a get (counts a hit, marks the record used, renews); not `contains`.
    @inline(__always)
    func _readLockFree<R>(
        _ key: UnsafeRawBufferPointer, base: UInt32, use: Bool, _ body: (_RecordView) -> R?
    ) -> _LockFreeOutcome<R>? {
        var attempts = ShmLRU._optimisticAttempts
        while attempts > 0 {
            let outcome = _readOnce(key, base: base, use: use, body)
            if case .contended = outcome {
                attempts &-= 1
                continue
            }
            return outcome
        }
        return nil
    }

    /// Where one lock-free search over the key's probe hashes ended (`_sightKey`).
    enum _KeySighting {
        /// The key's live record, its payload and the probe hash it was found under.
        case found(_RecordSight, _StorePayload, hash: UInt32)
        /// No record of the key, and the index did not move during the search.
        case miss
        /// A writer was met: nothing was decided.
        case contended
    }

    /// The search both lock-free reads share (`_readOnce`, `_copyOnce`): every
    /// probe hash of the key in turn, the one live record of each checked for
    /// the key inside its seqlock window. A record of another key decides
    /// nothing unless it was whole when compared. The caller reads what it needs
    /// from the found record and checks `isUnchanged()` after.
    @inline(__always)
    func _sightKey(_ key: UnsafeRawBufferPointer, base: UInt32, _ p: _Probe) -> _KeySighting {
        guard let snapshot = p.indexSnapshot() else { return .contended }
        var probe = 0
        let probeLimit = configuration.probeLimit
        while probe < probeLimit {
            let hash = base &+ UInt32(truncatingIfNeeded: probe)
            probe &+= 1
            let sight: _RecordSight
            switch p.sight(hash) {
            case .found(let found): sight = found
            case .absent: continue  // the next probe hash
            case .contended: return .contended
            }
            // The one live record of this hash: is it the key's?
            let length = sight.length
            guard length <= p.recordSize, let stored = _StorePayload(sight.words.payload, count: length), stored.hasKey(key) else {
                // Another key (or not a store record): decided only if nothing moved.
                if !sight.isUnchanged() { return .contended }
                continue  // next probe hash
            }
            return .found(sight, stored, hash: hash)
        }
        return p.indexUnchanged(since: snapshot) ? .miss : .contended
    }

    /// One lock-free attempt over every probe hash of the key.
    @inline(__always)
    func _readOnce<R>(
        _ key: UnsafeRawBufferPointer, base: UInt32, use: Bool, _ body: (_RecordView) -> R?
    ) -> _LockFreeOutcome<R> {
        let sight: _RecordSight, stored: _StorePayload, hash: UInt32
        switch _sightKey(key, base: base, cache._lockFreeView.probe) {
        case .found(let s, let payload, let h): (sight, stored, hash) = (s, payload, h)
        case .miss:
            if use { cache._lockFreeView.noteMiss() }
            return .miss
        case .contended: return .contended
        }
        let expiresAt = stored.expiresAt
        let maxAge = stored.maxAge
        let stamp = sight.words.stamp
        let view = _RecordView(
            record: sight.record, slot: sight.slot, seq: sight.seq, hash: hash, expiresAt: expiresAt, value: stored.value,
            flags: stored.flags)
        let expired = expiresAt != 0 && expiresAt <= _monotonicNanoseconds()
        let renews = use && !expired && maxAge != 0 && configuration.renewsAgeOnGet
        let result: R? = expired || renews ? nil : body(view)
        if !sight.isUnchanged() { return .contended }
        if expired { return use ? .needsLock : .miss }  // a get reclaims it, under the lock
        if renews { return .needsLock }
        guard let result else { return .contended }  // a spilled value's chunks changed under the copy
        if use { cache._lockFreeView.noteHit(sight.record, stamp: stamp) }
        return .hit(result, view)
    }

    /// What the copy reads' fast path (`_copyOnce`) found.
    enum _CopyOutcome {
        /// The value was copied: its length, its record and the record's use stamp then.
        case hit(length: Int, record: UnsafeMutableRawPointer, stamp: UInt64)
        case miss
        /// The value is `length` bytes, longer than the buffer: nothing was copied.
        case tooSmall(length: Int)
        /// A writer was met, or the entry has an expiry or a spilled value: the
        /// general path (`_readLockFree`) decides.
        case elsewhere
    }

    /// The copy reads' fast path (`bytes(_:into:)`, `withBytes`, `bytes(_:)`):
    /// one lock-free attempt over the key's probe hashes that copies the value
    /// of a live entry without an expiry into `buffer` inside the record's
    /// seqlock window, as `ShmLRU.get` does in interval mode, with no view built
    /// and no closure. Everything else (a writer met, an entry with an expiry or
    /// a max age, a spilled value) is `.elsewhere`: the general path reads it
    /// again. Counts nothing and marks nothing: the caller does (`_copyRead`).
    @inline(__always)
    func _copyOnce(_ key: UnsafeRawBufferPointer, base: UInt32, into buffer: UnsafeMutableRawBufferPointer) -> _CopyOutcome {
        let sight: _RecordSight, stored: _StorePayload
        switch _sightKey(key, base: base, cache._lockFreeView.probe) {
        case .found(let s, let payload, _): (sight, stored) = (s, payload)
        case .miss: return .miss
        case .contended: return .elsewhere
        }
        // Expiry, renewal and heap chunks: the general path.
        if stored.expiresAt != 0 || stored.maxAge != 0 || stored.flags & _StoreLayout.payloadSpilled != 0 { return .elsewhere }
        let value = stored.value
        if value.count > buffer.count { return sight.isUnchanged() ? .tooSmall(length: value.count) : .elsewhere }
        if value.count > 0 { cshm_racy_copy(buffer.baseAddress, value.baseAddress, value.count) }
        let stamp = sight.words.stamp
        guard sight.isUnchanged() else { return .elsewhere }
        return .hit(length: value.count, record: sight.record, stamp: stamp)
    }

    /// Whether the record a decoded value came from is unchanged: same slot and
    /// same even sequence (every write and every free of a record changes it, so
    /// its state, hash, length, key and value are as they were when it was read
    /// and checked), and the stored key equal to `key` (the entry may be another
    /// key's of the same table hash), all inside the seqlock. When the decoded
    /// cache already compared the key with the entry's own copy of it
    /// (`keyChecked`: keys of up to 16 bytes, `_InlineKey`), the record's key is
    /// not read again: the unchanged sequence says the record still holds the
    /// key it held when the entry was made, so the check reads only the
    /// record's header line (sequence and use stamp). Reads the record through
    /// the cache's view (`_Probe.sight(slot:seq:)`) and the stored key through
    /// `_StorePayload`; takes no lock. On success marks the record used (a get).
    @inline(__always)
    func _isUnchanged(slot: UInt32, seq: UInt32, key: UnsafeRawBufferPointer, keyChecked: Bool) -> Bool {
        let p = cache._lockFreeView.probe
        guard let sight = p.sight(slot: slot, seq: seq) else { return false }
        if !keyChecked {
            // The record was checked when it was read; the record size still bounds the racy key read.
            guard let stored = _StorePayload(sight.words.payload, count: p.recordSize), stored.hasKey(key) else { return false }
        }
        let stamp = sight.words.stamp
        guard sight.isUnchanged() else { return false }
        cache._lockFreeView.noteHit(sight.record, stamp: stamp)
        return true
    }

    /// What a get read: the value's bytes (nil when the caller's known version is
    /// still current, so there is nothing to copy) and the record's version.
    struct _VersionedRead {
        var bytes: [UInt8]?
        var slot: UInt32
        var seq: UInt32
        var hash: UInt32
        var expiresAt: UInt64
        /// A get of it must renew its age (so takes the lock).
        var renews: Bool
    }

    /// A get under the data lock: locates (reclaiming expired entries met),
    /// promotes, renews the age if asked; copies the value unless `known` is its
    /// version now.
    func _getLocked(_ keyBuffer: UnsafeRawBufferPointer, base: UInt32, key: String, known: (slot: UInt32, seq: UInt32)?)
        throws(ShmError) -> _VersionedRead?
    {
        if cache._lockFreeView.isAttached { cache._lockFreeView.probe.warm(base) }
        return try cache._withLockedHandle(_operation("get", key)) { (lru) throws(ShmError) -> _VersionedRead? in
            let now = _monotonicNanoseconds()
            guard let found = try _locateLocked(lru, keyBuffer, base: base, now: now, reclaim: true).found else {
                cache._lockFreeView.noteMiss()
                return nil
            }
            cache._lockFreeView.noteLockedHit()
            try lru.promote(found.slot)
            var expiresAt = found.header.expiresAt
            if configuration.renewsAgeOnGet, found.header.maxAge != 0 {
                expiresAt = _saturatingAdd(now, found.header.maxAge)
                _setExpiryLocked(lru, found.slot, expiresAt)
            }
            let seq = lru.sequence(found.slot)
            let slot = found.slot.index
            let unchanged = known.map { $0.slot == slot && $0.seq == seq } ?? false
            return _VersionedRead(
                bytes: unchanged ? nil : try _valueBytesLocked(lru, found.header, found.payload), slot: slot, seq: seq,
                hash: found.hash, expiresAt: expiresAt, renews: configuration.renewsAgeOnGet && found.header.maxAge != 0)
        }
    }

    /// A get's read: lock-free when the policy allows and no writer gets in the
    /// way, else under the lock. nil when the key is absent or expired.
    func _getVersioned(_ keyBuffer: UnsafeRawBufferPointer, base: UInt32, key: String, known: (slot: UInt32, seq: UInt32)?)
        throws(ShmError) -> _VersionedRead?
    {
        guard cache._lockFreeView.isAttached else { throw _detachedError("get", key) }
        if _readsLockFree {
            let outcome = _readLockFree(keyBuffer, base: base, use: true) { (view) -> [UInt8]?? in
                if let known, known.slot == view.slot, known.seq == view.seq { return .some(nil) }
                return _copyValue(view).map { .some($0) }
            }
            switch outcome {
            case .hit(let bytes, let view)?:
                return _VersionedRead(
                    bytes: bytes, slot: view.slot, seq: view.seq, hash: view.hash, expiresAt: view.expiresAt, renews: false)
            case .miss?:
                return nil
            case .contended?, .needsLock?, nil:
                break
            }
        }
        return try _getLocked(keyBuffer, base: base, key: key, known: known)
    }

    /// The value's bytes, copied inside the seqlock window. The array is made
    /// from `_zeroes` (then overwritten by the racy copy) because that init is
    /// specialised inline; `Array(repeating:count:)` and
    /// `init(unsafeUninitializedCapacity:)` allocate through an unspecialised
    /// runtime entry that looks the storage type up on every call (measured:
    /// ~430 instructions more per copy).
    @inline(__always)
    func _copyValue(_ view: _RecordView) -> [UInt8]? {
        if view.flags & _StoreLayout.payloadSpilled != 0, let heap = _heap { return _copySpilled(heap, view) }
        let count = view.value.count
        var bytes =
            count <= _zeroes.count
            ? Array(UnsafeRawBufferPointer(rebasing: _zeroes[0..<count])) : [UInt8](repeating: 0, count: count)
        if count > 0 {
            bytes.withUnsafeMutableBytes { cshm_racy_copy($0.baseAddress, view.value.baseAddress, count) }
        }
        return bytes
    }

    /// Copies the bytes stored under `key` into `buffer`, allocating nothing;
    /// returns their length, or nil when the key is absent or expired. A hit is
    /// a use, as for `bytes(_:)`.
    /// - Throws: `.invalidArgument` if the value is longer than `buffer` (then
    ///   `buffer` is left as it was).
    public func bytes(_ key: String, into buffer: UnsafeMutableRawBufferPointer) throws(ShmError) -> Int? {
        guard cache._lockFreeView.isAttached else { throw _detachedError("get", key) }
        if _readsLockFree {
            switch _copyRead(key, into: buffer) {
            case .copied(let count): return count
            case .miss: return nil
            case .tooSmall(let count): throw _bufferTooSmall(key, count, buffer.count)
            case .locked: break
            }
        }
        guard let value = try bytes(key) else { return nil }
        guard value.count <= buffer.count else { throw _bufferTooSmall(key, value.count, buffer.count) }
        if let target = buffer.baseAddress, value.count > 0 { value.withUnsafeBytes { target.copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
        return value.count
    }

    @inline(never)
    func _bufferTooSmall(_ key: String, _ length: Int, _ capacity: Int) -> ShmError {
        ShmError(.invalidArgument, _operation("get", key), detail: "value is \(length) bytes; buffer holds \(capacity)")
    }

    /// The decoded-cache hit of `get(_:as:)`: lends `take` the box of the value
    /// this handle decoded for `key` as `type`, if its record is unchanged
    /// (checked in shared memory, lock-free) and it has not expired, and returns
    /// true; false otherwise (then the caller reads and decodes). Not generic, so
    /// that the inlinable `get` specialised in the caller's module does nothing
    /// generic on a hit: `take` is its code, copying the value out of the box.
    ///
    /// A key of up to 16 bytes is read out of the String once, into its inline
    /// form, in a closure that does nothing else (see `_copyRead`): the table
    /// compares it with the entry's copy, so the record check reads no key
    /// bytes, and the hit runs in this function's own code. A longer key is
    /// lent from the String's storage and compared in the record.
    @usableFromInline
    func _decodedHit(_ key: String, _ type: ObjectIdentifier, _ take: (_LentBox) -> Void) -> Bool {
        guard _readsLockFree, cache._lockFreeView.isAttached else { return false }
        if let asked = key.utf8.withContiguousStorageIfAvailable({ _InlineKey(UnsafeRawBufferPointer($0)) }), asked.isInline {
            let none = UnsafeRawBufferPointer(start: nil, count: 0)
            return _decoded.hit(
                _decoded.tableHash(inline: asked), asked: asked, type: type,
                // An inline key is always compared by the table (`keyChecked`); were it not, no bytes to compare: a miss.
                { slot, seq, keyChecked in keyChecked && _isUnchanged(slot: slot, seq: seq, key: none, keyChecked: true) }, take)
        }
        return _withKeyBytesLent(key) { keyBuffer -> Bool in
            let asked = _InlineKey(keyBuffer)
            return _decoded.hit(
                _decoded.tableHash(keyBuffer, asked), asked: asked, type: type,
                { slot, seq, keyChecked in _isUnchanged(slot: slot, seq: seq, key: keyBuffer, keyChecked: keyChecked) }, take)
        }
    }

    /// `contains` without the lock: nil when writers kept getting in the way.
    func _containsLockFree(_ keyBuffer: UnsafeRawBufferPointer, base: UInt32) -> Bool? {
        switch _readLockFree(keyBuffer, base: base, use: false, { _ -> Void? in () }) {
        case .hit?: return true
        case .miss?: return false
        case .contended?, .needsLock?, nil: return nil
        }
    }
}

/// 64 KiB of zeroes, never written: see `ShmStore._copyValue`.
nonisolated(unsafe) let _zeroes = UnsafeRawBufferPointer(UnsafeMutableRawBufferPointer(start: calloc(1, 1 << 16), count: 1 << 16))
