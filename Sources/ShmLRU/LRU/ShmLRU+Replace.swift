import CShm

// Replacing a value without ever exposing a half-written one to recovery.
//
// `set` of a present hash rewrites its record in place, inside the record's
// seqlock: readers never see the torn value, but a writer killed in the middle
// leaves the record odd, and recovery must drop it, so the hash loses its
// previous value along with the update. `_replaceLocked` (used by ShmStore,
// whose callers build read-modify-write sequences on a key's value) writes the
// new value into a free record first, then switches the index entry to it with
// one store and frees the old record. A kill at any point leaves either the
// old record alone (new one odd or unindexed: recovery frees it) or both
// complete, and recovery keeps the more recently stamped one, the new value.

extension ShmLRU {
    /// Replaces the live record `old` (holding `hash`) by a new record holding
    /// `value`, written in full before the old one is touched; the new record
    /// becomes the most recently used and keeps the old one's share key. Returns
    /// the new slot, or nil when no record is free (the caller then rewrites in place).
    /// The new record takes the old one's place in the list and its queue, so the
    /// eviction policy's state (SIEVE's hand, S3-FIFO's small queue) stays whole;
    /// then the update counts as a use.
    func _replaceLocked(_ old: UInt32, hash: UInt32, _ value: UnsafeRawBufferPointer) throws(ShmError) -> UInt32? {
        guard let fresh = try _allocate() else { return nil }
        let s = _segment
        // Stamped after the old record's last use, so that a repair that finds
        // both complete keeps this one.
        // It takes the old record's place in the list and its policy bits (use
        // mark, S3-FIFO frequency and queue), stamped after the old one's last use,
        // so that a repair that finds both complete keeps this one.
        let policyBits = s.stamp(old) & _Layout.stampPolicyBits
        let time = max(_monotonicNanoseconds(), s.lastUse(old) &+ 16) & ~_Layout.stampPolicyBits
        s.writeRecord(fresh, hash: hash, state: _Layout.stateLive, value: value)
        s.setShareKey(fresh, s.shareKey(old))
        s.store64(s.layout.recordOffset(fresh) &+ _Layout.R.stamp, time | policyBits)
        _fault(.setWritten)
        if let shared = _sharedIndex, let position = shared.position(of: hash, slot: old) {
            // One store: a lock-free reader finds the old record (whole until it is
            // freed inside its seqlock below) or the new one (already whole). Inside
            // the index seqlock all the same: a reader that loaded the old entry and
            // meets the old record already freed (or reused) must not take the key
            // for absent; the moved index sequence makes it retry.
            _seqlockWrite(_segment.indexSeqPointer) {
                shared.store(position, shared.geometry.entry(mixed: _mix32(hash), slot: fresh))
            }
        } else {
            _indexRemove(hash: hash, slot: old, knownPosition: nil)
            try _indexInsert(hash, slot: fresh)
        }
        _fault(.setLinked)
        try _spliceReplacing(old, with: fresh)
        s.markFree(old)
        _pushFree(old)
        try _promoteLocked(fresh, now: _lockedNow())  // an update is a use, as `set`'s is
        s.bumpStat(_Layout.H.statUpdates)
        s.publishChange()
        return fresh
    }
}

extension ShmLRU {
    /// Puts `fresh` (on no list) where `old` stands in the LRU list and takes
    /// `old` off it; the policy's words follow (`_noteReplaced`: SIEVE's hand, S3-FIFO's small-queue tail). Every
    /// link is checked before it is followed.
    func _spliceReplacing(_ old: UInt32, with fresh: UInt32) throws(ShmError) {
        let s = _segment
        let prev = s.prev(old)
        let next = s.next(old)
        guard prev == _Layout.none || s.isSlot(prev), next == _Layout.none || s.isSlot(next) else {
            throw _corrupted("record \(old) links out of range (prev \(prev), next \(next))")
        }
        s.setPrev(fresh, prev)
        s.setNext(fresh, next)
        if prev == _Layout.none {
            guard s.head == old else { throw _corrupted("record \(old) has no prev but is not the head") }
            s.head = fresh
        } else {
            guard s.next(prev) == old else { throw _corrupted("record \(prev).next is not \(old)") }
            s.setNext(prev, fresh)
        }
        if next == _Layout.none {
            guard s.tail == old else { throw _corrupted("record \(old) has no next but is not the tail") }
            s.tail = fresh
        } else {
            guard s.prev(next) == old else { throw _corrupted("record \(next).prev is not \(old)") }
            s.setPrev(next, fresh)
        }
        s.setPrev(old, _Layout.none)
        s.setNext(old, _Layout.none)
        _noteReplaced(old, with: fresh)
    }
}
