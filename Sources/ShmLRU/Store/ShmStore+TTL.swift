import CShm

// Expiry. Each entry carries its expiry instant (CLOCK_MONOTONIC nanoseconds, the
// one clock every process of the machine shares) and its max age (to renew it).
// An expired entry is invisible to every read; it is reclaimed when an
// operation meets it, when a set into a full store needs room, or by
// `purgeExpired()`.

extension ShmStore {
    /// How long an entry lives after its set.
    public enum Expiry: Sendable, Hashable {
        /// The store's `maxAge` (no expiry if it has none).
        case storeDefault
        /// Never expires (it may still be evicted when the store is full).
        case never
        /// Expires this long after the set (must be positive).
        case after(Duration)
        /// Keeps the entry's current expiry (a new entry gets the store's `maxAge`).
        case keepCurrent
    }

    /// What is left of an entry's life.
    public enum TimeToLive: Sendable, Hashable {
        /// The entry does not expire.
        case forever
        /// The entry expires after this long.
        case remaining(Duration)
    }

    /// The time `key` has left; nil if it is absent or expired. Not a use.
    public func timeToLive(_ key: String) throws(ShmError) -> TimeToLive? {
        guard let expiresAt = try _expiresAt(key) else { return nil }
        if expiresAt == 0 { return .forever }
        let now = _monotonicNanoseconds()
        return .remaining(.nanoseconds(Int64(clamping: expiresAt > now ? expiresAt - now : 0)))
    }

    /// Removes every expired entry now (telling their listeners); returns how many.
    @discardableResult
    public func purgeExpired() throws(ShmError) -> Int {
        try cache._withLockedHandle("ShmStore.purgeExpired(key: \(key))") { (lru) throws(ShmError) -> Int in
            try _reclaimExpiredLocked(lru, now: _monotonicNanoseconds(), lookingAt: lru.capacity)
        }
    }

    /// The expiry instant of a live `key` (0: never); nil if absent or expired.
    func _expiresAt(_ key: String) throws(ShmError) -> UInt64? {
        let operation = _operation("timeToLive", key)
        return try _withKey(key) { (keyBuffer, base) throws(ShmError) -> UInt64? in
            try cache._withLockedHandle(operation) { (lru) throws(ShmError) -> UInt64? in
                try _locateLocked(lru, keyBuffer, base: base, now: _monotonicNanoseconds(), reclaim: false).found?.header.expiresAt
            }
        }
    }

    /// The max age in nanoseconds an entry set with `expiry` gets (0: never).
    func _maxAge(for expiry: Expiry, _ operation: @autoclosure () -> String) throws(ShmError) -> UInt64 {
        switch expiry {
        case .storeDefault, .keepCurrent: return _maxAgeNanoseconds
        case .never: return 0
        case .after(let duration):
            guard duration > .zero else {
                throw ShmError(.invalidArgument, operation(), detail: "an expiry must be positive, not \(duration)")
            }
            return UInt64(max(1, _nanoseconds(duration)))
        }
    }
}

extension ShmStore {
    /// Reclaims the expired entries among the `limit` least recently used, walking
    /// from the tail (under the cache's lock); returns how many. Every link is
    /// checked before it is followed, and the walk is bounded by `limit`.
    func _reclaimExpiredLocked(_ lru: ShmLRU._LockedHandle, now: UInt64, lookingAt limit: Int) throws(ShmError) -> Int {
        try _recoverHeapIfNeeded(lru)
        var reclaimed = 0
        try lru.walkThrowing(from: .leastRecent, limit: limit) { (slot) throws(ShmError) -> Bool in
            let payload = try lru.value(slot)
            if let header = _PayloadHeader.read(payload), header.isExpired(now: now) {
                try _reclaimLocked(lru, slot, payload: payload, header: header, kind: .expired)
                reclaimed += 1
            }
            return true
        }
        return reclaimed
    }
}
