import CShm

// The doubly linked LRU list and the free list, under the lock. Every link read
// from the segment is checked before it is followed; a bad one throws
// `.corrupted`, which `_withLock` answers with a rebuild.

extension ShmLRU {
    @inline(never)  // cold: keeps the error's formatting out of the hot paths
    func _corrupted(_ what: String) -> ShmError { ShmError(.corrupted, "key \(key)", detail: what) }

    /// Unlinks a live record from the LRU list (the segment's policy room notes it).
    @inline(__always)
    func _unlink(_ slot: UInt32) throws(ShmError) { try _unlink(slot, noting: _roomCalls.unlink) }

    /// Unlinks a live record from the LRU list; `note` (the room's `unlink`) runs
    /// first. A caller that knows the room names its member, and the note inlines
    /// (exact LRU's move to the head: `_promote`).
    @inline(__always)
    func _unlink(_ slot: UInt32, noting note: (ShmLRU, UInt32, UInt32) throws(ShmError) -> Void) throws(ShmError) {
        let s = _segment
        let prev = s.prev(slot)
        let next = s.next(slot)
        guard prev == _Layout.none || s.isSlot(prev), next == _Layout.none || s.isSlot(next) else {
            throw _corrupted("record \(slot) links out of range (prev \(prev), next \(next))")
        }
        try note(self, slot, prev)  // the policy's bookkeeping, before the links change
        if prev == _Layout.none {
            guard s.head == slot else { throw _corrupted("record \(slot) has no prev but is not the head") }
            s.head = next
        } else {
            guard s.next(prev) == slot else { throw _corrupted("record \(prev).next is not \(slot)") }
            s.setNext(prev, next)
        }
        _fault(.listUnlinking)
        if next == _Layout.none {
            guard s.tail == slot else { throw _corrupted("record \(slot) has no next but is not the tail") }
            s.tail = prev
        } else {
            guard s.prev(next) == slot else { throw _corrupted("record \(next).prev is not \(slot)") }
            s.setPrev(next, prev)
        }
        s.setPrev(slot, _Layout.none)
        s.setNext(slot, _Layout.none)
    }

    /// Links a record (not on any list) in as the most recently used.
    @inline(__always)
    func _linkAtHead(_ slot: UInt32) throws(ShmError) {
        let s = _segment
        let oldHead = s.head
        s.setPrev(slot, _Layout.none)
        s.setNext(slot, oldHead)
        if oldHead == _Layout.none {
            s.tail = slot
        } else {
            guard s.isSlot(oldHead) else { throw _corrupted("head \(oldHead) out of range") }
            s.setPrev(oldHead, slot)
        }
        s.head = slot
    }

    /// Asks for the lines that promoting `slot` will relink (its neighbours and the
    /// old head), so that their misses overlap the value's copy. Hints only: the
    /// links are range-checked, and the relink checks everything again.
    @inline(__always)
    func _prefetchNeighbours(_ slot: UInt32) {
        let s = _segment
        let head = s.head
        guard head != slot else { return }  // already the most recent: nothing moves
        let prev = s.prev(slot)
        let next = s.next(slot)
        if s.isSlot(prev) { cshm_prefetch(s.record(prev)) }
        if s.isSlot(next) { cshm_prefetch(s.record(next)) }
        if s.isSlot(head) { cshm_prefetch(s.record(head)) }
    }

    /// A slot for a new record: the free list first, then a never-used slot.
    /// Nil when every record is live.
    func _allocate() throws(ShmError) -> UInt32? {
        let s = _segment
        let free = s.freeHead
        if free != _Layout.none {
            guard s.isSlot(free), !s.isLive(meta: s.meta(free)), s.freeCount > 0 else {
                throw _corrupted("free-list head \(free) is not a free record")
            }
            s.freeHead = s.next(free)
            s.freeCount &-= 1  // wrapping: a peer that bypassed the lock must not make this trap
            s.setNext(free, _Layout.none)
            return free
        }
        let highWater = s.load(_Layout.H.highWater)
        guard Int(highWater) <= capacity else { throw _corrupted("high-water mark \(highWater) over capacity") }
        if Int(highWater) < capacity {
            s.store(_Layout.H.highWater, highWater &+ 1)
            return highWater
        }
        return nil
    }

    /// Puts a record (already marked free and unlinked) on the free list.
    func _pushFree(_ slot: UInt32) {
        let s = _segment
        s.setPrev(slot, _Layout.none)
        s.setNext(slot, s.freeHead)
        s.freeHead = slot
        s.freeCount &+= 1  // wraps rather than traps on a corrupt count (verify() reports it)
    }

    /// Removes a live record from the index, the LRU list, and marks it free.
    /// Returns its hash. The slot is *not* put on the free list.
    ///
    /// - Parameter reused: the caller rewrites the record at once, under the same
    ///   lock (`writeRecord`, inside the record's seqlock): marking it free first
    ///   would be a second seqlock write that no reader can tell from the first.
    ///   Until then a reader that found the entry before its removal reads the old
    ///   key's whole value, which is a read from before the eviction.
    func _detachRecord(_ slot: UInt32, indexPosition: Int?, reused: Bool = false) throws(ShmError) -> UInt32 {
        let s = _segment
        let hash = s.hash(slot)
        _indexRemove(hash: hash, slot: slot, knownPosition: indexPosition)
        _fault(.detachUnindexed)
        try _unlink(slot)
        if !reused { s.markFree(slot) }
        guard s.count > 0 else { throw _corrupted("count underflow") }
        s.count &-= 1
        return hash
    }

    /// Evicts the record the policy chooses (`_selectVictim()`: for LRU the least
    /// recently used, after second chances for marked tails); returns its slot and hash.
    /// - Parameter reused: see `_detachRecord(_:indexPosition:reused:)`.
    func _evictTail(reused: Bool = false) throws(ShmError) -> (slot: UInt32, hash: UInt32)? {
        guard let victim = try _selectVictim() else { return nil }
        return try _evictSelected(victim, reused: reused)
    }

    /// Evicts `victim`, which `_selectVictim()` returned under this same lock.
    func _evictSelected(_ victim: UInt32, reused: Bool = false) throws(ShmError) -> (slot: UInt32, hash: UInt32) {
        _noteEvicting(victim)
        let hash = try _detachRecord(victim, indexPosition: nil, reused: reused)
        _segment.bumpStat(_Layout.H.statEvictions)
        _noteEvicted()
        return (victim, hash)
    }

    /// Asks for the lines the next eviction touches, so that they arrive while
    /// this operation finishes: the new tail's index entry and payload (which the
    /// next insert finds and overwrites) and its neighbour towards the head (which
    /// the unlink relinks). The new tail's own header line is in the cache: this
    /// eviction's unlink just wrote it. Hints only (a prefetch never faults); the
    /// slots are range-checked all the same, and the next eviction checks
    /// everything it reads as usual.
    @inline(__always)
    func _prefetchNextVictim() {
        let s = _segment
        let next = s.tail
        guard s.isSlot(next) else { return }
        let prev = s.prev(next)
        if s.isSlot(prev) { cshm_prefetch(s.record(prev)) }
        _probe.prefetchHome(s.hash(next))
        let payload = s.payload(next)
        var offset = 0
        let end = min(recordSize, 256)  // the first lines: a hint, not a copy
        while offset < end {
            cshm_prefetch(payload + offset)
            offset &+= 64
        }
        if end > 1 { cshm_prefetch(payload + (end &- 1)) }
    }
}
