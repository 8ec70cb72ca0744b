import CShm
import Glibc

// Copying a serving store's entries for a snapshot, without stopping it.
//
// Pass 1 reads every record's state and stamp word racily (no lock, no seqlock:
// a hint) and ranks the live ones by the eviction policy's preference:
//   LRU      the last use's time (stamp), a marked record before an unmarked one of the same time
//   SIEVE    visited records first, then the newest
//   S3-FIFO  the 2-bit frequency first, then the main queue before the small one, then the newest
// Pass 2 visits the records in that order and copies each inside its seqlock
// (sequence even and unchanged around the copy, as the store's lock-free reads
// do: ShmStore+LockFreeRead.swift), spilled values through the heap's stamped
// reads. A record met mid-write is retried (yielding the CPU after a few tries),
// and after `attempts` tries copied under the data lock, for that one record: the
// store never stops for the snapshot as a whole. A record reused by another key
// between the passes is copied as it is now (its own key, its own value, each
// whole), and the hash pass 1 saw there is looked up in the index: an update
// writes its new value into another record (ShmLRU+Replace.swift), and the entry
// is copied from there. A key met twice is written once. Entries set after pass 1 looked at their record may be missed: the
// snapshot is of each entry at some instant while it ran, not of one instant.

extension ShmStore {
    /// A live record seen by pass 1, and its rank (higher: more worth keeping).
    struct _SnapshotCandidate {
        var slot: UInt32
        /// The record's hash then: if the record changed by pass 2, the index finds where that hash went.
        var hash: UInt32
        var rank: UInt64
    }

    /// One record copied by pass 2.
    enum _SnapshotRead {
        /// A whole entry, and the hash its record was stored under.
        case entry(_SnapshotEntry, hash: UInt32)
        /// Not live (freed since pass 1), or not a store record.
        case empty
        case expired
        /// A writer was met: try again.
        case busy
    }

    /// How much the policy counted a record (0-3) from its stamp word.
    func _snapshotUses(_ stamp: UInt64) -> UInt32 { cache.policy.room.uses(stamp) }

    /// The record's rank in the policy's order of preference (its room says how).
    func _snapshotRank(_ stamp: UInt64) -> UInt64 { cache.policy.room.preferenceRank(stamp) }

    /// Pass 1: the live records, most preferred first. Reads two words per record, racily.
    func _snapshotCandidates() -> [_SnapshotCandidate] {
        let geometry = cache._lockFreeView.probe.geometry
        var result: [_SnapshotCandidate] = []
        result.reserveCapacity(cache.count)
        var slot: UInt32 = 0
        while let record = geometry.record(slot: slot) {
            let words = _RecordWords(record)
            if words.meta >> 24 == _Layout.stateLive {
                result.append(_SnapshotCandidate(slot: slot, hash: words.hash, rank: _snapshotRank(words.stamp)))
            }
            slot &+= 1
        }
        result.sort { $0.rank > $1.rank }
        return result
    }

    /// Pass 2, one attempt: the record in `slot` copied whole inside its seqlock.
    /// The remaining life is counted from `now` (the caller's CLOCK_MONOTONIC).
    func _snapshotRead(slot: UInt32, now: UInt64) -> _SnapshotRead {
        let probe = cache._lockFreeView.probe
        guard let record = probe.geometry.record(slot: slot) else { return .empty }
        let words = _RecordWords(record)
        let seq = cshm_load_acquire_u32(words.seqPointer)
        if seq & 1 != 0 { return .busy }
        func unchanged() -> Bool {
            cshm_fence_acquire()
            return cshm_load_relaxed_u32(words.seqPointer) == seq
        }
        let meta = words.meta
        guard meta >> 24 == _Layout.stateLive else { return unchanged() ? .empty : .busy }
        let length = Int(meta & _Layout.lengthMask)
        guard length <= probe.recordSize, let stored = _StorePayload(words.payload, count: length) else {
            return unchanged() ? .empty : .busy
        }
        let expiresAt = stored.expiresAt
        let maxAge = stored.maxAge
        let stamp = words.stamp
        let hash = words.hash
        let keyLength = stored.keyLength
        var key = [UInt8](repeating: 0, count: keyLength)
        if keyLength > 0 { key.withUnsafeMutableBytes { cshm_racy_copy($0.baseAddress, stored.key.baseAddress, keyLength) } }
        let view = _RecordView(
            record: record, slot: slot, seq: seq, hash: 0, expiresAt: expiresAt, value: stored.value, flags: stored.flags)
        let value = _copyValue(view)
        guard unchanged(), let value else { return .busy }
        guard String(validating: key, as: UTF8.self) != nil, value.count <= _SnapshotFormat.maxValueBytes,
            maxAge <= UInt64(Int64.max)
        else { return .empty }  // not something a store's API wrote: left out
        if expiresAt != 0, expiresAt <= now { return .expired }
        return .entry(
            _SnapshotEntry(
                key: key, value: value, remaining: expiresAt == 0 ? 0 : min(expiresAt - now, UInt64(Int64.max)), maxAge: maxAge,
                uses: _snapshotUses(stamp)), hash: hash)
    }

    /// The slot of the live record stored under `hash` now, found through the
    /// shared index without the lock (nil: none, or the index kept moving).
    func _snapshotSlot(of hash: UInt32) -> UInt32? {
        let probe = cache._lockFreeView.probe
        for attempt in 0..<16 {
            if attempt >= 8 { sched_yield() }
            guard let snapshot = probe.indexSnapshot() else { continue }
            switch probe.sight(hash) {
            case .found(let sight): return sight.slot
            case .absent: if probe.indexUnchanged(since: snapshot) { return nil }
            case .contended: continue
            }
        }
        return nil
    }

    /// Pass 2 for one record: lock-free attempts, then one copy under the data lock.
    /// `retried` counts the records that needed more than one attempt.
    func _snapshotCopy(slot: UInt32, retried: inout Int, _ operation: @autoclosure () -> String) throws(ShmError) -> _SnapshotRead {
        var attempts = 0
        while attempts < 16 {
            let read = _snapshotRead(slot: slot, now: _monotonicNanoseconds())
            if case .busy = read {
                if attempts == 0 { retried += 1 }
                attempts += 1
                if attempts >= 8 { sched_yield() }
                continue
            }
            return read
        }
        // A writer kept it busy (or died in it: the lock repairs that): this one record under the lock.
        return try cache._withLockedHandle(operation()) { (_) throws(ShmError) -> _SnapshotRead in
            let read = _snapshotRead(slot: slot, now: _monotonicNanoseconds())
            if case .busy = read { return .empty }
            return read
        }
    }
}
