import CShm

// The policy room: one file per eviction policy (`_LRUPolicy`, `_SievePolicy`,
// `_S3FIFOPolicy`, `_TinyLFUPolicy`), each an enum conforming to `_PolicyRoom`
// (the static members below), and this file: the protocol, the one switch from
// the segment's policy to its room (`EvictionPolicy.room`), and the cache's calls
// into the room of its handle (`ShmLRU._room`, taken once at attach, and beside it
// `_roomCalls`: the members the set and eviction paths call, as function values).
//
// Every policy has (the `_PolicyRoom` requirements):
//   header words   `extension _ListState { var … }` in its file (offsets in
//                  `_Layout.H`, whose map is the one detailed description);
//                  the two-queue frame S3-FIFO and TinyLFU share names its
//                  words once, in `_QueueWords.swift`, and its queue moves
//                  (`mainVictim`, `moveToMain`, `linkSmall` / `linkMain`) once,
//                  in `_S3FIFOPolicy`
//   stamp bits     `markMask`, `timeMask` (and its own named bits)
//   area(capacity:)   its area after the index (ghost, sketch) and targets
//   initialize     its header words at creation
//   link           stamps and links a new record (under the lock)
//   unlink         its bookkeeping for a record leaving the list
//   selectVictim   the next record to evict, moves on the way, bounded
//   evicting / evicted   before the victim is detached / after
//   replaced       a record takes another's place (ShmStore's replace)
//   verify         its invariants, from the forward walk's order
//   preferenceRank a record's rank from its stamp (snapshots write in this order)
//   rebuildOrder / rebuilt   how repair relinks the records and restores its words
// and, outside the protocol, its hit:
//   touch          the hit, lock-free: a bounded number of stores or one
//                  compare-and-swap into the record's stamp, never a list move.
//                  The hit path stays monomorphic (no existential, no closure):
//                  the handle keeps one Bool (`_countsFrequency`, from the room's
//                  mark: a 2-bit frequency or one used bit) and calls one of the
//                  two touches directly (`_touch` below).
//
// Adding a policy is, by this layout, three things:
//   1. one new file in this folder: `enum _NewPolicy: _PolicyRoom { … }`, with its
//      header words and stamp bits;
//   2. one case in `ShmLRU.EvictionPolicy` (ShmLRU+EvictionPolicy.swift), with its
//      header code;
//   3. one row in `EvictionPolicy.room` below.
// The four policies follow that shape: each is one file and one enum conforming
// on its declaration line; each is one case with one code; each is one row below.

/// A policy's share of the segment: its area after the index (UInt64 words) and
/// the targets recorded in header line 6.
struct _PolicyArea: Equatable, Sendable {
    var words = 0
    var smallTarget = 0
    var ghostLength = 0
}

/// What every eviction policy's room provides (see the list above). Static
/// members only: a room holds no state of its own; its state is the segment's
/// header words and the records' stamp bits.
protocol _PolicyRoom {
    /// The stamp's use bits (CLOCK's and SIEVE's used bit, S3-FIFO's and TinyLFU's 2-bit frequency).
    static var markMask: UInt64 { get }
    /// The stamp's time bits.
    static var timeMask: UInt64 { get }
    /// Whether the hit is a frequency count (`_S3FIFOPolicy.touch`) rather than
    /// CLOCK's mark (`_LRUPolicy.touch`). Given: the mark is then the 2-bit frequency.
    static var countsFrequency: Bool { get }
    /// Its set, removal and eviction members as function values (given: see `_RoomCalls`).
    static var calls: _RoomCalls { get }
    /// Its area after the index and the targets in header line 6.
    static func area(capacity: Int) -> _PolicyArea
    /// Its header words at creation.
    static func initialize(_ s: _Segment)
    /// A record's rank in the policy's order of preference (higher: kept longer), from its stamp word.
    static func preferenceRank(_ stamp: UInt64) -> UInt64
    /// Stamps a new record and links it (under the lock).
    static func link(_ c: ShmLRU, _ slot: UInt32, hash: UInt32, now: UInt64) throws(ShmError)
    /// Its bookkeeping for a record leaving the list, before the links change.
    static func unlink(_ c: ShmLRU, _ slot: UInt32, prev: UInt32) throws(ShmError)
    /// The next record to evict, applying its moves on the way; bounded.
    static func selectVictim(_ c: ShmLRU) throws(ShmError) -> UInt32?
    /// Before the victim is detached.
    static func evicting(_ c: ShmLRU, _ slot: UInt32)
    /// After the victim is detached.
    static func evicted(_ c: ShmLRU)
    /// `fresh` took `old`'s place in the list.
    static func replaced(_ c: ShmLRU, _ old: UInt32, with fresh: UInt32)
    /// Its own checks, given the forward walk's records in order.
    static func verify(_ c: ShmLRU, order: [UInt32], into report: inout ShmLRU.IntegrityReport)
    /// The order in which repair relinks the live records (most preferred first).
    static func rebuildOrder(_ s: _Segment, _ live: [(stamp: UInt64, slot: UInt32)]) -> [(stamp: UInt64, slot: UInt32)]
    /// Restores its header words after repair relinked `kept`.
    static func rebuilt(_ s: _Segment, kept: [UInt32])
}

/// The room's members that the set, update, removal and eviction paths call, as
/// function values of the concrete room's members (`_PolicyRoom.calls`, taken once
/// at attach with the room). Measured (callgrind, set-insert-evict at 10K): called
/// through the room metatype, each goes through a protocol witness thunk in which
/// the compiler called the C atomics out of line, +220 instructions per evicting
/// insert (+21.6 %); as function values of the concrete members, +42 (+4.1 %).
struct _RoomCalls {
    let link: (ShmLRU, UInt32, UInt32, UInt64) throws(ShmError) -> Void
    let unlink: (ShmLRU, UInt32, UInt32) throws(ShmError) -> Void
    let selectVictim: (ShmLRU) throws(ShmError) -> UInt32?
    let evicting: (ShmLRU, UInt32) -> Void
    let evicted: (ShmLRU) -> Void
    let replaced: (ShmLRU, UInt32, UInt32) -> Void

    @inline(__always)
    init<Room: _PolicyRoom>(_ room: Room.Type) {
        link = { (c, slot, hash, now) throws(ShmError) in try Room.link(c, slot, hash: hash, now: now) }
        unlink = { (c, slot, prev) throws(ShmError) in try Room.unlink(c, slot, prev: prev) }
        selectVictim = { (c) throws(ShmError) in try Room.selectVictim(c) }
        evicting = { c, slot in Room.evicting(c, slot) }
        evicted = { c in Room.evicted(c) }
        replaced = { c, old, fresh in Room.replaced(c, old, with: fresh) }
    }
}

extension _PolicyRoom {
    static var countsFrequency: Bool { markMask == _Layout.stampFrequency }
    static var calls: _RoomCalls { _RoomCalls(Self.self) }

    /// How much the policy counted a record's uses (0-3), from its stamp word.
    static func uses(_ stamp: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: stamp & markMask) }
}

extension ShmLRU.EvictionPolicy {
    /// The policy's room: the one place that switches on the policy.
    var room: any _PolicyRoom.Type {
        switch self {
        case .lru: _LRUPolicy.self
        case .sieve: _SievePolicy.self
        case .s3fifo: _S3FIFOPolicy.self
        case .tinylfu: _TinyLFUPolicy.self
        }
    }
}

extension ShmLRU {
    /// Stamps a new record and links it per the policy (under the lock).
    @inline(__always)
    func _linkNew(_ slot: UInt32, hash: UInt32, now: UInt64) throws(ShmError) { try _roomCalls.link(self, slot, hash, now) }

    /// Chooses the next record to evict, applying the policy's moves on the way
    /// (CLOCK second chances, the SIEVE hand, S3-FIFO promotions). Nil when the
    /// cache is empty. Asking twice without a change in between returns the same
    /// record. Every walk is bounded: a peer that keeps marking records (or a
    /// hostile one) cannot keep the lock holder here.
    func _selectVictim() throws(ShmError) -> UInt32? { try _roomCalls.selectVictim(self) }

    /// Before the victim is detached.
    @inline(__always)
    func _noteEvicting(_ slot: UInt32) { _roomCalls.evicting(self, slot) }

    /// After the victim is detached.
    @inline(__always)
    func _noteEvicted() { _roomCalls.evicted(self) }

    /// `fresh` took `old`'s place in the list (`_spliceReplacing`).
    @inline(__always)
    func _noteReplaced(_ old: UInt32, with fresh: UInt32) { _roomCalls.replaced(self, old, fresh) }

    /// The policy's own checks, given the forward walk's records in order.
    func _verifyPolicy(order: [UInt32], into report: inout IntegrityReport) { _room.verify(self, order: order, into: &report) }

    /// The hit (lock-free, or under the lock in interval mode): the policy's
    /// touch of the record's stamp word. One branch on a Bool the handle holds;
    /// then one on the stamp's sample mark (TinyLFU's bit 3, set at the link for a
    /// key its mini caches sample; zero under S3-FIFO): a sampled key's hit appends
    /// its hash to the use ring (`_TinyLFUMinis.noteUse`: one fetch-add, one store).
    @inline(__always)
    func _touch(_ record: UnsafeMutableRawPointer, stamp: UInt64, now: UInt64) {
        let stampWord = (record + _Layout.R.stamp).assumingMemoryBound(to: UInt64.self)
        // S3-FIFO's and TinyLFU's touch (the same frequency count: `_TinyLFUPolicy.touch`).
        if _countsFrequency {
            _S3FIFOPolicy.touch(stampWord, stamp: stamp, now: now, interval: _promotionNanoseconds)
            if stamp & _TinyLFUPolicy.sampled != 0, let ring = _miniRing {
                _TinyLFUMinis.noteUse(ring, mask: _miniRingMask, hash: record.load(fromByteOffset: _Layout.R.hash, as: UInt32.self))
            }
            return
        }
        _LRUPolicy.touch(self, stampWord, stamp: stamp, now: now)  // SIEVE's touch is the same mark
    }
}
