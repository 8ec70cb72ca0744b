import CShm

// The one door into a cache's structure for code that holds its lock: ShmStore,
// and the cache's own eviction, dump, verify and bulk removal. In the manner of
// swift-collections' `Deque._UnsafeHandle`: a narrow view, lent only inside
// `_withLockedHandle`, over slots that can only be made through a bounds check.

extension ShmLRU {
    /// A record's slot, known to be below the capacity. Made only by
    /// `_LockedHandle.slot(_:)` (a bounds check) or by the handle's own lookups
    /// and walks, so code given one never indexes past the records.
    struct _Slot: Hashable, Sendable {
        let index: UInt32
        fileprivate init(checked index: UInt32) { self.index = index }
    }

    /// Which end of the LRU list a walk starts from.
    enum _ListEnd { case mostRecent, leastRecent }

    /// How a walk ended.
    enum _WalkEnd: Equatable {
        /// It reached the other end of the list.
        case completed
        /// The body asked to stop, or the limit was reached.
        case stopped
        /// A link out of range, or more steps than the cache has records (a cycle).
        case broken(String)
    }

    /// What code holding the segment's lock may do with the cache. Lent by
    /// `_withLockedHandle`; never store it or let it escape the closure (it
    /// holds the cache unowned, and its lock ends with the closure).
    struct _LockedHandle {
        unowned(unsafe) let cache: ShmLRU

        @inline(__always) var segment: _Segment { cache._segment }
        /// Records in the cache.
        var capacity: Int { cache.capacity }
        /// The largest value a record holds.
        var recordSize: Int { cache.recordSize }
        /// Live records, as the header counts them.
        var count: Int { Int(cache._segment.count) }
        var isFull: Bool { count >= capacity }

        /// The slot with this index, or nil when it is out of range.
        @inline(__always)
        func slot(_ index: UInt32) -> _Slot? { segment.isSlot(index) ? _Slot(checked: index) : nil }

        /// The record holding `hash`, if any.
        @inline(__always)
        func find(_ hash: UInt32) -> _Slot? { cache._find(hash).map { _Slot(checked: $0.slot) } }

        /// The hash a live record is stored under.
        func hash(_ slot: _Slot) -> UInt32 { segment.hash(slot.index) }

        /// The value of a live record, its length checked against the record size.
        /// Valid until the record changes (inside this lock).
        @inline(__always)
        func value(_ slot: _Slot) throws(ShmError) -> UnsafeRawBufferPointer { try cache._valueLocked(slot.index) }

        /// Stores a value under `hash` (an update in place, or a new record, evicting
        /// the least recently used when full and the cache evicts).
        @discardableResult
        func set(_ hash: UInt32, _ value: UnsafeRawBufferPointer) throws(ShmError) -> SetResult {
            try cache._setLocked(hash, value, shareKey: nil)
        }

        /// Replaces a live record's value by writing it into a free record first and
        /// then switching the index to it (see `ShmLRU+Replace.swift`): a writer killed
        /// meanwhile leaves the old value. False when no record is free (nothing changed).
        func replace(_ slot: _Slot, hash: UInt32, _ value: UnsafeRawBufferPointer) throws(ShmError) -> Bool {
            try cache._replaceLocked(slot.index, hash: hash, value) != nil
        }

        /// Counts a use of the record per the cache's promotion and eviction policy
        /// (exact LRU moves it to the head; the others mark it).
        func promote(_ slot: _Slot) throws(ShmError) { try cache._promoteLocked(slot.index, now: cache._lockedNow()) }

        /// The record's seqlock sequence: its version (every write and every free changes it).
        func sequence(_ slot: _Slot) -> UInt32 { cshm_load_relaxed_u32(segment.seqPointer(slot.index)) }

        /// Deletes a live record (index, list, free list) and announces the change.
        func remove(_ slot: _Slot) throws(ShmError) { try cache._removeLocked(slot.index, indexPosition: nil) }

        /// Evicts the record the cache's eviction policy chooses (LRU's tail after
        /// second chances, SIEVE's hand, S3-FIFO's queues) and frees it; returns
        /// what it held. Nil when empty. `willEvict` sees the victim first, while
        /// its value is still there.
        func evict(willEvict: (_Slot) throws(ShmError) -> Void) throws(ShmError) -> (slot: _Slot, hash: UInt32)? {
            guard let chosen = try cache._selectVictim() else { return nil }
            guard let victim = slot(chosen) else { throw corrupted("eviction chose record \(chosen), out of range") }
            try willEvict(victim)
            let evicted = try cache._evictSelected(chosen)
            cache._pushFree(evicted.slot)
            segment.publishChange()
            return (victim, evicted.hash)
        }

        /// Rewrites part of a live record's payload inside its seqlock, so that a
        /// lock-free reader never sees it half written.
        func rewritePayload(_ slot: _Slot, _ body: (UnsafeMutableRawPointer) -> Void) {
            segment.withSeqlockWrite(slot.index) { body(segment.payload(slot.index)) }
        }

        /// The error for a structure found broken (the lock's caller rebuilds on it).
        func corrupted(_ what: String) -> ShmError { cache._corrupted(what) }

        /// The data segment's rebuild generation (bumped by every repair of its
        /// structure): the store's value heap rebuilds when it moved.
        var dataGeneration: UInt32 { segment.generation }

        /// A kill point for tests (see `_FaultInjection`); nothing in a release build.
        @inline(__always) func fault(_ point: _FaultInjection.Point) { cache._fault(point) }

        /// The cache's own integrity checks (see `ShmLRU.verify()`).
        func verify() -> IntegrityReport { cache._verifyLocked() }

        /// Visits live records from one end of the LRU list, at most `limit` of
        /// them, while `body` returns true. Every link is range-checked before it
        /// is followed, and a walk longer than the capacity is a cycle. The next
        /// link is read before `body` runs, so `body` may remove the record it is
        /// given (and no other).
        @discardableResult
        func walk<E: Error>(from end: _ListEnd, limit: Int = .max, _ body: (_Slot) throws(E) -> Bool) throws(E) -> _WalkEnd {
            let s = segment
            var index = end == .mostRecent ? s.head : s.tail
            var from = _Layout.none
            var steps = 0
            while index != _Layout.none {
                guard steps < limit else { return .stopped }
                guard s.isSlot(index) else { return .broken("LRU link \(from) -> \(index) out of range") }
                guard steps < capacity else { return .broken("LRU walk longer than the capacity \(capacity): a cycle") }
                let next = end == .mostRecent ? s.next(index) : s.prev(index)
                if try !body(_Slot(checked: index)) { return .stopped }
                steps += 1
                from = index
                index = next
            }
            return .completed
        }

        /// `walk`, with a broken list thrown as `.corrupted` (the lock's caller
        /// rebuilds the structure and runs the operation again).
        func walkThrowing(from end: _ListEnd, limit: Int = .max, _ body: (_Slot) throws(ShmError) -> Bool) throws(ShmError) {
            if case .broken(let what) = try walk(from: end, limit: limit, body) { throw corrupted(what) }
        }
    }

    /// Runs `body` holding the segment's lock, with the locked handle: the only
    /// way code outside the cache's core (ShmStore) changes or reads its structure.
    @inline(__always)
    func _withLockedHandle<R>(_ operation: @autoclosure () -> String, _ body: (_LockedHandle) throws(ShmError) -> R)
        throws(ShmError) -> R
    {
        try _withLock(operation()) { () throws(ShmError) -> R in try body(_LockedHandle(cache: self)) }
    }
}

extension ShmLRU {
    /// What a lock-free reader outside the cache's core (ShmStore's hit path) may
    /// use: the attachment check, the index and records' geometry, the hit
    /// bookkeeping. It takes no lock and offers nothing that writes the structure.
    struct _LockFreeView {
        unowned(unsafe) let cache: ShmLRU

        /// False once the handle detached: nothing may be read then.
        @inline(__always) var isAttached: Bool { cache._attachment.isAttached }
        /// Whether reads go without the lock (interval promotion, SIEVE, S3-FIFO).
        @inline(__always) var readsLockFree: Bool { cache._promotionNanoseconds != 0 }
        /// The shared index and the records, for a seqlock-checked search.
        @inline(__always) var probe: _Probe { cache._probe }
        /// The segment's owner word (`_Layout.H.owner`): which ShmStore's data
        /// segment this is, or 0. Written once, by `claimOwnership`, at creation.
        @inline(__always) var owner: UInt64 { cshm_load_acquire_u64(cache._segment.u64(_Layout.H.owner)) }
        /// Records the owner word of a segment this process just created (before
        /// any other process can know its key).
        func claimOwnership(_ word: UInt64) { cshm_store_release_u64(cache._segment.u64(_Layout.H.owner), word) }
        /// Counts a lock-free hit on `record` and marks it used per the policy.
        /// The cache is borrowed, not retained (its store holds it): a strong
        /// reference taken here cost a retain and a release on every store hit.
        @inline(__always) func noteHit(_ record: UnsafeMutableRawPointer, stamp: UInt64) {
            Unmanaged.passUnretained(cache)._withUnsafeGuaranteedRef { $0._noteOptimisticHit(record, stamp: stamp) }
        }
        /// Every live record the shared index names, hash, slot and stamp read
        /// together (ShmLRU+IndexListing.swift): a key present for the whole
        /// listing is listed, wherever updates move it meanwhile. Lock-free, except
        /// that a position kept contended is read under the lock.
        func indexedRecords(_ operation: @autoclosure () -> String) throws(ShmError) -> [ShmLRU._IndexedRecord] {
            try cache._listIndexedRecords(operation())
        }
        /// Counts a read that did not find its key (the store's misses, lock-free or locked).
        @inline(__always) func noteMiss() { cache._countMiss() }
        /// Counts a hit found under the lock (the store's locked reads).
        @inline(__always) func noteLockedHit() { cache._countHit() }
    }

    /// The lock-free reader's view (see `_LockFreeView`).
    @inline(__always) var _lockFreeView: _LockFreeView { _LockFreeView(cache: self) }
}

extension ShmLRU._LockedHandle {
    /// Gives a record just written by a store's restore the uses its snapshot
    /// counted: the S3-FIFO / TinyLFU frequency (0-3), or the LRU/SIEVE used bit. Under the
    /// lock; the queue bit and the time stay. (Here, beside the handle, so that
    /// the store writes no record word itself.)
    func restoreUses(_ slot: ShmLRU._Slot, _ uses: UInt32) {
        guard uses > 0 else { return }
        let s = segment
        let offset = s.layout.recordOffset(slot.index) &+ _Layout.R.stamp
        let stamp = s.load64(offset)
        let marked =
            cache._countsFrequency
            ? (stamp & ~_Layout.stampFrequency) | UInt64(min(uses, 3)) : stamp | _Layout.stampUsed
        s.store64(offset, marked)
    }
}
