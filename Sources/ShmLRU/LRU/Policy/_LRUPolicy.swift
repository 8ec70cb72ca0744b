import CShm

// LRU and CLOCK: one list, head = most recently used. Exact LRU (`.onEveryRead`)
// relinks a read record at the head under the lock; CLOCK (`.atMostEvery`) marks
// it (stamp bit 0, lock-free) and eviction gives a marked tail a second chance
// (to the head, unmarked). No header words, no area of its own.
// See `_PolicyDispatch.swift` for the members every policy has.

enum _LRUPolicy: _PolicyRoom {
    /// A record's rank in the policy's order of preference (higher: kept
    /// longer), from its stamp word alone: the last use. Snapshots write
    /// records in this order, so a smaller store restores the best.
    static func preferenceRank(_ stamp: UInt64) -> UInt64 { stamp }

    // MARK: Stamp bits

    /// Bit 0: used since last linked at the head; the rest is the time.
    static let markMask: UInt64 = _Layout.stampUsed
    static let timeMask: UInt64 = ~_Layout.stampUsed

    // MARK: Segment

    /// No ghost, sketch or queue target.
    static func area(capacity: Int) -> _PolicyArea { _PolicyArea() }
    /// No header words to set at creation.
    static func initialize(_ s: _Segment) {}

    // MARK: Under the lock

    /// Stamps a new record (unmarked) and links it at the head.
    @inline(__always)
    static func link(_ c: ShmLRU, _ slot: UInt32, hash: UInt32, now: UInt64) throws(ShmError) {
        c._segment.setStamp(slot, now)
        c._fault(.setWritten)
        try c._linkAtHead(slot)
    }

    /// Nothing to note when a record leaves the list.
    @inline(__always)
    static func unlink(_ c: ShmLRU, _ slot: UInt32, prev: UInt32) throws(ShmError) {}

    /// The tail, after second chances for marked tails (CLOCK). Each second
    /// chance unmarks a record, so at most `capacity` of them: the walk is bounded.
    @inline(__always)
    static func selectVictim(_ c: ShmLRU) throws(ShmError) -> UInt32? {
        let s = c._segment
        var chances = c.capacity
        while true {
            let tail = s.tail
            if tail == _Layout.none { return nil }
            guard s.isSlot(tail), s.isLive(meta: s.meta(tail)) else { throw c._corrupted("tail \(tail) is not a live record") }
            if chances > 0, try secondChance(c, tail) {
                chances -= 1
                continue
            }
            return tail
        }
    }

    /// If the live record `slot` is marked used, moves it to the head, unmarked,
    /// and returns true.
    @inline(__always)
    static func secondChance(_ c: ShmLRU, _ slot: UInt32) throws(ShmError) -> Bool {
        let s = c._segment
        let stamp = s.stamp(slot)
        guard s.isMarkedUsed(stamp: stamp) else { return false }
        try c._unlink(slot)
        c._fault(.policyMoving)
        try c._linkAtHead(slot)
        s.setStamp(slot, stamp)  // clears the mark
        s.bumpStat(_Layout.H.statPromotions)
        return true
    }

    /// After the victim is detached: ask for the next victim's lines.
    @inline(__always)
    static func evicted(_ c: ShmLRU) { c._prefetchNextVictim() }

    /// Nothing to note before a victim is detached, or when a record takes another's place.
    @inline(__always) static func evicting(_ c: ShmLRU, _ slot: UInt32) {}
    @inline(__always) static func replaced(_ c: ShmLRU, _ old: UInt32, with fresh: UInt32) {}

    // MARK: Lock-free

    /// A hit (no lock): marks the record used on its first use since its link,
    /// then refreshes the mark's time at most once per interval (`_markUse`).
    /// SIEVE's visited bit is the same bit, marked the same way.
    @inline(__always)
    static func touch(_ c: ShmLRU, _ stampWord: UnsafeMutablePointer<UInt64>, stamp: UInt64, now: UInt64) {
        if let time = c._markUse(stamp: stamp, now: now) { cshm_store_relaxed_u64(stampWord, time | _Layout.stampUsed) }
    }

    // MARK: Verify and rebuild

    /// Nothing beyond the list's own checks.
    static func verify(_ c: ShmLRU, order: [UInt32], into report: inout ShmLRU.IntegrityReport) {}
    /// Live records by last use, most recent first: the order is already that.
    static func rebuildOrder(_ s: _Segment, _ live: [(stamp: UInt64, slot: UInt32)]) -> [(stamp: UInt64, slot: UInt32)] { live }
    /// No header words to restore.
    static func rebuilt(_ s: _Segment, kept: [UInt32]) {}
}
