import Synchronization

// The cache's slow paths that concern an operator: a lock timeout becomes an
// event (see ShmEvents), and this handle's read counts join the segment's totals.

extension ShmLRU {
    /// The error of a lock that failed, under `operation`'s name; a timeout is also an event.
    @inline(never)
    func _lockFailed(_ error: ShmError, _ operation: String) -> ShmError {
        let failure = ShmError(error.code, operation, errno: error.errno, detail: error.detail)
        if error.code == .lockTimeout {
            ShmEvents._emit(ShmEvent(.lockTimeout, key: key, operation: operation, detail: error.detail))
        }
        return failure
    }

    /// Adds the hits and misses this handle counted since it last did to the
    /// segment's totals (`Stats.totalHits`, `totalMisses`). Under the lock: two
    /// relaxed loads and, when they changed, two header writes on the statistics
    /// line; never on a lock-free read.
    @inline(__always)
    func _publishReadCounts() {
        let hits = _hits.load(ordering: .relaxed)
        let misses = _misses.load(ordering: .relaxed)
        let hitsDone = _hitsPublished.load(ordering: .relaxed)
        let missesDone = _missesPublished.load(ordering: .relaxed)
        guard hits != hitsDone || misses != missesDone else { return }
        _publishReadCounts(hits: hits, misses: misses, hitsDone: hitsDone, missesDone: missesDone)
    }

    @inline(never)
    private func _publishReadCounts(hits: UInt64, misses: UInt64, hitsDone: UInt64, missesDone: UInt64) {
        _segment.bumpStat(_Layout.H.statHits, by: hits &- hitsDone)
        _segment.bumpStat(_Layout.H.statMisses, by: misses &- missesDone)
        _hitsPublished.store(hits, ordering: .relaxed)
        _missesPublished.store(misses, ordering: .relaxed)
    }
}
