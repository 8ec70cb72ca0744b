import CShm

// The policy room: one file per eviction policy (`_LRUPolicy`, `_SievePolicy`,
// `_S3FIFOPolicy`, `_TinyLFUPolicy`), each an enum of static members with the same names, and this
// file, the one place that switches on the segment's policy. The rest of the
// cache calls only the `ShmLRU` methods below.
//
// Every policy has:
//   header words   `extension _ListState { var … }` in its file (offsets in
//                  `_Layout.H`, whose map is the one detailed description)
//   stamp bits     `markMask`, `timeMask` (and its own named bits)
//   area(capacity:)   its area after the index (ghost, sketch) and targets
//   initialize     its header words at creation
//   link           stamps and links a new record (under the lock)
//   unlink         its bookkeeping for a record leaving the list
//   selectVictim   the next record to evict, moves on the way, bounded
//   evicting / evicted   before the victim is detached / after
//   replaced       a record takes another's place (ShmStore's replace)
//   touch          the hit, lock-free: a bounded number of stores or one
//                  compare-and-swap into the record's stamp, never a list move
//   verify         its invariants, from the forward walk's order
//   preferenceRank a record's rank from its stamp (snapshots write in this order)
//   rebuildOrder / rebuilt   how repair relinks the records and restores its words
//
// Adding a policy is one new file with those members, one case in
// `ShmLRU.EvictionPolicy` (ShmLRU+EvictionPolicy.swift, with its header code), and
// one row in each switch below. The hit path stays monomorphic: no existential,
// no closure; the handle keeps one Bool (`_countsFrequency`) to choose the touch.

/// A policy's share of the segment: its area after the index (UInt64 words) and
/// the targets recorded in header line 6.
struct _PolicyArea: Equatable, Sendable {
    var words = 0
    var smallTarget = 0
    var ghostLength = 0
}

enum _PolicyDispatch {
    static func area(_ policy: ShmLRU.EvictionPolicy, capacity: Int) -> _PolicyArea {
        switch policy {
        case .lru: _LRUPolicy.area(capacity: capacity)
        case .sieve: _SievePolicy.area(capacity: capacity)
        case .s3fifo: _S3FIFOPolicy.area(capacity: capacity)
        case .tinylfu: _TinyLFUPolicy.area(capacity: capacity)
        }
    }

    /// A record's rank in the policy's order of preference (higher: kept longer), from its stamp word.
    static func preferenceRank(_ policy: ShmLRU.EvictionPolicy, stamp: UInt64) -> UInt64 {
        switch policy {
        case .lru: _LRUPolicy.preferenceRank(stamp)
        case .sieve: _SievePolicy.preferenceRank(stamp)
        case .s3fifo: _S3FIFOPolicy.preferenceRank(stamp)
        case .tinylfu: _TinyLFUPolicy.preferenceRank(stamp)
        }
    }

    /// How much the policy counted a record's uses (0-3), from its stamp word.
    static func uses(_ policy: ShmLRU.EvictionPolicy, stamp: UInt64) -> UInt32 {
        UInt32(truncatingIfNeeded: stamp & (countsFrequency(policy) ? _Layout.stampFrequency : _Layout.stampUsed))
    }

    static func initialize(_ s: _Segment) {
        switch s.layout.policy {
        case .lru: _LRUPolicy.initialize(s)
        case .sieve: _SievePolicy.initialize(s)
        case .s3fifo: _S3FIFOPolicy.initialize(s)
        case .tinylfu: _TinyLFUPolicy.initialize(s)
        }
    }

    @inline(__always)
    static func timeMask(_ policy: ShmLRU.EvictionPolicy) -> UInt64 {
        switch policy {
        case .lru: _LRUPolicy.timeMask
        case .sieve: _SievePolicy.timeMask
        case .s3fifo: _S3FIFOPolicy.timeMask
        case .tinylfu: _TinyLFUPolicy.timeMask
        }
    }

    @inline(__always)
    static func markMask(_ policy: ShmLRU.EvictionPolicy) -> UInt64 {
        switch policy {
        case .lru: _LRUPolicy.markMask
        case .sieve: _SievePolicy.markMask
        case .s3fifo: _S3FIFOPolicy.markMask
        case .tinylfu: _TinyLFUPolicy.markMask
        }
    }

    /// Whether the policy's hit is a frequency count (`_S3FIFOPolicy.touch`)
    /// rather than CLOCK's mark (`_LRUPolicy.touch`).
    static func countsFrequency(_ policy: ShmLRU.EvictionPolicy) -> Bool {
        switch policy {
        case .lru, .sieve: false
        case .s3fifo, .tinylfu: true
        }
    }

    static func rebuildOrder(_ s: _Segment, _ live: [(stamp: UInt64, slot: UInt32)]) -> [(stamp: UInt64, slot: UInt32)] {
        switch s.layout.policy {
        case .lru: _LRUPolicy.rebuildOrder(s, live)
        case .sieve: _SievePolicy.rebuildOrder(s, live)
        case .s3fifo: _S3FIFOPolicy.rebuildOrder(s, live)
        case .tinylfu: _TinyLFUPolicy.rebuildOrder(s, live)
        }
    }

    static func rebuilt(_ s: _Segment, kept: [UInt32]) {
        switch s.layout.policy {
        case .lru: _LRUPolicy.rebuilt(s, kept: kept)
        case .sieve: _SievePolicy.rebuilt(s, kept: kept)
        case .s3fifo: _S3FIFOPolicy.rebuilt(s, kept: kept)
        case .tinylfu: _TinyLFUPolicy.rebuilt(s, kept: kept)
        }
    }
}

extension ShmLRU {
    /// Stamps a new record and links it per the policy (under the lock).
    @inline(__always)
    func _linkNew(_ slot: UInt32, hash: UInt32, now: UInt64) throws(ShmError) {
        switch _segment.layout.policy {
        case .lru: try _LRUPolicy.link(self, slot, hash: hash, now: now)
        case .sieve: try _SievePolicy.link(self, slot, hash: hash, now: now)
        case .s3fifo: try _S3FIFOPolicy.link(self, slot, hash: hash, now: now)
        case .tinylfu: try _TinyLFUPolicy.link(self, slot, hash: hash, now: now)
        }
    }

    /// The policy's bookkeeping for a record leaving the list (from `_unlink`,
    /// before the links change).
    @inline(__always)
    func _noteUnlink(_ slot: UInt32, prev: UInt32) throws(ShmError) {
        switch _segment.layout.policy {
        case .lru: try _LRUPolicy.unlink(self, slot, prev: prev)
        case .sieve: try _SievePolicy.unlink(self, slot, prev: prev)
        case .s3fifo: try _S3FIFOPolicy.unlink(self, slot, prev: prev)
        case .tinylfu: try _TinyLFUPolicy.unlink(self, slot, prev: prev)
        }
    }

    /// Chooses the next record to evict, applying the policy's moves on the way
    /// (CLOCK second chances, the SIEVE hand, S3-FIFO promotions). Nil when the
    /// cache is empty. Asking twice without a change in between returns the same
    /// record. Every walk is bounded: a peer that keeps marking records (or a
    /// hostile one) cannot keep the lock holder here.
    func _selectVictim() throws(ShmError) -> UInt32? {
        switch _segment.layout.policy {
        case .lru: try _LRUPolicy.selectVictim(self)
        case .sieve: try _SievePolicy.selectVictim(self)
        case .s3fifo: try _S3FIFOPolicy.selectVictim(self)
        case .tinylfu: try _TinyLFUPolicy.selectVictim(self)
        }
    }

    /// Before the victim is detached.
    @inline(__always)
    func _noteEvicting(_ slot: UInt32) {
        switch _segment.layout.policy {
        case .lru: _LRUPolicy.evicting(self, slot)
        case .sieve: _SievePolicy.evicting(self, slot)
        case .s3fifo: _S3FIFOPolicy.evicting(self, slot)
        case .tinylfu: _TinyLFUPolicy.evicting(self, slot)
        }
    }

    /// After the victim is detached.
    @inline(__always)
    func _noteEvicted() {
        switch _segment.layout.policy {
        case .lru: _LRUPolicy.evicted(self)
        case .sieve: _SievePolicy.evicted(self)
        case .s3fifo: _S3FIFOPolicy.evicted(self)
        case .tinylfu: _TinyLFUPolicy.evicted(self)
        }
    }

    /// `fresh` took `old`'s place in the list (`_spliceReplacing`).
    @inline(__always)
    func _noteReplaced(_ old: UInt32, with fresh: UInt32) {
        switch _segment.layout.policy {
        case .lru: _LRUPolicy.replaced(self, old, with: fresh)
        case .sieve: _SievePolicy.replaced(self, old, with: fresh)
        case .s3fifo: _S3FIFOPolicy.replaced(self, old, with: fresh)
        case .tinylfu: _TinyLFUPolicy.replaced(self, old, with: fresh)
        }
    }

    /// The policy's own checks, given the forward walk's records in order.
    func _verifyPolicy(order: [UInt32], into report: inout IntegrityReport) {
        switch _segment.layout.policy {
        case .lru: _LRUPolicy.verify(self, order: order, into: &report)
        case .sieve: _SievePolicy.verify(self, order: order, into: &report)
        case .s3fifo: _S3FIFOPolicy.verify(self, order: order, into: &report)
        case .tinylfu: _TinyLFUPolicy.verify(self, order: order, into: &report)
        }
    }

    /// The hit (lock-free, or under the lock in interval mode): the policy's
    /// touch of the record's stamp word. One branch on a Bool the handle holds.
    @inline(__always)
    func _touch(_ stampWord: UnsafeMutablePointer<UInt64>, stamp: UInt64, now: UInt64) {
        // S3-FIFO's and TinyLFU's touch (the same frequency count: `_TinyLFUPolicy.touch`).
        if _countsFrequency { return _S3FIFOPolicy.touch(stampWord, stamp: stamp, now: now, interval: _promotionNanoseconds) }
        _LRUPolicy.touch(self, stampWord, stamp: stamp, now: now)  // SIEVE's touch is the same mark
    }
}
