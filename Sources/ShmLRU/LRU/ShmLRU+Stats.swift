import CShm
import Synchronization

extension ShmLRU {
    /// A snapshot of the cache's figures.
    public struct Stats: Sendable, Hashable, Codable {
        /// Records the cache holds.
        public var capacity: Int
        /// The largest value, in bytes.
        public var recordSize: Int
        /// Live records.
        public var count: Int
        /// Records not in use (`capacity - count`).
        public var free: Int
        /// Records inserted, updated in place, deleted and evicted, by every process.
        public var inserts: UInt64
        /// Records updated in place, by every process.
        public var updates: UInt64
        /// Records deleted, by every process.
        public var deletes: UInt64
        /// Records evicted (when full, or by age), by every process.
        public var evictions: UInt64
        /// Repairs after a lock holder died or an inconsistency was found.
        public var recoveries: UInt64
        /// Records moved to the head at the LRU tail because they were marked used
        /// (interval promotion's second chance), or (S3-FIFO) moved from the small
        /// queue to the main queue or to the main queue's head, by every process.
        public var promotions: UInt64
        /// Reads that found / did not find their hash, in this process (per handle:
        /// a shared counter would make every read write a shared cache line;
        /// counted without a locked instruction, so approximate when several
        /// threads use one handle at once).
        public var hits: UInt64
        /// Reads that did not find their hash, in this process (per handle).
        public var misses: UInt64
        /// Hits and misses of every process that used the cache (wrapping
        /// counters in the segment): each handle adds its own counts when it next
        /// takes the lock, so lock-free hits appear after that handle's next
        /// locked operation (a set, a remove, a promotion).
        public var totalHits: UInt64 = 0
        /// Misses of every process (see `totalHits`).
        public var totalMisses: UInt64 = 0
        /// Of `misses`, lock-free reads (interval promotion) answered as a miss
        /// because their entry kept moving for the whole retry budget (a writer
        /// inside its critical section, maybe stopped): not evidence of absence.
        public var busyMisses: UInt64 = 0
    }

    /// The figures; once detached, only capacity, record size and this handle's hits and misses.
    public var stats: Stats {
        guard region._attachment.isAttached else {  // the mapping is gone: never read it
            return Stats(
                capacity: capacity, recordSize: recordSize, count: 0, free: capacity, inserts: 0, updates: 0, deletes: 0,
                evictions: 0, recoveries: 0, promotions: 0, hits: _hits.load(ordering: .relaxed),
                misses: _misses.load(ordering: .relaxed), busyMisses: _busyMisses.load(ordering: .relaxed))
        }
        let s = _segment
        let count = min(Int(s.count), capacity)
        return Stats(
            capacity: capacity, recordSize: recordSize, count: count, free: capacity - count,
            inserts: s.load64(_Layout.H.statInserts), updates: s.load64(_Layout.H.statUpdates),
            deletes: s.load64(_Layout.H.statDeletes), evictions: s.load64(_Layout.H.statEvictions),
            recoveries: s.load64(_Layout.H.statRecoveries), promotions: s.load64(_Layout.H.statPromotions),
            hits: _hits.load(ordering: .relaxed), misses: _misses.load(ordering: .relaxed),
            totalHits: s.load64(_Layout.H.statHits), totalMisses: s.load64(_Layout.H.statMisses),
            busyMisses: _busyMisses.load(ordering: .relaxed))
    }
}
