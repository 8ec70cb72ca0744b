import CShm

// S3-FIFO (Yang et al., SOSP '23): two FIFOs in the one list, the small queue
// first, and a ghost FIFO of hashes evicted from the small queue (the layout's
// "Eviction policies" and "Ghost" sections draw them). Header words: the small
// queue's last record and size, the ghost clock, whether it has evicted yet
// (named in `_QueueWords.swift`, with those TinyLFU adds on the same frame).
// Stamp bits 0-1: the 2-bit frequency; bit 2: in the small queue. Hits bump the
// frequency with one compare-and-swap, without the lock; everything else here
// runs under the segment's lock. See `_PolicyDispatch.swift` for the members
// every policy has.

enum _S3FIFOPolicy: _PolicyRoom {
    /// A record's rank in the policy's order of preference (higher: kept
    /// longer), from its stamp word alone: its frequency, then the main queue
    /// before the small one, then the later insert.
    static func preferenceRank(_ stamp: UInt64) -> UInt64 {
        let main: UInt64 = stamp & small == 0 ? 1 : 0
        return (stamp & frequency) << 62 | main << 61 | (stamp >> 4) & ((1 << 60) - 1)
    }

    // MARK: Stamp bits

    /// The 2-bit frequency (saturating at 3).
    static let frequency: UInt64 = 3
    /// Set while the record is in the small queue (written under the lock only).
    static let small: UInt64 = 4
    static let markMask: UInt64 = frequency
    static let timeMask: UInt64 = ~UInt64(15)  // bit 3: TinyLFU's sample mark (zero here)

    // MARK: Segment

    /// The small queue's target (10 % of the capacity), the ghost's length (90 %)
    /// and its table: a power of two of 8-byte entries, at most half full.
    static func area(capacity: Int) -> _PolicyArea {
        let ghostLength = capacity * 9 / 10
        var slots = 8
        while slots < 2 * ghostLength { slots <<= 1 }
        return _PolicyArea(words: slots, smallTarget: capacity / 10, ghostLength: ghostLength)
    }

    static func initialize(_ s: _Segment) { s.smallTail = _Layout.none }

    // MARK: Linking (under the lock)

    /// Links a new record into the main queue if its hash is in the ghost (or the
    /// small queue is full before the first eviction), else into the small queue.
    @inline(__always)
    static func link(_ c: ShmLRU, _ slot: UInt32, hash: UInt32, now: UInt64) throws(ShmError) {
        let s = c._segment
        let toMain = ghostTake(s, hash) || (s.s3Evicted == 0 && Int(s.smallCount) >= s.layout.smallTarget)
        s.store64(s.layout.recordOffset(slot) &+ _Layout.R.stamp, (now & timeMask) | (toMain ? 0 : small))
        c._fault(.setWritten)
        if toMain { try linkMain(c, slot) } else { try linkSmall(c, slot) }
    }

    /// Links a record (its stamp's small bit set) at the head: the small queue's newest.
    static func linkSmall(_ c: ShmLRU, _ slot: UInt32) throws(ShmError) {
        let s = c._segment
        try c._linkAtHead(slot)
        s.smallCount &+= 1
        if s.smallTail == _Layout.none { s.smallTail = slot }
    }

    /// Links a record (its small bit clear) as the main queue's newest, right
    /// after the small queue's last record.
    static func linkMain(_ c: ShmLRU, _ slot: UInt32) throws(ShmError) {
        let s = c._segment
        let after = s.smallTail
        if after == _Layout.none {
            try c._linkAtHead(slot)
            return
        }
        guard s.isSlot(after), s.isLive(meta: s.meta(after)), s.stamp(after) & small != 0 else {
            throw c._corrupted("small-queue tail \(after) is not a live small-queue record")
        }
        let next = s.next(after)
        guard next == _Layout.none || (s.isSlot(next) && s.prev(next) == after) else {
            throw c._corrupted("record \(after).next \(next) is out of range or does not link back")
        }
        s.setPrev(slot, after)
        s.setNext(slot, next)
        s.setNext(after, slot)
        if next == _Layout.none { s.tail = slot } else { s.setPrev(next, slot) }
    }

    /// A record leaving the list (before the links change): the small queue loses it.
    @inline(__always)
    static func unlink(_ c: ShmLRU, _ slot: UInt32, prev: UInt32) throws(ShmError) {
        let s = c._segment
        if s.stamp(slot) & small != 0 {
            guard s.smallCount > 0 else { throw c._corrupted("small-queue count underflow at record \(slot)") }
            s.smallCount &-= 1
            if s.smallTail == slot { s.smallTail = prev }
        } else if s.smallTail == slot {
            throw c._corrupted("small-queue tail \(slot) is a main-queue record")
        }
    }

    /// The small queue's tail follows a record that another takes the place of.
    @inline(__always)
    static func replaced(_ c: ShmLRU, _ old: UInt32, with fresh: UInt32) {
        if c._segment.smallTail == old { c._segment.smallTail = fresh }
    }

    // MARK: Choosing a victim (under the lock)

    /// Evicts from the main queue when it holds more than its share (capacity -
    /// small target) or the small queue is empty, else from the small queue. The
    /// small queue's last record moves to the main queue if its frequency is >= 2;
    /// the main queue's last record with frequency f >= 1 moves to the main
    /// queue's head with min(f, 3) - 1. Each move lowers a frequency or empties
    /// the small queue: the budget bounds the walk.
    static func selectVictim(_ c: ShmLRU) throws(ShmError) -> UInt32? {
        let s = c._segment
        let capacity = c.capacity
        let mainTarget = capacity - s.layout.smallTarget
        var budget = 4 * capacity + 8
        while true {
            let count = Int(s.count)
            let smallCount = Int(s.smallCount)
            guard smallCount <= count, count <= capacity else { throw c._corrupted("small queue \(smallCount) of \(count) records") }
            if count == 0 { return nil }
            if count - smallCount > mainTarget || smallCount == 0 { return try mainVictim(c, budget: &budget) }
            while s.smallCount > 0 {
                let last = s.smallTail
                guard s.isSlot(last), s.isLive(meta: s.meta(last)) else { throw c._corrupted("small-queue tail \(last) is not a live record") }
                let stamp = s.stamp(last)
                guard stamp & small != 0 else { throw c._corrupted("small-queue tail \(last) is not in the small queue") }
                guard stamp & frequency >= 2, budget > 0 else { return last }
                budget -= 1
                try moveToMain(c, last, stamp: stamp & ~UInt64(7))
            }
        }
    }

    /// The main queue's oldest record of frequency 0, CLOCK-fashion: a tail of
    /// frequency f >= 1 moves to the main queue's head with f - 1 (`reinserting`
    /// sees it first: TinyLFU counts it in its sketch), until the budget is spent,
    /// then the tail. The main queue must not be empty. S3-FIFO's and TinyLFU's.
    @inline(__always)
    static func mainVictim(
        _ c: ShmLRU, budget: inout Int, reinserting: (UInt32) -> Void = { _ in }
    ) throws(ShmError) -> UInt32 {
        let s = c._segment
        while true {
            let tail = s.tail
            guard s.isSlot(tail), s.isLive(meta: s.meta(tail)) else { throw c._corrupted("tail \(tail) is not a live record") }
            let stamp = s.stamp(tail)
            guard stamp & small == 0 else { throw c._corrupted("tail \(tail) is in the small queue") }
            let f = stamp & frequency
            guard f >= 1, budget > 0 else { return tail }
            budget -= 1
            reinserting(tail)
            try moveToMain(c, tail, stamp: (stamp & ~frequency) | (f - 1))
        }
    }

    /// Moves a record (from either queue) to the main queue's head with `stamp`.
    @inline(__always)
    static func moveToMain(_ c: ShmLRU, _ slot: UInt32, stamp: UInt64) throws(ShmError) {
        let s = c._segment
        try c._unlink(slot)
        c._fault(.policyMoving)
        s.store64(s.layout.recordOffset(slot) &+ _Layout.R.stamp, stamp)
        try linkMain(c, slot)
        s.bumpStat(_Layout.H.statPromotions)
    }

    /// Before the victim is detached: a small-queue victim's hash joins the ghost.
    @inline(__always)
    static func evicting(_ c: ShmLRU, _ slot: UInt32) {
        let s = c._segment
        if s.stamp(slot) & small != 0 {
            ghostInsert(s, s.hash(slot))
            c._fault(.ghostInserted)
        }
        s.s3Evicted = 1
    }

    @inline(__always) static func evicted(_ c: ShmLRU) {}

    // MARK: Lock-free

    /// A hit: adds one to the record's 2-bit frequency and refreshes its time at
    /// most once per interval, with one compare-and-swap of the stamp word against
    /// the stamp the read saw. A lost race (a peer's hit, or the lock holder moving
    /// the record between queues) drops this hit's count, never the queue bit, and
    /// is not retried: a hit never loops and never waits.
    @inline(__always)
    static func touch(_ stampWord: UnsafeMutablePointer<UInt64>, stamp: UInt64, now: UInt64, interval: UInt64) {
        var updated = stamp
        if stamp & frequency != frequency { updated &+= 1 }
        let time = stamp & timeMask
        if now > time, now &- time >= interval { updated = (now & timeMask) | (updated & 15) }
        if updated != stamp { _ = cshm_cas_u64(stampWord, stamp, updated) }
    }

    // MARK: Verify and rebuild

    /// The small queue's records come first, its count and tail agree with them.
    static func verify(_ c: ShmLRU, order: [UInt32], into report: inout ShmLRU.IntegrityReport) {
        let s = c._segment
        var smallSeen = 0
        var lastSmall = _Layout.none
        var mainSeen = false
        for slot in order {
            if s.stamp(slot) & small != 0 {
                if mainSeen { report.add("small-queue record \(slot) follows a main-queue record") }
                smallSeen += 1
                lastSmall = slot
            } else {
                mainSeen = true
            }
        }
        if Int(s.smallCount) != smallSeen { report.add("small-queue count is \(s.smallCount), the list holds \(smallSeen)") }
        if s.smallTail != lastSmall { report.add("small-queue tail is \(s.smallTail), the list's last small record \(lastSmall)") }
    }

    /// The small queue first (its records' stamps say so), then the main queue,
    /// each by last use. The ghost is left as it is: any content is a valid hint.
    static func rebuildOrder(_ s: _Segment, _ live: [(stamp: UInt64, slot: UInt32)]) -> [(stamp: UInt64, slot: UInt32)] {
        live.filter { s.stamp($0.slot) & small != 0 } + live.filter { s.stamp($0.slot) & small == 0 }
    }

    static func rebuilt(_ s: _Segment, kept: [UInt32]) {
        let smallKept = kept.prefix { s.stamp($0) & small != 0 }
        s.smallCount = UInt32(smallKept.count)
        s.smallTail = smallKept.last ?? _Layout.none
    }

    // MARK: Ghost (under the lock)

    /// The first of the hash's bucket's entries. Computed from the hash and the
    /// layout alone: nothing read from the segment chooses the address.
    @inline(__always)
    static func ghostBucket(_ s: _Segment, _ hash: UInt32, offset: Int, slots: Int) -> UnsafeMutablePointer<UInt64> {
        let buckets = UInt32(truncatingIfNeeded: slots / _Layout.ghostWays)
        let bucket = Int(_mix32(hash) & (buckets &- 1))
        return s.u64(offset &+ bucket &* _Layout.ghostWays &* 8)
    }

    /// Whether `hash` is in the ghost FIFO; if it is, it leaves it.
    static func ghostTake(_ s: _Segment, _ hash: UInt32) -> Bool {
        ghostTake(s, hash, offset: s.layout.ghostOffset, slots: s.layout.ghostSlots)
    }

    /// `ghostTake` on a ghost table of `slots` entries (a power of two) at `offset`
    /// (TinyLFU's follows its sketch in the policy area).
    static func ghostTake(_ s: _Segment, _ hash: UInt32, offset: Int, slots: Int) -> Bool {
        guard slots >= _Layout.ghostWays, s.layout.ghostLength > 0 else { return false }
        let clock = s.ghostClock
        let bucket = ghostBucket(s, hash, offset: offset, slots: slots)
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
    static func ghostInsert(_ s: _Segment, _ hash: UInt32) {
        ghostInsert(s, hash, offset: s.layout.ghostOffset, slots: s.layout.ghostSlots)
    }

    /// `ghostInsert` on a ghost table of `slots` entries (a power of two) at `offset`.
    static func ghostInsert(_ s: _Segment, _ hash: UInt32, offset: Int, slots: Int) {
        guard slots >= _Layout.ghostWays, s.layout.ghostLength > 0 else { return }
        let clock = s.ghostClock &+ 1
        s.ghostClock = clock
        let bucket = ghostBucket(s, hash, offset: offset, slots: slots)
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
