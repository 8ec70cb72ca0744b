import CShm

// Adaptive W-TinyLFU (after Einziger, Friedman, Manes, "TinyLFU", ACM ToS '17,
// and Caffeine's adaptive window) on S3-FIFO's frame, shaped for lock-free
// hits: a window FIFO and a main FIFO in the one list (the window first, as
// S3-FIFO's small queue, whose words, stamp bits, links and ghost it shares), a
// count-min sketch of hash frequencies that decides whether the window's oldest
// record may take the place of the main queue's victim, a ghost of the hashes
// the window evicted, and the window's share tuned online from the requests of
// a sample of keys replayed in four mini caches (_TinyLFUMinis.swift).
//
//   head                 smallTail                                    tail
//    | window (stamp bit 2) |  main queue (bit 2 clear)                 |
//    [w]->[w]-> ... ->[w] ---->[m]->[m]->  ...                    ->[m]
//    ^ new records       ^ the candidate   ^ admitted, ghost hits        ^ the main victim
//
// Hits are S3-FIFO's: one compare-and-swap of the stamp word adds one to the
// record's 2-bit frequency (never a list move, never the sketch). Under the lock:
//   link     a new record whose hash is in the ghost joins the main queue (it was
//            evicted from the window lately: recency says keep it), else the window
//            (before the first eviction, a full window sends it to the main queue).
//   evict    as S3-FIFO: from the main queue while it holds more than capacity -
//            window target records (or the window is empty), else from the window.
//            The main queue's victim is its oldest record of frequency 0 (CLOCK: one
//            of frequency f >= 1 goes back to the main queue's head with f - 1, its
//            sketch counters += 1). The window is a CLOCK too: its oldest record
//            of frequency f >= 1 goes back to the window's head with its f hits
//            counted in the sketch and f cleared (measured on the real traces: a
//            recency-heavy trace keeps what it reads, as with an LRU window); the
//            candidate is the window's oldest record of frequency 0. Leaving the
//            window is a duel, whatever the candidate's frequency (S3-FIFO promotes frequency >= 2 unasked; measured
//            on the real traces that lets a block trace's one-burst keys crowd out its
//            frequent ones): if the sketch estimates the window's oldest record W above
//            the main victim M, W joins the main queue and M is evicted; else W is
//            evicted (ties keep M: a scan's one-time keys never displace the main
//            queue) and its hash joins the ghost. The candidate's hits in the window
//            (the frequency bits, then cleared) join the sketch before the duel (a
//            record read there beats a victim nobody read), its access after it
//            (admitted or evicted): the duel counts earlier accesses and hits.
//            Before it, a window above its target (the minis lowered it) hands its
//            oldest records to the main queue without a duel, down to the target (a
//            duel keeps the window's size, and a candidate that loses is replaced by
//            the new record: without this the window shrank only by ghost hits, and a
//            loop trace, whose candidates never win, kept the old size for good;
//            measured on the real traces, LIRS loop at 10 %: 1.013x libCacheSim's
//            best -> 0.997x).
//   adapt    the window target starts at 10 % and moves by the mini caches
//            (`_TinyLFUMinis`: four copies of this policy with windows of 1, 10, 30
//            and 60 %, fed with a sample of the keys' requests, hits through a
//            lossy ring; every epoch the target moves half-way to the window of the
//            one that missed least). They replace a hill climber on the hit ratio
//            (Caffeine's), which no step or decay kept near the best window on both
//            the real and the synthetic traces (measured: 11/18 rows at or below
//            libCacheSim's best and 0/8 synthetic rows at or below its S3-FIFO, the
//            minis 14/18 and 8/8). The target stays within [0, 80 %] (a target of 0
//            keeps a window of one).
//
// The policy area: the sketch, then the ghost. The sketch: `sketchWords` (a power
// of two >= the capacity, >= 8) UInt64 words, each 16 4-bit counters, so 8 to 16
// bytes per record (1M records: 8 MiB). A hash's four counters lie in one 64-byte
// block; the estimate is their minimum, and an increment adds one to those equal
// to it (conservative update). After `agingSize` = 20 x capacity increments
// every counter halves (ageing). The ghost: S3-FIFO's table (`ghostLength` = 90 %
// of the capacity, a power of two >= 2 x that of 8-byte entries: 16 to 32 bytes
// per record) after the sketch. Any content of either is a valid hint: verify
// does not check them and a repair leaves them. The mini caches' area follows
// the ghost (`_TinyLFUMinis`, which describes it: ~3.5 bytes per record at 1M
// records; a repair empties it).
//
// Header words (line 5, under the lock): the window target and the sketch's
// increments since its last ageing; S3-FIFO's small-queue tail and count, ghost
// clock and first-eviction flag (all named in `_QueueWords.swift`).

enum _TinyLFUPolicy: _PolicyRoom {
    /// A record's rank in the policy's order of preference: S3-FIFO's (the
    /// same frequency and queue bits; the window stands for the small queue).
    static func preferenceRank(_ stamp: UInt64) -> UInt64 { _S3FIFOPolicy.preferenceRank(stamp) }

    // MARK: Stamp bits (S3-FIFO's: the 2-bit frequency, bit 2 = in the window)

    static let frequency = _S3FIFOPolicy.frequency
    static let window = _S3FIFOPolicy.small
    /// Bit 3: the key is sampled for the mini caches (`_TinyLFUMinis`), set at the
    /// link, never changed while the record lives: a hit tests the stamp it read
    /// instead of hashing the key.
    static let sampled: UInt64 = 8
    static let markMask = _S3FIFOPolicy.markMask
    static let timeMask = _S3FIFOPolicy.timeMask

    // MARK: Segment

    /// The sketch's words (a power of two >= the capacity, >= 8).
    static func sketchWords(_ capacity: Int) -> Int {
        var words = 8
        while words < capacity { words <<= 1 }
        return words
    }

    /// The sketch's words, the ghost's (S3-FIFO's: 90 % of the capacity, a
    /// power of two >= 2 x that), then the mini caches' (`_TinyLFUMinis`); the
    /// window's first target (10 %).
    static func area(capacity: Int) -> _PolicyArea {
        let ghost = _S3FIFOPolicy.area(capacity: capacity)
        return _PolicyArea(
            words: sketchWords(capacity) + ghost.words + _TinyLFUMinis.words(capacity: capacity), smallTarget: capacity / 10,
            ghostLength: ghost.ghostLength)
    }

    /// The ghost's place in the policy area: after the sketch (derived from the layout alone).
    @inline(__always)
    static func ghost(_ s: _Segment) -> (offset: Int, slots: Int) {
        let sketch = sketchWords(s.layout.capacity)
        let ghost = _S3FIFOPolicy.area(capacity: s.layout.capacity).words
        return (s.layout.ghostOffset &+ sketch &* 8, min(ghost, max(s.layout.ghostSlots &- sketch, 0)))
    }

    static func initialize(_ s: _Segment) {
        s.smallTail = _Layout.none
        s.windowTarget = UInt32(s.layout.smallTarget)
    }

    /// Sketch increments per ageing (Caffeine's is 10 x, libCacheSim's W-TinyLFU's
    /// 32 x; measured on the real traces, 20 x with the ghost).
    static func agingSize(_ capacity: Int) -> Int { 20 * capacity }
    static func maxWindow(_ capacity: Int) -> Int { capacity * 8 / 10 }

    /// The window target in force: the header's, within [1, capacity] (a window
    /// of at least one record: the candidate's place).
    @inline(__always)
    static func target(_ s: _Segment) -> Int {
        min(max(Int(s.windowTarget), 1), s.layout.capacity)
    }

    // MARK: Linking (under the lock)

    static func link(_ c: ShmLRU, _ slot: UInt32, hash: UInt32, now: UInt64) throws(ShmError) {
        let s = c._segment
        _TinyLFUMinis.drain(c)
        let (offset, slots) = ghost(s)
        let toMain = _S3FIFOPolicy.ghostTake(s, hash, offset: offset, slots: slots) || (s.s3Evicted == 0 && Int(s.smallCount) >= target(s))
        let mark = if let minis = c._minis, _TinyLFUMinis.isSampled(hash, mask: minis.mask) { sampled } else { UInt64(0) }
        s.store64(s.layout.recordOffset(slot) &+ _Layout.R.stamp, (now & timeMask) | (toMain ? 0 : window) | mark)
        c._fault(.setWritten)
        if toMain { try _S3FIFOPolicy.linkMain(c, slot) } else { try _S3FIFOPolicy.linkSmall(c, slot) }
        _TinyLFUMinis.linked(c, hash: hash)
    }

    @inline(__always)
    static func unlink(_ c: ShmLRU, _ slot: UInt32, prev: UInt32) throws(ShmError) {
        try _S3FIFOPolicy.unlink(c, slot, prev: prev)
    }

    @inline(__always)
    static func replaced(_ c: ShmLRU, _ old: UInt32, with fresh: UInt32) { _S3FIFOPolicy.replaced(c, old, with: fresh) }

    // MARK: Choosing a victim (under the lock)

    /// See the file's notes. Asking twice without a change in between returns the
    /// same record: a duel the candidate won moved it to the main queue, one it lost
    /// left everything in place (the main queue's CLOCK moves lower frequencies,
    /// which the second ask then finds at 0). Every move lowers a frequency or
    /// shrinks the window: the budget bounds the walk.
    static func selectVictim(_ c: ShmLRU) throws(ShmError) -> UInt32? {
        _TinyLFUMinis.drain(c)  // the uses before this insert, as a sequential replay has them
        let s = c._segment
        let capacity = c.capacity
        let mainTarget = capacity - target(s)
        var budget = 4 * capacity + 8
        let count = Int(s.count)
        let windowCount = Int(s.smallCount)
        guard windowCount <= count, count <= capacity else { throw c._corrupted("window \(windowCount) of \(count) records") }
        if count == 0 { return nil }
        if count - windowCount > mainTarget || windowCount == 0 { return try mainVictim(c, budget: &budget) }
        try shrinkWindow(c, budget: &budget)
        let candidate = try windowCandidate(c, budget: &budget)
        if count == Int(s.smallCount) { return candidate }
        let victim = try mainVictim(c, budget: &budget)
        foldHits(c, candidate)
        guard estimate(s, s.hash(candidate)) > estimate(s, s.hash(victim)) else { return candidate }
        try _S3FIFOPolicy.moveToMain(c, candidate, stamp: fold(c, candidate) & ~window)
        c._fault(.admitted)
        return victim
    }

    /// While the window holds more than its target (and the budget lasts), its
    /// oldest record joins the main queue without a duel, its accesses and hits
    /// counted in the sketch: the main queue is below its share then (the caller
    /// evicts from it otherwise), so the window shrinks to the minis' target.
    /// Leaves at least one record in the window.
    static func shrinkWindow(_ c: ShmLRU, budget: inout Int) throws(ShmError) {
        let s = c._segment
        while Int(s.smallCount) > max(target(s), 1), budget > 0 {
            budget -= 1
            let last = try windowTail(c)
            let stamp = fold(c, last) & ~window
            try c._unlink(last)
            c._fault(.windowShrinking)
            s.store64(s.layout.recordOffset(last) &+ _Layout.R.stamp, stamp)
            try _S3FIFOPolicy.linkMain(c, last)
        }
    }

    /// The window's oldest record, checked.
    @inline(__always)
    static func windowTail(_ c: ShmLRU) throws(ShmError) -> UInt32 {
        let s = c._segment
        let last = s.smallTail
        guard s.isSlot(last), s.isLive(meta: s.meta(last)) else { throw c._corrupted("window tail \(last) is not a live record") }
        guard s.stamp(last) & window != 0 else { throw c._corrupted("window tail \(last) is not in the window") }
        return last
    }

    /// The window's oldest record of frequency 0, CLOCK-fashion (or the tail once
    /// the budget is spent): one read in the window (frequency f >= 1) goes back
    /// to the window's head with its f hits counted in the sketch and f cleared,
    /// so the window keeps what is being read, as an LRU window would (a hit never
    /// moves it: the eviction does, under the lock). The window must not be empty.
    static func windowCandidate(_ c: ShmLRU, budget: inout Int) throws(ShmError) -> UInt32 {
        let s = c._segment
        while true {
            let last = try windowTail(c)
            guard s.stamp(last) & frequency >= 1, budget > 0 else { return last }
            budget -= 1
            foldHits(c, last)
            try c._unlink(last)
            c._fault(.policyMoving)
            try _S3FIFOPolicy.linkSmall(c, last)
            s.bumpStat(_Layout.H.statPromotions)
        }
    }

    /// The main queue's oldest record of frequency 0 (S3-FIFO's CLOCK walk); a
    /// record it keeps counts once more in the sketch.
    @inline(__always)
    static func mainVictim(_ c: ShmLRU, budget: inout Int) throws(ShmError) -> UInt32 {
        try _S3FIFOPolicy.mainVictim(c, budget: &budget) { increment(c, c._segment.hash($0)) }
    }

    /// Before the duel: the candidate's hits in the window (its frequency bits)
    /// join the sketch, and the bits are cleared (written): a record read while
    /// in the window is counted as Caffeine's sketch counts every access, so a
    /// window record just read wins against a main victim nobody read.
    @inline(__always)
    static func foldHits(_ c: ShmLRU, _ slot: UInt32) {
        let s = c._segment
        let stamp = s.stamp(slot)
        let hits = stamp & frequency
        guard hits > 0 else { return }
        let hash = s.hash(slot)
        for _ in 0..<hits { increment(c, hash) }
        s.store64(s.layout.recordOffset(slot) &+ _Layout.R.stamp, stamp & ~frequency)
    }

    /// A record leaving the window (to the main queue, or evicted): its access,
    /// and any hits not yet counted, join the sketch. The access after the duel,
    /// never before it (as libCacheSim's W-TinyLFU): the candidate's estimate
    /// counts its earlier accesses and its hits. Returns its stamp with the
    /// frequency cleared (written).
    @inline(__always)
    static func fold(_ c: ShmLRU, _ slot: UInt32) -> UInt64 {
        let s = c._segment
        let stamp = s.stamp(slot)
        let hash = s.hash(slot)
        for _ in 0...(stamp & frequency) { increment(c, hash) }
        let cleared = stamp & ~frequency
        s.store64(s.layout.recordOffset(slot) &+ _Layout.R.stamp, cleared)
        return cleared
    }

    /// Before the victim is detached: a window record's accesses join the
    /// sketch and its hash the ghost; from now on new records join the window.
    @inline(__always)
    static func evicting(_ c: ShmLRU, _ slot: UInt32) {
        let s = c._segment
        if s.stamp(slot) & window != 0 {
            _ = fold(c, slot)
            let (offset, slots) = ghost(s)
            _S3FIFOPolicy.ghostInsert(s, s.hash(slot), offset: offset, slots: slots)
            c._fault(.ghostInserted)
        }
        s.s3Evicted = 1
    }
    @inline(__always) static func evicted(_ c: ShmLRU) {}

    // MARK: Lock-free

    /// A hit: S3-FIFO's (one compare-and-swap of the stamp word, never a retry).
    @inline(__always)
    static func touch(_ stampWord: UnsafeMutablePointer<UInt64>, stamp: UInt64, now: UInt64, interval: UInt64) {
        _S3FIFOPolicy.touch(stampWord, stamp: stamp, now: now, interval: interval)
    }

    // MARK: Verify and rebuild

    /// S3-FIFO's queue checks (the window is its small queue), and the window
    /// target within bounds.
    static func verify(_ c: ShmLRU, order: [UInt32], into report: inout ShmLRU.IntegrityReport) {
        _S3FIFOPolicy.verify(c, order: order, into: &report)
        let target = Int(c._segment.windowTarget)
        if target > maxWindow(c.capacity) { report.add("window target \(target) above \(maxWindow(c.capacity)) records") }
        _TinyLFUMinis.verify(c._segment, into: &report)
    }

    static func rebuildOrder(_ s: _Segment, _ live: [(stamp: UInt64, slot: UInt32)]) -> [(stamp: UInt64, slot: UInt32)] {
        _S3FIFOPolicy.rebuildOrder(s, live)
    }

    /// The window from the records' bits; a window target out of bounds is clamped.
    /// The sketch stays: any content is a valid hint. The mini caches start empty.
    static func rebuilt(_ s: _Segment, kept: [UInt32]) {
        _S3FIFOPolicy.rebuilt(s, kept: kept)
        if Int(s.windowTarget) > maxWindow(s.layout.capacity) { s.windowTarget = UInt32(maxWindow(s.layout.capacity)) }
        _TinyLFUMinis.reset(s)
    }

    // MARK: The sketch (under the lock)

    /// splitmix64's finalizer: the hash spread over 64 bits (the block from the
    /// high half, the four counters from bytes 0-3).
    @inline(__always)
    static func spread(_ hash: UInt32) -> UInt64 {
        var z = UInt64(hash) &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The word and the bit shift of counter `i` (0..<4) of a spread hash.
    /// Computed from the hash and the layout alone: nothing read from the segment
    /// chooses the address.
    @inline(__always)
    static func counter(_ s: _Segment, _ spread: UInt64, _ i: Int) -> (word: UnsafeMutablePointer<UInt64>, shift: UInt64) {
        let blocks = UInt64(sketchWords(s.layout.capacity) / 8)
        let block = Int((spread >> 32) & (blocks &- 1)) &* 8
        let byte = (spread >> UInt64(i &* 8)) & 0xFF
        let word = block &+ i &* 2 &+ Int(byte & 1)
        return (s.u64(s.layout.ghostOffset &+ word &* 8), ((byte >> 1) & 15) &* 4)
    }

    /// Adds one to the least of the hash's four counters (conservative update:
    /// those equal to the estimate; saturating at 15); every `agingSize`
    /// increments, halves every counter.
    static func increment(_ c: ShmLRU, _ hash: UInt32) {
        let s = c._segment
        guard s.layout.ghostSlots >= sketchWords(s.layout.capacity) else { return }
        let spread = spread(hash)
        let least = estimate(s, hash)
        if least < 15 {
            for i in 0..<4 {
                let (word, shift) = counter(s, spread, i)
                let value = cshm_load_relaxed_u64(word)
                if (value >> shift) & 15 == least { cshm_store_relaxed_u64(word, value &+ (1 << shift)) }
            }
        }
        let adds = Int(s.sketchAdds) + 1
        if adds >= agingSize(s.layout.capacity) {
            age(c)
            s.sketchAdds = UInt32(adds / 2)
        } else {
            s.sketchAdds = UInt32(adds)
        }
    }

    /// The hash's estimated frequency: the least of its four counters.
    static func estimate(_ s: _Segment, _ hash: UInt32) -> UInt64 {
        guard s.layout.ghostSlots >= sketchWords(s.layout.capacity) else { return 0 }
        let spread = spread(hash)
        var least: UInt64 = 15
        for i in 0..<4 {
            let (word, shift) = counter(s, spread, i)
            least = min(least, (cshm_load_relaxed_u64(word) >> shift) & 15)
        }
        return least
    }

    /// Halves every counter (ageing). A kill half-way leaves some halved: a hint still.
    static func age(_ c: ShmLRU) {
        let s = c._segment
        let words = min(sketchWords(s.layout.capacity), s.layout.ghostSlots)
        let base = s.u64(s.layout.ghostOffset)
        for index in 0..<words {
            if index == words / 2 { c._fault(.sketchAging) }
            cshm_store_relaxed_u64(base + index, (cshm_load_relaxed_u64(base + index) >> 1) & 0x7777_7777_7777_7777)
        }
    }
}
