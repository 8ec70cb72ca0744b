import CShm
import Glibc

// Listing the live records through the shared index, without the lock, so that
// no key present for the whole listing is missed (ShmStore's snapshot lists its
// candidates here: Store/Snapshot/_SnapshotScan.swift).
//
// A scan of the records cannot promise that: an update writes its value into
// another record (ShmLRU+Replace.swift), so a key can move into a record the scan
// has already read. Its index entry does not move that way: an update rewrites the
// entry in place, and an entry moves only when a removal before it in its run
// shifts it back (`_IndexTable.remove`), towards its home, never past it.
//
// Why a key present throughout is listed:
// * The walk starts at a position E read empty, and visits the positions
//   downwards, E-1, E-2, …, wrapping at 0, down to E+1. At E's read the key's
//   entry lay in the run from its home to itself (linear probing; a removal writes
//   an entry into the hole before it clears the old position, so a run never has a
//   gap), and that run did not hold the empty E. The entry only moves towards its
//   home, so it never crosses E: in the walk's order it only moves down.
// * The cursor moves down one position at a time and starts at or above the entry.
//   Before each position c is read the entry is at c or below; if the read does not
//   find it at c it is below c, so at or below the next position. The walk ends at
//   E+1, the lowest position the entry can reach: the cursor meets it.
// * Each position is read inside the index sequence (odd while an entry is stored or
//   moved: ShmLRU+Index.swift, ShmLRU+Replace.swift) and its record inside the
//   record's sequence. With both unchanged, the entry named that record throughout,
//   and the record held the entry's key (a record is written before an entry names
//   it, and freed only once none does). A position that stays contended is read
//   under the lock, where nothing moves.
// * A repair rebuilds the index (any entry may move) and bumps the generation inside
//   the index sequence: a walk that meets another generation starts again, and after
//   a few restarts lists everything under the lock. A process-local index (its
//   removals are not inside the index sequence) is listed under the lock.

extension ShmLRU {
    /// A live record named by the index: its hash, slot and stamp word, read together.
    struct _IndexedRecord: Equatable {
        var hash: UInt32
        var slot: UInt32
        var stamp: UInt64
    }

    /// What one read of an index position gave.
    enum _PositionRead {
        /// A live record (or nothing: `nil`) at that position, read consistently.
        case settled(_IndexedRecord?)
        /// A writer was met: read it again.
        case contended
        /// The index was rebuilt since the walk started: start again.
        case rebuilt
    }

    /// Every live record the shared index names, each read consistently at some
    /// instant of the walk; a key present throughout is listed (see above), a key
    /// moved meanwhile at least once. Lock-free, but a position that stays
    /// contended is read under the lock, and the whole list is made under the lock
    /// after repeated repairs or with a process-local index.
    func _listIndexedRecords(_ operation: @autoclosure () -> String) throws(ShmError) -> [_IndexedRecord] {
        guard _sharedIndex != nil else { return try _withLock(operation()) { () throws(ShmError) in _listIndexedLocked() } }
        let g = _probe.geometry
        restarts: for _ in 0..<4 {
            let generation = _segment.generation
            guard let empty = _emptyPosition(generation: generation) else { continue restarts }
            var result: [_IndexedRecord] = []
            result.reserveCapacity(min(Int(_segment.count), g.slots))  // the count is read from the segment: bounded
            var position = empty
            for step in 1..<g.slots {
                if step == g.slots / 2 { _fault(.indexListing) }
                position = position == 0 ? g.slots &- 1 : position &- 1
                var read = _PositionRead.contended
                for attempt in 0..<16 {
                    if attempt >= 8 { sched_yield() }
                    read = _readPosition(position, generation: generation)
                    if case .contended = read { continue }
                    break
                }
                if case .contended = read {
                    read = try _withLock(operation()) { () throws(ShmError) -> _PositionRead in
                        _segment.generation == generation ? .settled(_readPositionLocked(position)) : .rebuilt
                    }
                }
                switch read {
                case .settled(let record): if let record { result.append(record) }
                case .rebuilt, .contended: continue restarts
                }
            }
            return result
        }
        return try _withLock(operation()) { () throws(ShmError) in _listIndexedLocked() }
    }

    /// A position of the shared index read empty, inside the index sequence, in
    /// `generation`; nil if a writer or a repair was met.
    private func _emptyPosition(generation: UInt32) -> Int? {
        let g = _probe.geometry
        for _ in 0..<16 {
            guard let snapshot = _probe.indexSnapshot() else { continue }
            var position = 0
            while position < g.slots, cshm_load_acquire_u32(g.entries + position) != 0 { position &+= 1 }
            if _probe.indexUnchanged(since: snapshot), _segment.generation == generation { return position < g.slots ? position : nil }
        }
        return nil
    }

    /// One lock-free read of the entry at `position` and of its record.
    @inline(__always)
    private func _readPosition(_ position: Int, generation: UInt32) -> _PositionRead {
        let g = _probe.geometry
        guard let snapshot = _probe.indexSnapshot() else { return .contended }
        if _segment.generation != generation { return .rebuilt }
        let entry = cshm_load_acquire_u32(g.entries + position)
        var found: _IndexedRecord? = nil
        if entry != 0, let record = g.record(slot: g.entrySlot(entry)) {
            let words = _RecordWords(record)
            let seq = cshm_load_acquire_u32(words.seqPointer)
            if seq & 1 != 0 { return .contended }
            let hash = words.hash
            let meta = words.meta
            let stamp = words.stamp
            cshm_fence_acquire()
            if cshm_load_relaxed_u32(words.seqPointer) != seq { return .contended }
            if meta >> 24 == _Layout.stateLive, g.tag(mixed: _mix32(hash)) == g.entryTag(entry) {
                found = _IndexedRecord(hash: hash, slot: g.entrySlot(entry), stamp: stamp)
            }
        }
        return _probe.indexUnchanged(since: snapshot) ? .settled(found) : .contended
    }

    /// The entry at `position` and its record, under the lock.
    private func _readPositionLocked(_ position: Int) -> _IndexedRecord? {
        let g = _probe.geometry
        let entry = cshm_load_acquire_u32(g.entries + position)
        let slot = g.entrySlot(entry)
        guard entry != 0, _segment.isSlot(slot), _segment.isLive(meta: _segment.meta(slot)) else { return nil }
        let hash = _segment.hash(slot)
        guard g.tag(mixed: _mix32(hash)) == g.entryTag(entry) else { return nil }
        return _IndexedRecord(hash: hash, slot: slot, stamp: _segment.stamp(slot))
    }

    /// Every live record the index names, under the lock.
    private func _listIndexedLocked() -> [_IndexedRecord] {
        (0..<_probe.geometry.slots).compactMap { _readPositionLocked($0) }
    }
}
