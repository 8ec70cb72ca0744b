import CShm

// TinyLFU's window sizing by mini-simulations (after Caffeine's simulator's
// "minisim" climber): four small copies of the policy, each with a fixed window
// (1, 10, 30, 60 % of its capacity), replay the requests of a sample of the keys;
// every epoch the window of the copy that missed least (an exponentially decayed
// count) pulls the real window target half-way towards it, and the real cache's
// eviction moves its window there (`_TinyLFUPolicy.shrinkWindow`, or new records
// filling it). Measured in a replica of the policy on the project's real traces
// (notes issue29-sim9): within 2 % of libCacheSim's best on 18/18 rows, at or
// below it on 14/18, and at or below libCacheSim's S3-FIFO on the 8 synthetic
// rows, where the hill climber it replaces reached 18 / 11 / 0.
//
// Sampling: a key is sampled when `_mix32(hash ^ 0x5bd1e995) & mask == 0`, the
// mask `2^shift - 1` with the largest shift <= 6 that leaves every mini at least
// 256 records (mini capacity = capacity >> shift, at least 10): at 1M records
// 1/64 of the keys and 15,625-record minis; under 512 records every key and
// minis of the cache's own size.
//
// What feeds them (every sampled request, once, in request order for one process):
//   uses     a hit or an update (`ShmLRU._touch`, lock-free or not) of a sampled key
//            (its link set the record's sample mark, stamp bit 3: a hit tests the
//            stamp it read and hashes nothing) appends its hash to the use ring:
//            one atomic fetch-add of the ring's
//            head, one store of `(index + 1) << 32 | hash` into slot index % its size.
//            No lock, no wait, bounded; a slot is overwritten if nobody drained it.
//   drain    under the lock, at the start of every eviction choice and of every
//            link: the entries from the drained position to the head (at most the
//            ring's size; an entry whose index half does not match was overwritten
//            or not yet written, and is skipped) replay as requests into the minis.
//            A drain before the eviction replays the uses of the requests before
//            the insert, as the sequential replica does.
//   inserts  a linked record of a sampled key replays as a request after the drain.
// The ring holds a power of two >= 16 x the mini capacity entries, at most 1,024.
// Removals are not requests. A request is, in each mini: a hit adds one to the
// node's 2-bit frequency; a miss inserts it exactly as the real policy does
// (ghost, window, window CLOCK, the duel by the mini's own sketch, main CLOCK,
// the window shrink), with the mini's fixed window. After `50 x mini capacity`
// requests (the epoch) each mini's score becomes 0.9 x score + its misses in the
// epoch; the first mini of least score names the window w (per mille of the
// capacity, rounded) and the target becomes (target + w) / 2.
//
// The area (after TinyLFU's sketch and ghost, 64-byte aligned; bytes):
//   +0     the ring's head (UInt64, fetch-added by hits; alone on its line)
//   +64    under the lock: the drained position (UInt64), the epoch's requests
//          (UInt64), a busy word (UInt32: 1 while a drain or a replay runs), then
//          +88 the four scores (Float64 bits)
//   +128   the ring: 256 to 1,024 UInt64 entries
//   then   four minis, each (bytes from its start, 64-aligned):
//            +0   header, UInt32 words: count, free head, high water, window head,
//                 window tail, window count, main head, main tail, main count,
//                 sketch increments, ghost clock, evicted once, epoch misses
//            +64  sketch: a power of two >= m (>= 8) UInt64 words (as the cache's)
//            then ghost: S3-FIFO's table for m (90 % of m)
//            then map: a power of two >= 2m (>= 16) UInt32 entries (node + 1, 0 empty),
//                 linear probing from `_mix32(hash)`, deletion by backward shift
//            then nodes: m x 16 bytes: hash, prev + 1, next + 1 (0: none), flags
//                 (bits 0-1 frequency, bit 2 window, bit 3 live)
// Memory: 128 bytes, the ring (8 bytes x 256 to 1,024) and 4 x (64 + 16m + 8-16m +
// 16-32m + 8-16m bytes), 48-100 bytes per mini record: at 1M records 4 x 15,625
// records, ~3.4 MiB (3.5 bytes per record); at 1,000 records 4 x 500, ~130 KiB;
// under 512 records 4 x max(capacity, 10) (10 records: ~5 KiB with the ring).
//
// Crash safety: every mini word is a hint; nothing here is read by the real
// cache's structure but the window target, which eviction clamps. Every link and
// count read from a mini is checked before use (a node index against m, walks
// and probes bounded by m and the map's size); one out of range resets that mini
// (header and map zeroed: an empty mini, its sketch and ghost kept as hints). A
// drain sets the busy word first and clears it last: a holder killed inside
// (kill points `tinylfu.miniUpdating`, `tinylfu.draining`) leaves it set, and the
// next drain, or a repair (`_TinyLFUPolicy.rebuilt`), resets all four minis.
// Verify reports a busy word left set or a mini header out of bounds.

/// A word read from a mini was out of range: the caller resets that mini.
struct _MiniTorn: Error {}

enum _TinyLFUMinis {
    static let count = 4
    /// Mini `i`'s window, per mille of its capacity (and of the real one when it wins).
    @inline(__always)
    static func perMille(_ i: Int) -> Int {
        switch i {
        case 0: 10
        case 1: 100
        case 2: 300
        default: 600
        }
    }
    static let maxShift = 6
    static let floor = 256
    /// The ring's entries: a power of two >= 16 x the mini capacity, at most 1,024
    /// (a smaller ring dropped uses in a single-process replay of the real traces,
    /// where long runs of hits come between two inserts: 512 entries for 381-record
    /// minis moved orm-busy at 1 % by 0.2 %).
    static func ringSlots(_ m: Int) -> Int {
        var slots = 16
        while slots < min(16 * m, 1024) { slots <<= 1 }
        return slots
    }
    static let epochPerRecord = 50
    static let decay = 0.9
    static let salt: UInt32 = 0x5bd1_e995

    // MARK: Geometry (from the capacity alone)

    /// The sampling shift: the largest <= 6 leaving minis of >= 256 records.
    static func shift(_ capacity: Int) -> Int {
        var shift = 0
        while shift < maxShift, capacity >> (shift + 1) >= floor { shift += 1 }
        return shift
    }
    static func miniCapacity(_ capacity: Int) -> Int { max(capacity >> shift(capacity), 10) }
    static func sampleMask(_ capacity: Int) -> UInt32 { (1 << UInt32(shift(capacity))) &- 1 }
    @inline(__always)
    static func isSampled(_ hash: UInt32, mask: UInt32) -> Bool { _mix32(hash ^ salt) & mask == 0 }
    /// A window of `perMille(i)` of `capacity`, rounded.
    static func window(_ capacity: Int, _ i: Int) -> Int { (capacity * perMille(i) + 500) / 1000 }

    /// One mini's sizes and byte offsets (from its start).
    struct Geometry: Equatable {
        let m: Int
        let ringSlots: Int
        let sketchWords: Int
        let ghostSlots: Int
        let ghostLength: Int
        let mapSlots: Int
        var sketchOffset: Int { 64 }
        var ghostOffset: Int { 64 + sketchWords * 8 }
        var mapOffset: Int { ghostOffset + ghostSlots * 8 }
        let nodesOffset: Int
        let bytes: Int
        /// The first mini's offset from the area's start (after the ring).
        var minisOffset: Int { ringOffset + ringSlots * 8 }

        init(capacity: Int) {
            m = miniCapacity(capacity)
            ringSlots = _TinyLFUMinis.ringSlots(m)
            sketchWords = _TinyLFUPolicy.sketchWords(m)
            let ghost = _S3FIFOPolicy.area(capacity: m)
            ghostSlots = ghost.words
            ghostLength = ghost.ghostLength
            var slots = 16
            while slots < 2 * m { slots <<= 1 }
            mapSlots = slots
            nodesOffset = (64 + sketchWords * 8 + ghostSlots * 8 + mapSlots * 4 + 63) & ~63
            bytes = (nodesOffset + m * 16 + 63) & ~63
        }
    }

    static let ringOffset = 128
    /// The area's UInt64 words.
    static func words(capacity: Int) -> Int {
        let g = Geometry(capacity: capacity)
        return (g.minisOffset + count * g.bytes) / 8
    }

    // MARK: The area in a segment

    /// The area's start (bytes into the segment) and the geometry, or nil when the
    /// layout's policy area is too small to hold it (derived from the layout alone).
    static func area(_ s: _Segment) -> (offset: Int, geometry: Geometry)? {
        let capacity = s.layout.capacity
        let before = _TinyLFUPolicy.sketchWords(capacity) &+ _S3FIFOPolicy.area(capacity: capacity).words
        guard s.layout.policy == .tinylfu, s.layout.ghostSlots >= before &+ words(capacity: capacity) else { return nil }
        return (s.layout.ghostOffset &+ before &* 8, Geometry(capacity: capacity))
    }

    /// What a handle keeps of the area (computed once, at attach): its start, the
    /// geometry and the sample mask.
    struct Place {
        let base: UnsafeMutableRawPointer
        let geometry: Geometry
        let mask: UInt32
        init?(_ s: _Segment) {
            guard let (offset, geometry) = area(s) else { return nil }
            base = s.base + offset
            self.geometry = geometry
            mask = sampleMask(s.layout.capacity)
        }
    }

    // MARK: Lock-free: a sampled use

    /// Appends a sampled key's use to the ring (`ring` = the area's start: the head,
    /// then at +128 the entries; `mask` = its entries - 1, the handle's). One
    /// fetch-add, one store; never waits.
    @inline(__always)
    static func noteUse(_ ring: UnsafeMutablePointer<UInt64>, mask: Int, hash: UInt32) {
        let index = cshm_fetch_add_u64(ring, 1)
        let entry = UInt64(UInt32(truncatingIfNeeded: index &+ 1)) << 32 | UInt64(hash)
        cshm_store_relaxed_u64(ring + 16 + (Int(truncatingIfNeeded: index) & mask), entry)
    }

    // MARK: Under the lock

    /// Replays the ring's entries not yet drained into the minis (see the file's notes).
    static func drain(_ c: ShmLRU) {
        guard let place = c._minis else { return }
        let (base, geometry) = (place.base, place.geometry)
        let head = cshm_load_acquire_u64(base.assumingMemoryBound(to: UInt64.self))
        var position = base.load(fromByteOffset: 64, as: UInt64.self)
        if head &- position == 0 { return }
        begin(c, base, geometry)
        let ringSlots = geometry.ringSlots
        if head &- position > UInt64(ringSlots) { position = head &- UInt64(ringSlots) }
        let entries = (base + ringOffset).assumingMemoryBound(to: UInt64.self)
        var replayed = 0
        while position != head {
            let entry = cshm_load_relaxed_u64(entries + Int(position & UInt64(ringSlots - 1)))
            if UInt32(truncatingIfNeeded: entry >> 32) == UInt32(truncatingIfNeeded: position &+ 1) {
                request(c, base, geometry, UInt32(truncatingIfNeeded: entry))
                replayed += 1
                if replayed == 1 { c._fault(.miniDraining) }
            }
            position &+= 1
        }
        base.storeBytes(of: head, toByteOffset: 64, as: UInt64.self)
        end(base)
    }

    /// A linked record's key: replayed after the drain when sampled.
    static func linked(_ c: ShmLRU, hash: UInt32) {
        guard let place = c._minis, isSampled(hash, mask: place.mask) else { return }
        let (base, geometry) = (place.base, place.geometry)
        begin(c, base, geometry)
        request(c, base, geometry, hash)
        end(base)
    }

    /// Sets the busy word; a set one (a holder died inside) first resets every mini.
    @inline(__always)
    static func begin(_ c: ShmLRU, _ base: UnsafeMutableRawPointer, _ g: Geometry) {
        if base.load(fromByteOffset: 80, as: UInt32.self) != 0 { resetAll(base, g) }
        base.storeBytes(of: 1, toByteOffset: 80, as: UInt32.self)
    }

    @inline(__always)
    static func end(_ base: UnsafeMutableRawPointer) { base.storeBytes(of: 0, toByteOffset: 80, as: UInt32.self) }

    /// One request in every mini, then the epoch's count and, at its end, the decision.
    static func request(_ c: ShmLRU, _ base: UnsafeMutableRawPointer, _ g: Geometry, _ hash: UInt32) {
        for i in 0..<count {
            let mini = _Mini(base: base + g.minisOffset + i * g.bytes, g: g, window: window(g.m, i))
            do throws(_MiniTorn) { try mini.access(c, hash) } catch { mini.reset() }
        }
        let requests = base.load(fromByteOffset: 72, as: UInt64.self) &+ 1
        guard requests >= UInt64(epochPerRecord * g.m) else {
            base.storeBytes(of: requests, toByteOffset: 72, as: UInt64.self)
            return
        }
        base.storeBytes(of: 0, toByteOffset: 72, as: UInt64.self)
        var best = 0
        var bestScore = Double.infinity
        for i in 0..<count {
            let mini = _Mini(base: base + g.minisOffset + i * g.bytes, g: g, window: window(g.m, i))
            var score = base.load(fromByteOffset: 88 + i * 8, as: Double.self)
            if !score.isFinite || score < 0 { score = 0 }  // a torn word: any score is a hint
            score = decay * score + Double(mini[.epochMisses])
            mini[.epochMisses] = 0
            base.storeBytes(of: score, toByteOffset: 88 + i * 8, as: Double.self)
            if score < bestScore {
                best = i
                bestScore = score
            }
        }
        let s = c._segment
        let capacity = s.layout.capacity
        let current = min(Int(s.windowTarget), _TinyLFUPolicy.maxWindow(capacity))
        s.windowTarget = UInt32((current + window(capacity, best)) / 2)
    }

    /// Empties every mini and the epoch (the ring's drained position is left).
    static func resetAll(_ base: UnsafeMutableRawPointer, _ g: Geometry) {
        for i in 0..<count { _Mini(base: base + g.minisOffset + i * g.bytes, g: g, window: 0).reset() }
        base.storeBytes(of: 0, toByteOffset: 72, as: UInt64.self)
        for i in 0..<count { base.storeBytes(of: 0, toByteOffset: 88 + i * 8, as: Double.self) }
    }

    /// Repair: every mini empty, the epoch restarted, the ring drained (its entries dropped).
    static func reset(_ s: _Segment) {
        guard let (offset, geometry) = area(s) else { return }
        let base = s.base + offset
        resetAll(base, geometry)
        base.storeBytes(of: cshm_load_acquire_u64(base.assumingMemoryBound(to: UInt64.self)), toByteOffset: 64, as: UInt64.self)
        end(base)
    }

    /// Verify: the busy word clear and every mini's header within bounds.
    static func verify(_ s: _Segment, into report: inout ShmLRU.IntegrityReport) {
        guard let (offset, g) = area(s) else { return }
        let base = s.base + offset
        if base.load(fromByteOffset: 80, as: UInt32.self) != 0 { report.add("TinyLFU mini caches left busy") }
        for i in 0..<count {
            let mini = _Mini(base: base + g.minisOffset + i * g.bytes, g: g, window: 0)
            let (n, w, m) = (Int(mini[.count]), Int(mini[.windowCount]), Int(mini[.mainCount]))
            if n > g.m || w &+ m != n || Int(mini[.highWater]) > g.m {
                report.add("TinyLFU mini cache \(i): \(n) records (window \(w), main \(m)) of \(g.m)")
            }
        }
    }
}

/// One mini cache in the segment (see `_TinyLFUMinis`' notes), under the lock.
/// Links and the free head are stored + 1 (0: none), so a zeroed mini is empty.
struct _Mini {
    let base: UnsafeMutableRawPointer
    let g: _TinyLFUMinis.Geometry
    let window: Int

    enum Word: Int {
        case count = 0, freeHead, highWater, windowHead, windowTail, windowCount, mainHead, mainTail, mainCount
        case sketchAdds, ghostClock, evicted, epochMisses
    }
    static let frequency: UInt32 = 3
    static let inWindow: UInt32 = 4
    static let live: UInt32 = 8
    static let none: UInt32 = .max

    subscript(_ word: Word) -> UInt32 {
        get { base.load(fromByteOffset: word.rawValue * 4, as: UInt32.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: word.rawValue * 4, as: UInt32.self) }
    }

    // Nodes (index checked by the caller: < m).
    @inline(__always) func node(_ n: UInt32) -> UnsafeMutableRawPointer { base + g.nodesOffset + Int(n) * 16 }
    @inline(__always) func key(_ n: UInt32) -> UInt32 { node(n).load(as: UInt32.self) }
    @inline(__always) func flags(_ n: UInt32) -> UInt32 { node(n).load(fromByteOffset: 12, as: UInt32.self) }
    @inline(__always) func setFlags(_ n: UInt32, _ v: UInt32) { node(n).storeBytes(of: v, toByteOffset: 12, as: UInt32.self) }
    /// A stored link (+ 1) as a node index, checked; `none` for 0.
    @inline(__always) func link(_ stored: UInt32) throws(_MiniTorn) -> UInt32 {
        if stored == 0 { return _Mini.none }
        guard Int(stored) <= g.m else { throw _MiniTorn() }
        return stored - 1
    }
    @inline(__always) func prev(_ n: UInt32) throws(_MiniTorn) -> UInt32 { try link(node(n).load(fromByteOffset: 4, as: UInt32.self)) }
    @inline(__always) func next(_ n: UInt32) throws(_MiniTorn) -> UInt32 { try link(node(n).load(fromByteOffset: 8, as: UInt32.self)) }
    @inline(__always) func setPrev(_ n: UInt32, _ v: UInt32) { node(n).storeBytes(of: v &+ 1, toByteOffset: 4, as: UInt32.self) }
    @inline(__always) func setNext(_ n: UInt32, _ v: UInt32) { node(n).storeBytes(of: v &+ 1, toByteOffset: 8, as: UInt32.self) }

    var target: Int { min(max(window, 1), g.m) }

    /// Empty: header and map zeroed (the sketch and the ghost stay: hints).
    func reset() {
        (base).initializeMemory(as: UInt8.self, repeating: 0, count: 64)
        (base + g.mapOffset).initializeMemory(as: UInt8.self, repeating: 0, count: g.mapSlots * 4)
    }

    // MARK: The request

    func access(_ c: ShmLRU, _ hash: UInt32) throws(_MiniTorn) {
        if let n = try find(hash) {
            let f = flags(n)
            if f & _Mini.frequency != _Mini.frequency { setFlags(n, f &+ 1) }
            return
        }
        self[.epochMisses] &+= 1
        if Int(self[.count]) >= g.m { try evict(c) }
        let n = try allocate()
        node(n).storeBytes(of: hash, as: UInt32.self)
        self[.count] &+= 1
        try mapInsert(hash, n)
        let toMain = ghostTake(hash) || (self[.evicted] == 0 && Int(self[.windowCount]) >= target)
        setFlags(n, _Mini.live | (toMain ? 0 : _Mini.inWindow))
        c._fault(.miniUpdating)
        try push(n, window: !toMain)
    }

    func evict(_ c: ShmLRU) throws(_MiniTorn) {
        self[.evicted] = 1
        var budget = 4 * g.m + 8
        while true {
            let windowCount = Int(self[.windowCount])
            if Int(self[.mainCount]) > g.m - target || windowCount == 0 {
                try remove(try mainVictim(&budget))
                return
            }
            var x = try tail(window: true)
            if windowCount > target, budget > 0 {  // the window above its target: to main, no duel
                budget -= 1
                try unlink(x)
                fold(x)
                setFlags(x, flags(x) & ~_Mini.inWindow)
                try push(x, window: false)
                continue
            }
            while flags(x) & _Mini.frequency >= 1, budget > 0 {  // the window's CLOCK
                budget -= 1
                let f = flags(x)
                for _ in 0..<(f & _Mini.frequency) { increment(key(x)) }
                try unlink(x)
                setFlags(x, f & ~_Mini.frequency)
                try push(x, window: true)
                x = try tail(window: true)
            }
            if self[.mainCount] > 0 {
                let v = try mainVictim(&budget)
                if estimate(key(x)) > estimate(key(v)) {
                    try remove(v)
                    try unlink(x)
                    fold(x)
                    setFlags(x, flags(x) & ~_Mini.inWindow)
                    try push(x, window: false)
                    return
                }
            }
            fold(x)
            ghostInsert(key(x))
            try remove(x)
            return
        }
    }

    /// The main queue's oldest record of frequency 0, CLOCK-fashion.
    func mainVictim(_ budget: inout Int) throws(_MiniTorn) -> UInt32 {
        while true {
            let t = try tail(window: false)
            let f = flags(t)
            guard f & _Mini.frequency >= 1, budget > 0 else { return t }
            budget -= 1
            increment(key(t))
            try unlink(t)
            setFlags(t, f &- 1)
            try push(t, window: false)
        }
    }

    /// Its access and its hits join the sketch; the frequency clears.
    func fold(_ n: UInt32) {
        let f = flags(n)
        for _ in 0...(f & _Mini.frequency) { increment(key(n)) }
        setFlags(n, f & ~_Mini.frequency)
    }

    // MARK: Queues, nodes

    func tail(window: Bool) throws(_MiniTorn) -> UInt32 {
        let t = try link(self[window ? .windowTail : .mainTail])
        guard t != _Mini.none, flags(t) & _Mini.live != 0, (flags(t) & _Mini.inWindow != 0) == window else { throw _MiniTorn() }
        return t
    }

    /// Links `n` (its flags say the queue) as the queue's newest.
    func push(_ n: UInt32, window: Bool) throws(_MiniTorn) {
        let (headWord, tailWord, countWord): (Word, Word, Word) =
            window ? (.windowHead, .windowTail, .windowCount) : (.mainHead, .mainTail, .mainCount)
        let head = try link(self[headWord])
        setPrev(n, _Mini.none)
        setNext(n, head)
        if head != _Mini.none { setPrev(head, n) } else { self[tailWord] = n &+ 1 }
        self[headWord] = n &+ 1
        self[countWord] &+= 1
    }

    func unlink(_ n: UInt32) throws(_MiniTorn) {
        let window = flags(n) & _Mini.inWindow != 0
        let (headWord, tailWord, countWord): (Word, Word, Word) =
            window ? (.windowHead, .windowTail, .windowCount) : (.mainHead, .mainTail, .mainCount)
        let p = try prev(n)
        let x = try next(n)
        guard self[countWord] > 0 else { throw _MiniTorn() }
        if p != _Mini.none { setNext(p, x) } else { self[headWord] = x &+ 1 }
        if x != _Mini.none { setPrev(x, p) } else { self[tailWord] = p &+ 1 }
        self[countWord] &-= 1
    }

    func remove(_ n: UInt32) throws(_MiniTorn) {
        try unlink(n)
        try mapDelete(key(n))
        setFlags(n, 0)
        node(n).storeBytes(of: self[.freeHead], toByteOffset: 8, as: UInt32.self)
        self[.freeHead] = n &+ 1
        guard self[.count] > 0 else { throw _MiniTorn() }
        self[.count] &-= 1
    }

    func allocate() throws(_MiniTorn) -> UInt32 {
        let free = try link(self[.freeHead])
        if free != _Mini.none {
            self[.freeHead] = node(free).load(fromByteOffset: 8, as: UInt32.self)
            return free
        }
        let high = self[.highWater]
        guard Int(high) < g.m else { throw _MiniTorn() }
        self[.highWater] = high &+ 1
        return high
    }

    // MARK: The map (hash -> node + 1), linear probing, bounded

    @inline(__always) func slot(_ i: Int) -> UnsafeMutableRawPointer { base + g.mapOffset + i * 4 }
    @inline(__always) func home(_ hash: UInt32) -> Int { Int(_mix32(hash) & UInt32(g.mapSlots - 1)) }

    func find(_ hash: UInt32) throws(_MiniTorn) -> UInt32? {
        var i = home(hash)
        for _ in 0..<g.mapSlots {
            let n = try link(slot(i).load(as: UInt32.self))
            if n == _Mini.none { return nil }
            if key(n) == hash, flags(n) & _Mini.live != 0 { return n }
            i = (i + 1) & (g.mapSlots - 1)
        }
        return nil
    }

    func mapInsert(_ hash: UInt32, _ n: UInt32) throws(_MiniTorn) {
        var i = home(hash)
        for _ in 0..<g.mapSlots {
            if slot(i).load(as: UInt32.self) == 0 {
                slot(i).storeBytes(of: n &+ 1, as: UInt32.self)
                return
            }
            i = (i + 1) & (g.mapSlots - 1)
        }
        throw _MiniTorn()
    }

    func mapDelete(_ hash: UInt32) throws(_MiniTorn) {
        let mask = g.mapSlots - 1
        var i = home(hash)
        var found = false
        for _ in 0..<g.mapSlots {
            let n = try link(slot(i).load(as: UInt32.self))
            if n == _Mini.none { break }
            if key(n) == hash {
                found = true
                break
            }
            i = (i + 1) & mask
        }
        guard found else { throw _MiniTorn() }
        slot(i).storeBytes(of: 0, as: UInt32.self)
        var j = i
        for _ in 0..<g.mapSlots {
            j = (j + 1) & mask
            let n = try link(slot(j).load(as: UInt32.self))
            if n == _Mini.none { return }
            let h = home(key(n))
            // Move j back to i unless its home lies cyclically in (i, j].
            let keep = i <= j ? (h > i && h <= j) : (h > i || h <= j)
            if !keep {
                slot(i).storeBytes(of: n &+ 1, as: UInt32.self)
                slot(j).storeBytes(of: 0, as: UInt32.self)
                i = j
            }
        }
    }

    // MARK: Sketch and ghost (the cache's, on the mini's words)

    @inline(__always)
    func counter(_ spread: UInt64, _ i: Int) -> (word: UnsafeMutablePointer<UInt64>, shift: UInt64) {
        let blocks = UInt64(g.sketchWords / 8)
        let block = Int((spread >> 32) & (blocks &- 1)) &* 8
        let byte = (spread >> UInt64(i &* 8)) & 0xFF
        let word = block &+ i &* 2 &+ Int(byte & 1)
        return ((base + g.sketchOffset).assumingMemoryBound(to: UInt64.self) + word, ((byte >> 1) & 15) &* 4)
    }

    func estimate(_ hash: UInt32) -> UInt64 {
        let spread = _TinyLFUPolicy.spread(hash)
        var least: UInt64 = 15
        for i in 0..<4 {
            let (word, shift) = counter(spread, i)
            least = min(least, (word.pointee >> shift) & 15)
        }
        return least
    }

    func increment(_ hash: UInt32) {
        let spread = _TinyLFUPolicy.spread(hash)
        let least = estimate(hash)
        if least < 15 {
            for i in 0..<4 {
                let (word, shift) = counter(spread, i)
                if (word.pointee >> shift) & 15 == least { word.pointee &+= 1 << shift }
            }
        }
        let adds = Int(self[.sketchAdds]) + 1
        if adds >= _TinyLFUPolicy.agingSize(g.m) {
            let words = (base + g.sketchOffset).assumingMemoryBound(to: UInt64.self)
            for i in 0..<g.sketchWords { words[i] = (words[i] >> 1) & 0x7777_7777_7777_7777 }
            self[.sketchAdds] = UInt32(adds / 2)
        } else {
            self[.sketchAdds] = UInt32(adds)
        }
    }

    @inline(__always)
    func bucket(_ hash: UInt32) -> UnsafeMutablePointer<UInt64> {
        let buckets = UInt32(truncatingIfNeeded: g.ghostSlots / _Layout.ghostWays)
        let b = Int(_mix32(hash) & (buckets &- 1))
        return (base + g.ghostOffset).assumingMemoryBound(to: UInt64.self) + b &* _Layout.ghostWays
    }

    func ghostTake(_ hash: UInt32) -> Bool {
        guard g.ghostLength > 0 else { return false }
        let clock = self[.ghostClock]
        let b = bucket(hash)
        for way in 0..<_Layout.ghostWays {
            let entry = b[way]
            let tick = UInt32(truncatingIfNeeded: entry)
            if UInt32(truncatingIfNeeded: entry >> 32) == hash, tick != 0, Int(clock &- tick) < g.ghostLength {
                b[way] = 0
                return true
            }
        }
        return false
    }

    func ghostInsert(_ hash: UInt32) {
        guard g.ghostLength > 0 else { return }
        let clock = self[.ghostClock] &+ 1
        self[.ghostClock] = clock
        let b = bucket(hash)
        var chosen = -1
        for way in 0..<_Layout.ghostWays where UInt32(truncatingIfNeeded: b[way] >> 32) == hash {
            chosen = way
            break
        }
        if chosen < 0 {
            var oldest: UInt32 = 0
            for way in 0..<_Layout.ghostWays {
                let entry = b[way]
                let tick = UInt32(truncatingIfNeeded: entry)
                let age = clock &- tick
                if entry == 0 || tick == 0 || Int(age) >= g.ghostLength {
                    chosen = way
                    break
                }
                if chosen < 0 || age > oldest {
                    chosen = way
                    oldest = age
                }
            }
        }
        b[chosen] = UInt64(hash) << 32 | UInt64(clock)
    }
}
