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
    func _replaceLocked(_ old: UInt32, hash: UInt32, _ value: UnsafeRawBufferPointer) throws(ShmError) -> UInt32? {
        guard let fresh = try _allocate() else { return nil }
        let s = _segment
        // Stamped after the old record's last use, so that a repair that finds
        // both complete keeps this one.
        let now = max(cshm_monotonic_ns(), s.lastUse(old) &+ 2) & ~_Layout.stampUsed
        s.writeRecord(fresh, hash: hash, state: _Layout.stateLive, value: value)
        s.setShareKey(fresh, s.shareKey(old))
        s.setStamp(fresh, now)
        _fault(.setWritten)
        if let shared = _sharedIndex, let position = shared.position(of: hash, slot: old) {
            // One store: a lock-free reader finds the old record (whole until it is
            // freed inside its seqlock below) or the new one (already whole).
            shared.store(position, shared.tag(mixed: _mix32(hash)) << shared.indexBits | (fresh &+ 1))
        } else {
            _indexRemove(hash: hash, slot: old, knownPosition: nil)
            try _indexInsert(hash, slot: fresh)
        }
        _fault(.setLinked)
        try _unlink(old)
        s.markFree(old)
        try _linkAtHead(fresh)
        _pushFree(old)
        s.bumpStat(_Layout.H.statUpdates)
        s.publishChange()
        return fresh
    }
}
