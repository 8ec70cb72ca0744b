import CShm
import Glibc

// Copying a serving store's entries for a snapshot, without stopping it.
//
// Pass 1 lists the live records through the cache's index (`indexedRecords`,
// LRU/Index/ShmLRU+IndexListing.swift): each entry's hash, slot and stamp, read
// together; a key present for the whole pass is listed even if updates move it
// from record to record meanwhile (a scan of the records by slot missed a key that
// moved into a record it had already read). It ranks them by the eviction
// policy's preference:
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
// whole), and the listed hash is looked up in the index again: an update writes
// its new value into another record (ShmLRU+Replace.swift), and the entry is
// copied from there. That follow repeats while the key keeps moving, and after a
// few rounds the key is found and copied under the data lock, where it cannot
// move; it ends early only when the index says, consistently, that the hash is
// gone. So every key present for the whole snapshot is written. A key met twice
// is written once. Entries set after pass 1 passed their index position may be
// missed: the snapshot is of each entry at some instant while it ran, not of one
// instant.

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
        /// Not live (freed since pass 1), or out of range.
        case empty
        /// A live record that is not a store entry (left out), and its hash.
        case foreign(hash: UInt32)
        /// An entry whose life ended, and its hash.
        case expired(hash: UInt32)
        /// A writer was met: try again.
        case busy
    }

    /// How much the policy counted a record (0-3) from its stamp word.
    func _snapshotUses(_ stamp: UInt64) -> UInt32 { cache.policy.room.uses(stamp) }

    /// The record's rank in the policy's order of preference (its room says how).
    func _snapshotRank(_ stamp: UInt64) -> UInt64 { cache.policy.room.preferenceRank(stamp) }

    /// Pass 1: the live records the index names, most preferred first.
    func _snapshotCandidates(_ operation: @autoclosure () -> String) throws(ShmError) -> [_SnapshotCandidate] {
        var result = try cache._lockFreeView.indexedRecords(operation()).map {
            _SnapshotCandidate(slot: $0.slot, hash: $0.hash, rank: _snapshotRank($0.stamp))
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
        let hash = words.hash
        guard length <= probe.recordSize, let stored = _StorePayload(words.payload, count: length) else {
            return unchanged() ? .foreign(hash: hash) : .busy
        }
        let expiresAt = stored.expiresAt
        let maxAge = stored.maxAge
        let stamp = words.stamp
        let keyLength = stored.keyLength
        var key = [UInt8](repeating: 0, count: keyLength)
        if keyLength > 0 { key.withUnsafeMutableBytes { cshm_racy_copy($0.baseAddress, stored.key.baseAddress, keyLength) } }
        let view = _RecordView(
            record: record, slot: slot, seq: seq, hash: 0, expiresAt: expiresAt, value: stored.value, flags: stored.flags)
        let value = _copyValue(view)
        guard unchanged(), let value else { return .busy }
        guard String(validating: key, as: UTF8.self) != nil, value.count <= _SnapshotFormat.maxValueBytes,
            maxAge <= UInt64(Int64.max)
        else { return .foreign(hash: hash) }  // not something a store's API wrote: left out
        if expiresAt != 0, expiresAt <= now { return .expired(hash: hash) }
        return .entry(
            _SnapshotEntry(
                key: key, value: value, remaining: expiresAt == 0 ? 0 : min(expiresAt - now, UInt64(Int64.max)), maxAge: maxAge,
                uses: _snapshotUses(stamp)), hash: hash)
    }

    /// The slot of the live record stored under `hash` now, found through the
    /// shared index without the lock: `.absent` only if the index said so
    /// consistently, `.contended` if it kept moving.
    func _snapshotSlot(of hash: UInt32) -> _Sighting<UInt32> {
        let probe = cache._lockFreeView.probe
        for attempt in 0..<16 {
            if attempt >= 8 { sched_yield() }
            guard let snapshot = probe.indexSnapshot() else { continue }
            switch probe.sight(hash) {
            case .found(let sight): return .found(sight.slot)
            case .absent: if probe.indexUnchanged(since: snapshot) { return .absent }
            case .contended: continue
            }
        }
        return .contended
    }

    /// Pass 2 for one candidate: copies the record that holds its hash, following
    /// the hash through the index while updates move it, and after a few rounds
    /// finding and copying it under the data lock. Hands `take` every entry met on
    /// the way (a record reused by another key is still an entry of the store).
    /// `followed` counts the records the hash was followed to.
    func _snapshotCopy(
        _ candidate: _SnapshotCandidate, retried: inout Int, followed: inout Int, _ operation: @autoclosure () -> String,
        take: (_SnapshotRead) throws(ShmError) -> Void
    ) throws(ShmError) {
        var slot = candidate.slot
        for _ in 0..<8 {
            let read = try _snapshotCopy(slot: slot, retried: &retried, operation())
            try take(read)
            switch read {
            case .entry(_, let hash), .foreign(let hash), .expired(let hash): if hash == candidate.hash { return }
            case .empty, .busy: break
            }
            // The record was freed or reused since it was listed: the key, if still there, is in another record.
            switch _snapshotSlot(of: candidate.hash) {
            case .absent: return  // deleted, evicted or expired meanwhile
            case .found(let moved):
                if moved != slot { followed += 1 }
                slot = moved
            case .contended: continue
            }
        }
        // The key kept moving: found and copied under the data lock, where it cannot move.
        try take(
            try cache._withLockedHandle(operation()) { (handle) throws(ShmError) -> _SnapshotRead in
                guard let found = handle.find(candidate.hash) else { return .empty }
                let read = _snapshotRead(slot: found.index, now: _monotonicNanoseconds())
                if case .busy = read { return .empty }
                return read
            })
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
