import CShm

/// What the searches of the index need, flattened into one struct of plain values
/// that the handle holds: the index's geometry (with the records' base and stride).
/// The read path then loads each with one instruction instead of copying the
/// index table and the layout (the hot path's prologue was most of its cost).
///
/// It describes the same memory as `_IndexTable` and `_Segment` and checks what it
/// reads the same way: a slot from an entry is checked against the capacity
/// before it is used, a length from a record against the record size.
///
/// It owns the one probe loop (`probe(_:_:)`): the locked `find`, and through
/// `sight(_:)` the cache's lock-free `get` and the store's lock-free reads, all
/// walk the index through it.
struct _Probe: @unchecked Sendable {
    let geometry: _IndexGeometry
    /// The largest value a record holds: a longer length read from a record is torn or corrupt.
    let recordSize: Int
    /// Odd while the index is being reshaped (`_Layout.H.indexSeq`).
    let indexSeq: UnsafeMutablePointer<UInt32>

    init(table: _IndexTable, segment: _Segment) {
        geometry = table.geometry
        recordSize = segment.layout.recordSize
        indexSeq = segment.indexSeqPointer
    }

    /// Walks the positions of `hash` from its home until an empty entry, or until
    /// every position was seen: for each entry whose tag matches and whose slot is
    /// in range, calls `visit` with the position, the slot and its record, and
    /// returns the first non-nil result. Entries are loaded with acquire ordering
    /// (a reader that sees an entry sees the record published before it).
    @inline(__always)
    func probe<R>(_ hash: UInt32, _ visit: (_ position: Int, _ slot: UInt32, _ record: UnsafeMutableRawPointer) -> R?) -> R? {
        let g = geometry
        let mixed = _mix32(hash)
        let wanted = g.tag(mixed: mixed)
        var position = g.home(mixed: mixed)
        var probes = g.slots
        while probes != 0 {
            let entry = cshm_load_acquire_u32(g.entries + position)
            if entry == 0 { return nil }
            if g.entryTag(entry) == wanted {
                let slot = g.entrySlot(entry)
                if let record = g.record(slot: slot), let found = visit(position, slot, record) { return found }
            }
            position &+= 1
            if position == g.slots { position = 0 }
            probes &-= 1
        }
        return nil
    }

    /// The position and slot of the live record with `hash` (under the lock). The
    /// one implementation of the search: `_IndexTable.find` calls it too.
    @inline(__always)
    func find(_ hash: UInt32) -> (position: Int, slot: UInt32)? {
        probe(hash) { position, slot, record in
            let r = _RecordWords(record)
            return r.hash == hash && r.meta >> 24 == _Layout.stateLive ? (position, slot) : nil
        }
    }

    /// The lock-free sight of the live record with `hash`: the first record met
    /// on its positions that is live and carries the hash, its sequence read first
    /// (and even), then its hash and state. `.contended` if a record met on the
    /// way is being written (odd sequence); `.absent` if none, which holds only if
    /// the index did not change meanwhile (`indexUnchanged(since:)`: an entry
    /// being shifted may have been missed). The caller reads what it needs from
    /// the record and keeps it only if `isUnchanged()` holds after.
    ///
    /// No closure is handed in: the callers (`ShmLRU._readOptimistic`,
    /// `ShmStore._readOnce`) keep their own checks inline, so a value they read
    /// (a store read's array) never passes through a closure's result.
    @inline(__always)
    func sight(_ hash: UInt32) -> _Sighting<_RecordSight> {
        probe(hash) { _, slot, record -> _Sighting<_RecordSight>? in
            let r = _RecordWords(record)
            let seq = cshm_load_acquire_u32(r.seqPointer)
            if seq & 1 != 0 { return .contended }
            let meta = r.meta
            guard r.hash == hash, meta >> 24 == _Layout.stateLive else { return nil }  // another record: probe on
            return .found(_RecordSight(words: r, slot: slot, seq: seq, meta: meta))
        } ?? .absent
    }

    /// The lock-free sight of the record in `slot` if its sequence is still `seq`
    /// (an even sequence a reader noted earlier, through `sight(_:)`: the record
    /// is then the one it checked, unchanged); nil when the slot is out of range
    /// or the record changed. Its `meta` is read after the sequence, as `sight(_:)`
    /// reads it. The caller keeps what it reads only if `isUnchanged()` holds after.
    @inline(__always)
    func sight(slot: UInt32, seq: UInt32) -> _RecordSight? {
        guard let record = geometry.record(slot: slot) else { return nil }
        let r = _RecordWords(record)
        guard cshm_load_acquire_u32(r.seqPointer) == seq else { return nil }
        return _RecordSight(words: r, slot: slot, seq: seq, meta: r.meta)
    }

    /// The index sequence before a lock-free search, or nil while the index is
    /// being reshaped (then the search would be `.contended`).
    @inline(__always)
    func indexSnapshot() -> UInt32? {
        let seq = cshm_load_acquire_u32(indexSeq)
        return seq & 1 == 0 ? seq : nil
    }

    /// Whether the index is as it was at `snapshot`: an absence the search
    /// found holds only then.
    @inline(__always)
    func indexUnchanged(since snapshot: UInt32) -> Bool {
        cshm_fence_acquire()
        return cshm_load_relaxed_u32(indexSeq) == snapshot
    }

    /// Before the lock is taken: asks for the lines that a locked `find(hash)`
    /// and the copy after it will read, so that their misses overlap the lock's
    /// acquisition instead of lengthening the critical section (which every
    /// other process waits for). Hints only: the home entry is read racily and
    /// used for nothing but a prefetch address, after the same range check as a
    /// real lookup; a prefetch never faults. The locked path checks everything again.
    @inline(__always)
    func warm(_ hash: UInt32) {
        let g = geometry
        let mixed = _mix32(hash)
        let entry = cshm_load_relaxed_u32(g.entries + g.home(mixed: mixed))
        guard g.entryTag(entry) == g.tag(mixed: mixed), let record = g.record(slot: g.entrySlot(entry)) else { return }
        cshm_prefetch(record)
        var offset = 64
        let end = _Layout.R.payload &+ min(recordSize, 256)
        while offset < end {
            cshm_prefetch(record + offset)
            offset &+= 64
        }
        cshm_prefetch(record + (end &- 1))
    }

    /// Asks for the home entry of `hash` (a hint: see `warm(_:)`).
    @inline(__always) func prefetchHome(_ hash: UInt32) {
        cshm_prefetch(geometry.entries + geometry.home(mixed: _mix32(hash)))
    }
}

/// What one lock-free search found.
enum _Sighting<Found> {
    /// The search settled on a record.
    case found(Found)
    /// No record: the key is absent.
    case absent
    /// A writer was met: retry, or take the lock.
    case contended
}

/// A record's header words, read racily (relaxed) through its address: the lock-free
/// paths' view of a record (`_Segment` is the locked one). Offsets from `_Layout.R`.
struct _RecordWords {
    let record: UnsafeMutableRawPointer
    @inline(__always) init(_ record: UnsafeMutableRawPointer) { self.record = record }

    @inline(__always) var seqPointer: UnsafeMutablePointer<UInt32> {
        (record + _Layout.R.seq).assumingMemoryBound(to: UInt32.self)
    }
    @inline(__always) var hash: UInt32 { cshm_load_relaxed_u32((record + _Layout.R.hash).assumingMemoryBound(to: UInt32.self)) }
    @inline(__always) var meta: UInt32 { cshm_load_relaxed_u32((record + _Layout.R.meta).assumingMemoryBound(to: UInt32.self)) }
    @inline(__always) var stamp: UInt64 { cshm_load_relaxed_u64((record + _Layout.R.stamp).assumingMemoryBound(to: UInt64.self)) }
    @inline(__always) var payload: UnsafeMutableRawPointer { record + _Layout.R.payload }
}

/// A live record met by a lock-free search, inside its seqlock window: `seq` is
/// the even sequence read before anything else, `meta` its length and state
/// then. Whatever is read from it is only good if `isUnchanged()` holds afterwards.
struct _RecordSight {
    let words: _RecordWords
    let slot: UInt32
    let seq: UInt32
    let meta: UInt32

    @inline(__always) var record: UnsafeMutableRawPointer { words.record }
    /// The value's length as the record claims it (check it against the record size).
    @inline(__always) var length: Int { Int(meta & _Layout.lengthMask) }

    /// Whether the record is as it was when the search met it: everything read
    /// from it in between is whole, and belongs to it.
    @inline(__always) func isUnchanged() -> Bool {
        cshm_fence_acquire()
        return cshm_load_relaxed_u32(words.seqPointer) == seq
    }
}
