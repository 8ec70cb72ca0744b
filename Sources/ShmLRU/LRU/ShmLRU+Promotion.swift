import CShm
import Synchronization

// Promotion: what a use of a record does to its place in the eviction order.
// Exact LRU (`.onEveryRead`) moves the record to the head under the lock;
// interval promotion, SIEVE and S3-FIFO only mark it (the policy's `touch`, Policy/) (one store into the
// record's own header line, lock-free on a hit), and eviction reads the marks.

extension ShmLRU {
    /// Makes a live record the most recently used and stamps it.
    /// Under SIEVE and S3-FIFO a record never moves on a use: it is marked instead.
    @inline(__always)
    func _promote(_ slot: UInt32, now: UInt64) throws(ShmError) {
        if _segment.layout.policy != .lru {
            _markIfStale(slot, stamp: _segment.stamp(slot), now: now)
            return
        }
        if _segment.head != slot {
            // Only LRU moves a record on a use: its room's note, named.
            try _unlink(slot, noting: { (c, slot, prev) throws(ShmError) in try _LRUPolicy.unlink(c, slot, prev: prev) })
            try _linkAtHead(slot)
        }
        _segment.setStamp(slot, now)
    }

    /// Promotes per the policy, under the lock: exact LRU moves the record to the
    /// head and stamps it; interval promotion marks it used if its stamp is stale.
    /// - Parameter now: `_lockedNow()`, read when the lock was taken.
    @inline(__always)
    func _promoteLocked(_ slot: UInt32, now: UInt64) throws(ShmError) {
        if _exactLRU {
            try _promote(slot, now: now)
        } else {
            let ticks = _clockTicks.load(ordering: .relaxed) &+ 1
            _clockTicks.store(ticks, ordering: .relaxed)
            _markIfStale(slot, stamp: _segment.stamp(slot), now: _readClock(hits: ticks))
        }
    }

    /// The clock for an exact-LRU stamp, read as soon as the lock is taken: the
    /// precise clock's read waits for the memory accesses in flight (its `rdtsc`
    /// is fenced), and right after the lock there are none. 0 in interval mode,
    /// which uses the handle's clock instead.
    @inline(__always)
    func _lockedNow() -> UInt64 { _promotionNanoseconds == 0 ? _monotonicNanoseconds() : 0 }

    /// Interval promotion: marks a used record. The first use after the record was
    /// linked at the head marks it (that is what saves it at the tail); later uses
    /// only refresh the mark's time, and at most once per interval. So a read
    /// writes its record at most once per link and once per interval, and a hit
    /// on a marked, fresh record writes nothing. `now` is the handle's clock
    /// (`_clock`); a mark never moves a stamp backwards.
    ///
    /// The first mark's time is read fresh (`_refreshClock()`), not taken from the
    /// handle's clock: that clock lags by up to 63 of this handle's hits, which is
    /// any length of time on a quiet handle, while every link stamps its record
    /// with a fresh clock. A stale first mark gave a record read after others were
    /// linked an older last use than theirs (`evict(lastUsedBefore:)` aged it out
    /// first whenever a coarse tick fell between the links), and a record read now
    /// on a quiet handle the time of its link. One coarse read per link, no more.
    @inline(__always)
    func _markUse(stamp: UInt64, now: UInt64) -> UInt64? {
        if stamp & _Layout.stampUsed == 0 { return max(max(now, _refreshClock()), stamp) }
        if now > stamp, now &- stamp >= _promotionNanoseconds { return now }
        return nil
    }

    @inline(__always)
    func _markIfStale(_ slot: UInt32, stamp: UInt64, now: UInt64) {
        _touch(_segment.record(slot), stamp: stamp, now: now)
    }

    /// The same, for a record found by the lock-free read (no slot arithmetic).
    @inline(__always)
    func _markIfStale(_ record: UnsafeMutableRawPointer, stamp: UInt64, now: UInt64) {
        _touch(record, stamp: stamp, now: now)
    }
}
