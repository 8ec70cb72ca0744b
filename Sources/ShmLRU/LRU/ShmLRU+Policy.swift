import CShm

// Eviction policies: SIEVE and S3-FIFO next to LRU/CLOCK. Their state and the
// ghost table are laid out in `_Layout` (see its "Eviction policies" section).
// Hits stay lock-free and write at most the record's stamp word; everything here
// except `_s3Touch` runs under the segment's lock.

extension ShmLRU {
    /// How a full cache chooses what to evict. Chosen when the cache is created
    /// and recorded in the segment: every handle uses the segment's policy.
    public enum EvictionPolicy: String, Sendable, CaseIterable, Codable {
        /// Least recently used (shm-typed-lru's model): exact with
        /// `Promotion.onEveryRead`, CLOCK (second chance) with `.atMostEvery`.
        case lru
        /// SIEVE (Zhang et al., NSDI '24): a FIFO whose hand skips, and unmarks,
        /// records read since it last passed. Hits set one bit, without the lock.
        case sieve
        /// S3-FIFO (Yang et al., SOSP '23): a small FIFO (10 %) that filters
        /// one-hit wonders, a main FIFO with a 2-bit frequency, and a ghost FIFO of
        /// recently evicted hashes. Hits bump the frequency, without the lock.
        case s3fifo

        var code: UInt32 {
            switch self {
            case .lru: 0
            case .sieve: 1
            case .s3fifo: 2
            }
        }

        init?(code: UInt32) {
            switch code {
            case 0: self = .lru
            case 1: self = .sieve
            case 2: self = .s3fifo
            default: return nil
            }
        }
    }

    /// The segment's eviction policy.
    public var policy: EvictionPolicy { _segment.layout.policy }

    // MARK: Hits

    /// S3-FIFO hit: adds one to the record's 2-bit frequency and refreshes its
    /// time at most once per interval, with one compare-and-swap of the stamp word
    /// against the stamp the read saw. A lost race (a peer's hit, or the lock
    /// holder moving the record between queues) drops this hit's count, never the
    /// queue bit, and is not retried: a hit never loops and never waits.
    @inline(__always)
    func _s3Touch(_ stampWord: UnsafeMutablePointer<UInt64>, stamp: UInt64, now: UInt64) {
        var updated = stamp
        if stamp & _Layout.stampFrequency != _Layout.stampFrequency { updated &+= 1 }
        let time = stamp & ~UInt64(7)
        if now > time, now &- time >= _promotionNanoseconds { updated = (now & ~UInt64(7)) | (updated & 7) }
        if updated != stamp { _ = cshm_cas_u64(stampWord, stamp, updated) }
    }

    // MARK: Linking (under the lock)

    /// Stamps a new record and links it per the policy: at the head for LRU and
    /// SIEVE; for S3-FIFO into the main queue if its hash is in the ghost (or the
    /// small queue is full before the first eviction), else into the small queue.
    @inline(__always)
    func _linkNew(_ slot: UInt32, hash: UInt32, now: UInt64) throws(ShmError) {
        let s = _segment
        guard s.layout.policy == .s3fifo else {
            s.setStamp(slot, now)
            _fault(.setWritten)
            try _linkAtHead(slot)
            return
        }
        let toMain = _ghostTake(hash) || (s.s3Evicted == 0 && Int(s.smallCount) >= s.layout.smallTarget)
        s.store64(s.layout.recordOffset(slot) &+ _Layout.R.stamp, (now & ~UInt64(7)) | (toMain ? 0 : _Layout.stampSmall))
        _fault(.setWritten)
        if toMain { try _linkMain(slot) } else { try _linkSmall(slot) }
    }

    /// S3-FIFO: links a record (its stamp's small bit set) at the head: the small queue's newest.
    func _linkSmall(_ slot: UInt32) throws(ShmError) {
        let s = _segment
        try _linkAtHead(slot)
        s.smallCount &+= 1
        if s.smallTail == _Layout.none { s.smallTail = slot }
    }

    /// S3-FIFO: links a record (its small bit clear) as the main queue's newest,
    /// right after the small queue's last record.
    func _linkMain(_ slot: UInt32) throws(ShmError) {
        let s = _segment
        let after = s.smallTail
        if after == _Layout.none {
            try _linkAtHead(slot)
            return
        }
        guard s.isSlot(after), s.isLive(meta: s.meta(after)), s.stamp(after) & _Layout.stampSmall != 0 else {
            throw _corrupted("small-queue tail \(after) is not a live small-queue record")
        }
        let next = s.next(after)
        guard next == _Layout.none || (s.isSlot(next) && s.prev(next) == after) else {
            throw _corrupted("record \(after).next \(next) is out of range or does not link back")
        }
        s.setPrev(slot, after)
        s.setNext(slot, next)
        s.setNext(after, slot)
        if next == _Layout.none { s.tail = slot } else { s.setPrev(next, slot) }
    }

    /// The policy's bookkeeping for a record leaving the list (from `_unlink`,
    /// before the links change): the SIEVE hand moves to the record's neighbour
    /// towards the head; S3-FIFO's small queue loses a record.
    @inline(__always)
    func _noteUnlink(_ slot: UInt32, prev: UInt32) throws(ShmError) {
        let s = _segment
        switch s.layout.policy {
        case .lru:
            return
        case .sieve:
            if s.sieveHand == slot { s.sieveHand = prev }
        case .s3fifo:
            if s.stamp(slot) & _Layout.stampSmall != 0 {
                guard s.smallCount > 0 else { throw _corrupted("small-queue count underflow at record \(slot)") }
                s.smallCount &-= 1
                if s.smallTail == slot { s.smallTail = prev }
            } else if s.smallTail == slot {
                throw _corrupted("small-queue tail \(slot) is a main-queue record")
            }
        }
    }

    // MARK: Choosing a victim (under the lock)

    /// Chooses the next record to evict, applying the policy's moves on the way
    /// (CLOCK second chances, the SIEVE hand, S3-FIFO promotions). Nil when the
    /// cache is empty. Asking twice without a change in between returns the same
    /// record. Every walk is bounded: a peer that keeps marking records (or a
    /// hostile one) cannot keep the lock holder here.
    func _selectVictim() throws(ShmError) -> UInt32? {
        switch _segment.layout.policy {
        case .lru: return try _selectLRU()
        case .sieve: return try _selectSIEVE()
        case .s3fifo: return try _selectS3FIFO()
        }
    }

    @inline(__always)
    func _selectLRU() throws(ShmError) -> UInt32? {
        let s = _segment
        var chances = capacity  // each second chance unmarks a record: this bounds the walk
        while true {
            let tail = s.tail
            if tail == _Layout.none { return nil }
            guard s.isSlot(tail), s.isLive(meta: s.meta(tail)) else { throw _corrupted("tail \(tail) is not a live record") }
            if chances > 0, try _secondChance(tail) {
                chances -= 1
                continue
            }
            return tail
        }
    }

    func _selectSIEVE() throws(ShmError) -> UInt32? {
        let s = _segment
        var hand = s.sieveHand
        if hand == _Layout.none { hand = s.tail }
        var budget = capacity + 1
        while true {
            if hand == _Layout.none { return nil }
            guard s.isSlot(hand), s.isLive(meta: s.meta(hand)) else { throw _corrupted("SIEVE hand \(hand) is not a live record") }
            let stamp = s.stamp(hand)
            guard stamp & _Layout.stampUsed != 0, budget > 0 else {
                s.sieveHand = hand
                return hand
            }
            budget -= 1
            s.store64(s.layout.recordOffset(hand) &+ _Layout.R.stamp, stamp & ~_Layout.stampUsed)
            let prev = s.prev(hand)
            guard prev == _Layout.none || s.isSlot(prev) else { throw _corrupted("record \(hand).prev \(prev) out of range") }
            hand = prev == _Layout.none ? s.tail : prev
            s.sieveHand = hand
            _fault(.sieveHand)
        }
    }

    func _selectS3FIFO() throws(ShmError) -> UInt32? {
        let s = _segment
        let mainTarget = capacity - s.layout.smallTarget
        var budget = 4 * capacity + 8  // each move lowers a frequency or empties the small queue
        while true {
            let count = Int(s.count)
            let small = Int(s.smallCount)
            guard small <= count, count <= capacity else { throw _corrupted("small queue \(small) of \(count) records") }
            if count == 0 { return nil }
            if count - small > mainTarget || small == 0 {
                while true {
                    let tail = s.tail
                    guard s.isSlot(tail), s.isLive(meta: s.meta(tail)) else { throw _corrupted("tail \(tail) is not a live record") }
                    let stamp = s.stamp(tail)
                    guard stamp & _Layout.stampSmall == 0 else { throw _corrupted("tail \(tail) is in the small queue") }
                    let frequency = stamp & _Layout.stampFrequency
                    guard frequency >= 1, budget > 0 else { return tail }
                    budget -= 1
                    try _unlink(tail)
                    _fault(.policyMoving)
                    s.store64(s.layout.recordOffset(tail) &+ _Layout.R.stamp, (stamp & ~_Layout.stampFrequency) | (frequency - 1))
                    try _linkMain(tail)
                    s.bumpStat(_Layout.H.statPromotions)
                }
            }
            while s.smallCount > 0 {
                let last = s.smallTail
                guard s.isSlot(last), s.isLive(meta: s.meta(last)) else { throw _corrupted("small-queue tail \(last) is not a live record") }
                let stamp = s.stamp(last)
                guard stamp & _Layout.stampSmall != 0 else { throw _corrupted("small-queue tail \(last) is not in the small queue") }
                guard stamp & _Layout.stampFrequency >= 2, budget > 0 else { return last }
                budget -= 1
                try _unlink(last)
                _fault(.policyMoving)
                s.store64(s.layout.recordOffset(last) &+ _Layout.R.stamp, stamp & ~UInt64(7))
                try _linkMain(last)
                s.bumpStat(_Layout.H.statPromotions)
            }
        }
    }

    /// Before the victim is detached: S3-FIFO remembers a small-queue victim in the ghost.
    @inline(__always)
    func _noteEviction(_ slot: UInt32) {
        let s = _segment
        guard s.layout.policy == .s3fifo else { return }
        if s.stamp(slot) & _Layout.stampSmall != 0 {
            _ghostInsert(s.hash(slot))
            _fault(.ghostInserted)
        }
        s.s3Evicted = 1
    }

    // MARK: Ghost (S3-FIFO, under the lock)

    /// The first of the hash's bucket's entries. Computed from the hash and the
    /// layout alone: nothing read from the segment chooses the address.
    @inline(__always)
    func _ghostBucket(_ hash: UInt32) -> UnsafeMutablePointer<UInt64> {
        let s = _segment
        let buckets = UInt32(truncatingIfNeeded: s.layout.ghostSlots / _Layout.ghostWays)
        let bucket = Int(_mix32(hash) & (buckets &- 1))
        return s.u64(s.layout.ghostOffset &+ bucket &* _Layout.ghostWays &* 8)
    }

    /// Whether `hash` is in the ghost FIFO; if it is, it leaves it.
    func _ghostTake(_ hash: UInt32) -> Bool {
        let s = _segment
        guard s.layout.ghostSlots >= _Layout.ghostWays, s.layout.ghostLength > 0 else { return false }
        let clock = s.ghostClock
        let bucket = _ghostBucket(hash)
        for way in 0..<_Layout.ghostWays {
            let entry = cshm_load_relaxed_u64(bucket + way)
            let tick = UInt32(truncatingIfNeeded: entry)
            if UInt32(truncatingIfNeeded: entry >> 32) == hash, tick != 0, Int(clock &- tick) < s.layout.ghostLength {
                cshm_store_relaxed_u64(bucket + way, 0)
                return true
            }
        }
        return false
    }

    /// Appends `hash` to the ghost FIFO: the clock advances (ageing the oldest
    /// entry out) and the hash takes its bucket's entry for the same hash, else an
    /// empty or aged-out one, else the bucket's oldest.
    func _ghostInsert(_ hash: UInt32) {
        let s = _segment
        guard s.layout.ghostSlots >= _Layout.ghostWays, s.layout.ghostLength > 0 else { return }
        let clock = s.ghostClock &+ 1
        s.ghostClock = clock
        let bucket = _ghostBucket(hash)
        var chosen = -1
        for way in 0..<_Layout.ghostWays where UInt32(truncatingIfNeeded: cshm_load_relaxed_u64(bucket + way) >> 32) == hash {
            chosen = way
            break
        }
        if chosen < 0 {
            var oldest: UInt32 = 0
            for way in 0..<_Layout.ghostWays {
                let entry = cshm_load_relaxed_u64(bucket + way)
                let tick = UInt32(truncatingIfNeeded: entry)
                let age = clock &- tick
                if entry == 0 || tick == 0 || Int(age) >= s.layout.ghostLength {
                    chosen = way
                    break
                }
                if chosen < 0 || age > oldest {
                    chosen = way
                    oldest = age
                }
            }
        }
        cshm_store_relaxed_u64(bucket + chosen, UInt64(hash) << 32 | UInt64(clock))
    }
}
