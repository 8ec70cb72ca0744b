import CShm

// SIEVE (Zhang et al., NSDI '24): the list as a FIFO, new records at the head,
// never moved. Hits set stamp bit 0 (the visited bit, lock-free, as CLOCK marks).
// The hand (header word `sieveHand`) walks from the tail towards the head,
// clearing bits, and evicts the first unmarked record; past the head it wraps to
// the tail. See `_PolicyDispatch.swift` for the members every policy has.

extension _ListState {
    /// SIEVE: the next record the hand looks at (none: the tail).
    var sieveHand: Int { _Layout.H.sieveHand }
}

enum _SievePolicy: _PolicyRoom {
    /// A record's rank in the policy's order of preference (higher: kept
    /// longer), from its stamp word alone: visited first, then the later insert.
    static func preferenceRank(_ stamp: UInt64) -> UInt64 { (stamp & _Layout.stampUsed) << 63 | stamp >> 1 }

    // MARK: Stamp bits (those of LRU: bit 0 is the visited bit)

    static let markMask: UInt64 = _Layout.stampUsed
    static let timeMask: UInt64 = ~_Layout.stampUsed

    // MARK: Segment

    static func area(capacity: Int) -> _PolicyArea { _PolicyArea() }
    static func initialize(_ s: _Segment) { s.sieveHand = _Layout.none }

    // MARK: Under the lock

    /// New records join the FIFO at the head, unmarked.
    @inline(__always)
    static func link(_ c: ShmLRU, _ slot: UInt32, hash: UInt32, now: UInt64) throws(ShmError) {
        try _LRUPolicy.link(c, slot, hash: hash, now: now)
    }

    /// Removing the hand's record moves the hand to its neighbour towards the head.
    @inline(__always)
    static func unlink(_ c: ShmLRU, _ slot: UInt32, prev: UInt32) throws(ShmError) {
        let s = c._segment
        if s.sieveHand == slot { s.sieveHand = prev }
    }

    /// The hand's walk: clears visited bits until an unvisited record, which it
    /// returns (the hand stays on it). At most `capacity + 1` steps.
    static func selectVictim(_ c: ShmLRU) throws(ShmError) -> UInt32? {
        let s = c._segment
        var hand = s.sieveHand
        if hand == _Layout.none { hand = s.tail }
        var budget = c.capacity + 1
        while true {
            if hand == _Layout.none { return nil }
            guard s.isSlot(hand), s.isLive(meta: s.meta(hand)) else { throw c._corrupted("SIEVE hand \(hand) is not a live record") }
            let stamp = s.stamp(hand)
            guard stamp & _Layout.stampUsed != 0, budget > 0 else {
                s.sieveHand = hand
                return hand
            }
            budget -= 1
            s.store64(s.layout.recordOffset(hand) &+ _Layout.R.stamp, stamp & ~_Layout.stampUsed)
            let prev = s.prev(hand)
            guard prev == _Layout.none || s.isSlot(prev) else { throw c._corrupted("record \(hand).prev \(prev) out of range") }
            hand = prev == _Layout.none ? s.tail : prev
            s.sieveHand = hand
            c._fault(.sieveHand)
        }
    }

    @inline(__always) static func evicting(_ c: ShmLRU, _ slot: UInt32) {}
    @inline(__always) static func evicted(_ c: ShmLRU) {}

    /// The hand follows a record that another takes the place of.
    @inline(__always)
    static func replaced(_ c: ShmLRU, _ old: UInt32, with fresh: UInt32) {
        if c._segment.sieveHand == old { c._segment.sieveHand = fresh }
    }

    // MARK: Lock-free

    /// A hit sets the visited bit: CLOCK's mark (`_LRUPolicy.touch`).
    @inline(__always)
    static func touch(_ c: ShmLRU, _ stampWord: UnsafeMutablePointer<UInt64>, stamp: UInt64, now: UInt64) {
        _LRUPolicy.touch(c, stampWord, stamp: stamp, now: now)
    }

    // MARK: Verify and rebuild

    /// The hand is none or a record on the list.
    static func verify(_ c: ShmLRU, order: [UInt32], into report: inout ShmLRU.IntegrityReport) {
        let hand = c._segment.sieveHand
        if hand != _Layout.none, !(c._segment.isSlot(hand) && order.contains(hand)) {
            report.add("SIEVE hand \(hand) is not a record on the list")
        }
    }

    static func rebuildOrder(_ s: _Segment, _ live: [(stamp: UInt64, slot: UInt32)]) -> [(stamp: UInt64, slot: UInt32)] { live }
    /// The next eviction's hand starts at the tail.
    static func rebuilt(_ s: _Segment, kept: [UInt32]) { s.sieveHand = _Layout.none }
}
