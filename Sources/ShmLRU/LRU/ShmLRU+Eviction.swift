extension ShmLRU {
    /// Evicts, from the least recently used end, every record last used before
    /// `cutoff`, at most `limit` of them (0 evicts none). Returns the evicted
    /// hashes, least recently used first (the seed's `run_lru_eviction`).
    /// - Throws: `.invalidArgument` for a negative limit.
    @discardableResult
    public func evict(lastUsedBefore cutoff: ShmInstant, limit: Int = .max) throws(ShmError) -> [UInt32] {
        guard limit >= 0 else {
            throw ShmError(.invalidArgument, "evict(lastUsedBefore:limit: \(limit))", detail: "limit must not be negative")
        }
        if limit == 0 { return [] }
        return try _withLock("evict(key: \(key))") { () throws(ShmError) -> [UInt32] in
            var evicted: [UInt32] = []
            let s = _segment
            var chances = capacity
            while evicted.count < limit {
                let tail = s.tail
                if tail == _Layout.none { break }
                guard s.isSlot(tail), s.isLive(meta: s.meta(tail)) else { throw _corrupted("tail \(tail) is not a live record") }
                if chances > 0, try _secondChance(tail) {  // used since linked: not a candidate
                    chances -= 1
                    continue
                }
                guard s.stamp(tail) < cutoff.nanoseconds else { break }
                guard let victim = try _evictTail() else { break }
                _pushFree(victim.slot)
                evicted.append(victim.hash)
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
            _find(hash).map { ShmInstant(nanoseconds: _segment.stamp($0.slot)) }
        }
    }
}
