import CShm

extension ShmLRU {
    /// Rebuilds the free list, the LRU list and the index from the records alone,
    /// under the lock. Runs when a lock holder died (the lock was taken over) or an operation
    /// found the structure inconsistent; `repair()` runs it on demand.
    ///
    /// Deterministic: a record whose write was cut (odd sequence), whose state or
    /// length is invalid, is dropped; of two live records with one hash the more
    /// recently used wins; live records are relinked by last use (most recent
    /// first; under S3-FIFO the small queue's records, by their stamp's queue bit,
    /// before the main queue's), free ones pushed so that the lowest slot is reused
    /// first; the SIEVE hand restarts at the tail. The ghost is left as it is: any
    /// content is a valid hint. Every fully written entry stays.
    func _rebuildLocked() {
        // Inside the index seqlock: a lock-free reader that misses meanwhile retries.
        _seqlockWrite(_segment.indexSeqPointer) { _rebuildStructureLocked() }
        _segment.publishChange()
    }

    private func _rebuildStructureLocked() {
        let s = _segment
        let capacity = capacity

        var highWater = Int(s.load(_Layout.H.highWater))
        if highWater > capacity { highWater = capacity }
        // Slots at or above the high-water mark were never handed out; one that looks
        // used (a writer died after taking it) is folded in below the mark.
        var scanEnd = highWater
        for index in highWater..<capacity where s.meta(UInt32(index)) != 0 || s.load(s.layout.recordOffset(UInt32(index)) + _Layout.R.seq) != 0 {
            scanEnd = index + 1
        }
        var live: [(stamp: UInt64, slot: UInt32)] = []
        var freeSlots: [UInt32] = []
        for index in 0..<scanEnd {
            let slot = UInt32(index)
            let seqPointer = s.seqPointer(slot)
            let sequence = cshm_load_relaxed_u32(seqPointer)
            let meta = s.meta(slot)
            if sequence & 1 != 0 || !s.isLive(meta: meta) || s.length(meta: meta) > recordSize || meta >> 24 > _Layout.stateLive {
                // markFree writes the state inside the seqlock and leaves the sequence
                // even; an odd one stays odd until the record reads free, so a repair
                // cut here never exposes a torn payload as live.
                if sequence & 1 != 0 || meta != _Layout.stateFree << 24 { s.markFree(slot) }
                freeSlots.append(slot)
            } else {
                live.append((s.lastUse(slot), slot))
            }
        }
        live.sort { $0.stamp != $1.stamp ? $0.stamp > $1.stamp : $0.slot < $1.slot }
        // The policy's order (S3-FIFO: the small queue first, by its records' stamps).
        live = _room.rebuildOrder(s, live)

        // Index first (deduplicating), then the lists.
        _sharedIndex?.removeAll()
        _localIndex?.table.removeAll()
        _localIndex?.entryCount = 0
        _fault(.repairCleared)
        var kept: [UInt32] = []
        kept.reserveCapacity(live.count)
        for (_, slot) in live {
            let hash = s.hash(slot)
            let table = _sharedIndex ?? _localIndex!.table
            if table.find(hash) != nil {
                s.markFree(slot)  // an older duplicate
                freeSlots.append(slot)
                continue
            }
            _ = table.insert(hash, slot: slot)
            _localIndex?.entryCount += 1
            kept.append(slot)
        }
        var previous = _Layout.none
        for (position, slot) in kept.enumerated() {
            if position == kept.count / 2 { _fault(.repairRelinking) }
            s.setPrev(slot, previous)
            s.setNext(slot, _Layout.none)
            if previous != _Layout.none { s.setNext(previous, slot) }
            previous = slot
        }
        s.head = kept.first ?? _Layout.none
        s.tail = kept.last ?? _Layout.none
        s.count = UInt32(kept.count)
        _room.rebuilt(s, kept: kept)  // the policy's words (SIEVE's hand at the tail, S3-FIFO's small queue)
        _fault(.repairFreeing)

        freeSlots.sort(by: >)
        s.freeHead = _Layout.none
        s.freeCount = 0
        for slot in freeSlots { _pushFree(slot) }
        s.store(_Layout.H.highWater, UInt32(scanEnd))

        s.bumpStat(_Layout.H.statRecoveries)
        s.generation = s.generation &+ 1
        _localIndex?.generationSeen = s.generation
    }

    /// Rebuilds the cache's structure from its records (see `verify()` to check it first).
    ///
    /// A lock whose owner word names no live thread (forged, or left by a
    /// crash) is taken over by the locker, as every call does (`_SegmentLock`);
    /// a lock held by a live thread is never taken away: that waits for the lock
    /// timeout as any call does.
    public func repair() throws(ShmError) {
        try _checkAttached("repair(key: \(key))")
        try _withLock("repair(key: \(key))") { () throws(ShmError) in _rebuildLocked() }
    }
}
