extension ShmLRU {
    /// Evicts, from the least recently used end, every record last used before
    /// `cutoff`, at most `limit` of them (0 evicts none). Returns the evicted
    /// hashes, least recently used first (shm-typed-lru's `run_lru_eviction`). A read
    /// counts as a use at the precision of the promotion policy: exactly with
    /// `.onEveryRead`, within the interval with `.atMostEvery`.
    /// - Throws: `.invalidArgument` for a negative limit.
    @discardableResult
    public func evict(lastUsedBefore cutoff: ShmInstant, limit: Int = .max) throws(ShmError) -> [UInt32] {
        guard limit >= 0 else {
            throw ShmError(.invalidArgument, "evict(lastUsedBefore:limit: \(limit))", detail: "limit must not be negative")
        }
        if limit == 0 { return [] }
        return try _withLockedHandle("evict(key: \(key))") { (lru) throws(ShmError) -> [UInt32] in
            var evicted: [UInt32] = []
            let s = _segment
            // Exact LRU keeps the list in last-use order: walk from the tail and stop at
            // the first record used at or after the cutoff. Interval promotion marks a
            // used record where it stands (it moves only when it reaches the tail), and
            // SIEVE and S3-FIFO never move a record on a use, so there every record is
            // looked at and the candidates are taken oldest first.
            var victims: [UInt32] = []
            // (last use, marked, position from the tail): at equal times (the interval
            // clock is coarse) a record marked used was used after an unmarked one.
            var candidates: [(time: UInt64, marked: Bool, order: Int, slot: UInt32)] = []
            var steps = 0
            try lru.walkThrowing(from: .leastRecent) { (slot) throws(ShmError) -> Bool in
                let index = slot.index
                guard s.isLive(meta: s.meta(index)) else { throw _corrupted("LRU walk from the tail reaches free record \(index)") }
                let time = s.lastUse(index)
                if _exactLRU {
                    guard time < cutoff.nanoseconds, victims.count < limit else { return false }
                    victims.append(index)
                } else if time < cutoff.nanoseconds {
                    candidates.append((time, s.stamp(index) & s.layout.stampMarkMask != 0, steps, index))
                }
                steps += 1
                return true
            }
            if !_exactLRU {
                candidates.sort {
                    if $0.time != $1.time { return $0.time < $1.time }
                    if $0.marked != $1.marked { return !$0.marked }
                    return $0.order < $1.order
                }
                victims = candidates.prefix(limit).map(\.slot)
            }
            for victim in victims {
                evicted.append(try _detachRecord(victim, indexPosition: nil))
                s.bumpStat(_Layout.H.statEvictions)
                _pushFree(victim)
                _fault(.evictBatch)
            }
            if !evicted.isEmpty { s.publishChange() }
            return evicted
        }
    }

    /// Evicts records not used for `age` or longer, at most `limit`.
    @discardableResult
    public func evict(olderThan age: Duration, limit: Int = .max) throws(ShmError) -> [UInt32] {
        try evict(lastUsedBefore: ShmInstant.now.advanced(by: .zero - age), limit: limit)
    }

    /// The last use of the record with `hash`, without counting this as a use; nil if absent.
    public func lastUsed(_ hash: UInt32) throws(ShmError) -> ShmInstant? {
        try _withLock("lastUsed(\(hash), key: \(key))") { () throws(ShmError) -> ShmInstant? in
            _find(hash).map { ShmInstant(nanoseconds: _segment.lastUse($0.slot)) }
        }
    }
}
