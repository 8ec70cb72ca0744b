// The ShmLRU segment layout. This file is the only place that knows an offset.
//
//  byte 0                                                           segment end
//  +--------------+-------------------------+---------------------+-----------------------------+
//  | header 512 B | index: UInt32 x slots   | policy area: UInt64 | records: capacity x stride  |
//  |              |                         |   x ghostSlots      |                             |
//  +--------------+-------------------------+---------------------+-----------------------------+
//                 ^ indexOffset (0 bytes    ^ ghostOffset         ^ recordsOffset (64-aligned)
//                   for a process-local       (64-aligned; 0 bytes
//                   index)                     unless S3-FIFO's ghost or TinyLFU's sketch)
//
//  Header (each line of 64 bytes has one writer pattern, to keep false sharing off
//  the read path):
//   line 0   immutable after init: magic, layout version, header size, record size,
//            stride, capacity, index kind, index offset/slots/bits, records offset,
//            laid-out size, ready flag (these and line 6's fields are listed once,
//            with their names, in `_Layout.fields`: create writes that table and
//            attach compares a segment with it)
//   line 1   the lock (`_SegmentLock`): one UInt64 owner word at +64, 0 when free;
//            +72..+127 zero (reserved)
//
//              bits 0-29   owner thread id   bit 30  zero   bit 31  waiters (futex
//              bits 32-63  owner thread's start time (clock ticks, low 32 bits)
//            the low half is the futex word that waiters sleep on)
//   line 2   list state, written under the lock: count, free head, LRU head and tail,
//            free count, generation (bumped by recovery), change sequence and its
//            waiter count (futex words for listeners), creation time, high-water
//            mark (slots at or above it were never used: init touches no record)
//            Then the policies' list state (see "Eviction policies" below): the SIEVE
//            hand, the S3-FIFO small queue's last record and size, the ghost clock,
//            and whether S3-FIFO has evicted yet
//   line 3   index sequence: odd while the index is being reshaped (a reader that
//            misses while it moved retries)
//   line 4   statistics (UInt64): inserts, updates, deletes, evictions, recoveries,
//            promotions, hits, misses (hits and misses: each handle adds its own
//            counts when it next takes the lock; wrapping)
//   line 5   TinyLFU's adaptive state, written under the lock: the window target and
//            the sketch's increments since its ageing (zero else); the rest of the
//            line zero (reserved; version 2 kept a hill climber's words there)
//   line 6   immutable after init: eviction policy (0 LRU/CLOCK, 1 SIEVE, 2 S3-FIFO,
//            3 TinyLFU), the policy area's offset and words (S3-FIFO's ghost, TinyLFU's
//            sketch), the small queue's (window's first) target size and the ghost
//            FIFO's length
//   line 7   owner (UInt64 at 448): 0, or "STOR" << 32 | the key of the ShmStore
//            whose data segment this is (ShmStore checks it before using or
//            removing it); the rest reserved (zero)
//
//  Record (stride = 32 + recordSize rounded up to 8):
//   +0  prev   UInt32   LRU neighbour towards the head (slot index; none = 0xFFFFFFFF)
//   +4  next   UInt32   towards the tail; on the free list, the next free slot
//   +8  hash   UInt32   the caller's key
//   +12 share  UInt32   share key (reload_hash_map_update)
//   +16 seq    UInt32   seqlock: odd while the payload or hash is being written
//   +20 meta   UInt32   value length (low 24 bits) | state << 24 (0 free, 1 live)
//   +24 stamp  UInt64   last use, CLOCK_MONOTONIC nanoseconds (one clock for every process;
//                       the coarse clock, to within a tick, for handles with interval promotion).
//                       Bit 0 set: used since it was last linked at the head (interval
//                       promotion marks it lock-free; eviction then gives it a second chance).
//                       SIEVE: bit 0 is the visited bit. S3-FIFO: bits 0-1 are the 2-bit
//                       frequency (saturating at 3; a hit adds one with a single
//                       compare-and-swap of this word, never a retry), bit 2 is set while
//                       the record is in the small queue (written under the lock only; the
//                       hits' compare-and-swap keeps it), bit 3 is TinyLFU's sample mark
//                       (set at the link when the key feeds its mini caches; zero under
//                       S3-FIFO), the time is stamp & ~15
//   +32 payload, recordSize bytes (values are binary; their length is in meta)
//
//  Index (shared kind): open addressing with linear probing over `indexSlots`
//  (2 x capacity) UInt32 entries; 0 is empty, otherwise `tag << indexBits | slot + 1`
//  where the tag is the low bits of the mixed hash, so most probes are settled
//  without touching a record. Home = (mix(hash) * indexSlots) >> 32. Deletion shifts
//  entries back (no tombstones), inside an odd index sequence.
//
//  Eviction policies (header line 6; every handle uses the segment's):
//   LRU    one list, head = most recently used. Exact (every read relinks, under the
//          lock) or CLOCK (`.atMostEvery`: reads mark bit 0, the tail's marked records
//          move to the head instead of being evicted).
//   SIEVE  (Zhang et al., NSDI '24) the same list as a FIFO: new records at the head,
//          never moved. Hits set bit 0 (lock-free). The hand (header) walks from the
//          tail towards the head, clearing bits, and evicts the first unmarked record;
//          past the head it wraps to the tail. Removing the hand's record moves the
//          hand to its neighbour towards the head (none: the tail next time).
//   S3-FIFO (Yang et al., SOSP '23) two FIFOs in the one list, the small queue first:
//
//            head                        smallTail                             tail
//             | small queue (stamp bit 2) |  main queue (bit 2 clear)           |
//             [s]->[s]->  ...   ->[s] ----->[m]->[m]->  ...              ->[m]
//             ^ new records              ^ records from the ghost, and records
//                                          promoted from the small queue
//
//          A new record joins the small queue, or the main queue if its hash is in the
//          ghost. Eviction takes from the main queue when it holds more than its share
//          (capacity - small target) or the small queue is empty, else from the small
//          queue. The small queue's last record moves to the main queue if its
//          frequency is >= 2, else is evicted and its hash joins the ghost; the main
//          queue's last record with frequency f >= 1 moves to the main queue's head
//          with min(f, 3) - 1, else is evicted.
//
//   TinyLFU (adaptive W-TinyLFU, Policy/_TinyLFUPolicy.swift) S3-FIFO's list, words and
//          stamp bits and ghost, its small queue being the window: new records join
//          the window (a ghost hit: the main queue); the window's oldest record joins
//          the main queue only if the sketch counts its hash more often than the main
//          queue's victim's, else it is evicted (to the ghost); the window's target
//          follows the best of four mini caches that replay a sample of the keys
//          (line 5; the minis' area is described once, in Policy/_TinyLFUMinis.swift).
//
//  Sketch (TinyLFU only, first in the policy area): a power of two >= capacity (>= 8)
//  of UInt64 words, each 16 4-bit counters; a hash's 4 counters lie in one 64-byte
//  block computed from the hash alone; all halve every 20 x capacity increments. Any
//  content is a valid hint. TinyLFU's ghost follows it, then its mini caches' area
//  (`_TinyLFUMinis`: a use ring and four mini caches; ghostSlots counts all three).
//
//  Ghost (S3-FIFO; TinyLFU after its sketch): a FIFO of the hashes of the last
//  `ghostLength` records evicted from the small queue (window), kept as a 4-way set-associative table of UInt64
//  entries `hash << 32 | tick`, where tick is the ghost clock (header) after the
//  insertion, never 0 (0 = empty). An entry is in the FIFO while clock - tick <
//  ghostLength (wrapping arithmetic): inserting ages the oldest out without touching
//  it. Bucket = (mix(hash) & (ghostSlots / 4 - 1)) * 4: computed, never read, so no
//  byte of the ghost can send an access out of range; any content is only a hint.
//  An insertion into a full bucket replaces its oldest entry; a hit removes the entry.
//
//  Every value read from the segment is checked before use: slots against the
//  capacity, lengths against the record size, list walks against the capacity.

/// Sizes and offsets of one segment, computed from (record size, capacity, index kind)
/// and nothing else. Attaching recomputes them and compares with the header.
struct _Layout: Equatable, Sendable {
    static let magic: UInt64 = 0x3130_5552_4C4D_4853  // "SHMLRU01" little-endian
    /// 3: TinyLFU's policy area ends with its mini caches (`_TinyLFUMinis`) and
    /// header line 5 no longer holds a hill climber's words. 2: the eviction policy
    /// (SIEVE hand, S3-FIFO queues and ghost), and the lock is `_SegmentLock`'s
    /// owner word (1 held a glibc robust mutex).
    static let version: UInt32 = 3
    static let headerSize = 512
    static let recordHeaderSize = 32
    static let maxRecordSize = (1 << 24) - 1
    static let maxCapacity = (1 << 30) - 1
    static let none: UInt32 = .max
    static let stateFree: UInt32 = 0
    static let stateLive: UInt32 = 1
    static let lengthMask: UInt32 = 0x00FF_FFFF
    /// Stamp bit 0: the record was used since it was last linked at the head.
    static let stampUsed: UInt64 = 1
    /// The stamp's low bits a policy may use (its own: Policy/); the time is above them.
    static let stampPolicyBits: UInt64 = 15
    /// S3-FIFO's stamp bits (`_S3FIFOPolicy`): the 2-bit frequency and the small-queue bit.
    static var stampFrequency: UInt64 { _S3FIFOPolicy.frequency }
    static var stampSmall: UInt64 { _S3FIFOPolicy.small }
    static let ghostWays = 4
    /// High half of `H.owner` for a ShmStore's data segment ("STOR").
    static let ownerTagStore: UInt64 = 0x5354_4F52 << 32

    // Header field offsets (bytes from the segment's start).
    enum H {
        static let magic = 0  // UInt64
        static let version = 8
        static let headerSize = 12
        static let recordSize = 16
        static let stride = 20
        static let capacity = 24
        static let indexKind = 28
        static let indexOffset = 32  // UInt64
        static let indexSlots = 40
        static let indexBits = 44
        static let recordsOffset = 48  // UInt64
        static let segmentSize = 56  // UInt64
        static let lock = 64  // UInt64 owner word; the line's 64 bytes reserved
        static let lockReserved = 64
        /// The room a glibc robust mutex may take (one line): `_RobustMutex`, which
        /// the store's lock table still uses, checks against it.
        static let mutexReserved = 64
        static let count = 128
        static let freeHead = 132
        static let lruHead = 136
        static let lruTail = 140
        static let freeCount = 144
        static let generation = 148
        static let changeSeq = 152
        static let changeWaiters = 156
        static let createdAt = 160  // UInt64
        static let highWater = 168  // slots below it have been used at least once
        static let sieveHand = 172  // SIEVE: the next record the hand looks at (none: the tail)
        static let smallTail = 176  // S3-FIFO: the small queue's last record (none: empty)
        static let smallCount = 180  // S3-FIFO: records in the small queue
        static let ghostClock = 184  // S3-FIFO: ghost insertions, wrapping
        static let s3Evicted = 188  // S3-FIFO: 1 once it has evicted (until then a full small queue admits to main)
        static let indexSeq = 192
        static let statInserts = 256  // UInt64 each
        static let statUpdates = 264
        static let statDeletes = 272
        static let statEvictions = 280
        static let statRecoveries = 288
        static let statPromotions = 296
        static let statHits = 304
        static let statMisses = 312
        // Line 5: TinyLFU's adaptive state (under the lock; see _TinyLFUPolicy).
        static let windowTarget = 320  // TinyLFU: the window's target size (the mini caches move it)
        static let sketchAdds = 324  // TinyLFU: sketch increments since its last ageing
        // 328..<384: zero, reserved (version 2: the hill climber's step, rate and sample counts).
        static let policy = 384  // 0 LRU/CLOCK, 1 SIEVE, 2 S3-FIFO, 3 TinyLFU
        static let ghostSlots = 388  // UInt32: the policy area's 8-byte words (S3-FIFO ghost, TinyLFU sketch then ghost); else 0
        static let ghostOffset = 392  // UInt64
        static let smallTarget = 400  // S3-FIFO: the small queue's share of the capacity
        static let ghostLength = 404  // S3-FIFO: hashes the ghost FIFO remembers
        /// UInt64: 0, or `ownerTagStore | key` when the segment is the data
        /// segment of the ShmStore whose store segment has that key.
        static let owner = 448
        static let reserved = 456  // up to headerSize: free for later layout versions
    }

    // Record field offsets (bytes from the record's start).
    enum R {
        static let prev = 0
        static let next = 4
        static let hash = 8
        static let share = 12
        static let seq = 16
        static let meta = 20
        static let stamp = 24
        static let payload = 32
    }

    let recordSize: Int
    let capacity: Int
    let indexKind: ShmLRU.IndexKind
    let stride: Int
    let indexOffset: Int
    let indexSlots: Int
    let indexBits: Int
    let policy: ShmLRU.EvictionPolicy
    let ghostOffset: Int
    let ghostSlots: Int
    /// S3-FIFO: the small queue's target (10 % of the capacity) and the ghost's length (90 %).
    let smallTarget: Int
    let ghostLength: Int
    let recordsOffset: Int
    let totalSize: Int

    /// The layout for these parameters, or nil if they are out of range or overflow.
    init?(recordSize: Int, capacity: Int, indexKind: ShmLRU.IndexKind, policy: ShmLRU.EvictionPolicy = .lru) {
        guard recordSize >= 1, recordSize <= _Layout.maxRecordSize, capacity >= 1, capacity <= _Layout.maxCapacity
        else { return nil }
        self.recordSize = recordSize
        self.capacity = capacity
        self.indexKind = indexKind
        stride = (_Layout.recordHeaderSize + recordSize + 7) & ~7
        indexBits = Int.bitWidth - capacity.leadingZeroBitCount  // enough bits for slot + 1 <= capacity
        switch indexKind {
        case .shared:
            indexOffset = _Layout.headerSize
            indexSlots = max(16, 2 * capacity)
        case .processLocal:
            indexOffset = 0
            indexSlots = 0
        }
        self.policy = policy
        let indexEnd = _Layout.headerSize + indexSlots * 4
        ghostOffset = (indexEnd + 63) & ~63
        let area = policy.room.area(capacity: capacity)  // the policy's (Policy/)
        smallTarget = area.smallTarget
        ghostLength = area.ghostLength
        ghostSlots = area.words
        recordsOffset = ghostOffset + ghostSlots * 8
        let (records, overflow1) = capacity.multipliedReportingOverflow(by: stride)
        let (total, overflow2) = recordsOffset.addingReportingOverflow(records)
        guard !overflow1, !overflow2 else { return nil }
        totalSize = total
    }

    /// The largest capacity whose layout fits `byteCount` bytes (0 if none).
    static func capacity(
        fitting byteCount: Int, recordSize: Int, indexKind: ShmLRU.IndexKind, policy: ShmLRU.EvictionPolicy = .lru
    ) -> Int {
        guard let one = _Layout(recordSize: recordSize, capacity: 1, indexKind: indexKind, policy: policy),
            byteCount >= one.totalSize
        else { return 0 }
        let perRecord = one.stride + (indexKind == .shared ? 8 : 0) + (8 * policy.room.area(capacity: 1 << 20).words) >> 20
        var guess = min(maxCapacity, max(1, (byteCount - headerSize) / perRecord))
        while guess > 1,
            (_Layout(recordSize: recordSize, capacity: guess, indexKind: indexKind, policy: policy)?.totalSize ?? .max) > byteCount
        {
            guess -= 1
        }
        while guess < maxCapacity,
            let next = _Layout(recordSize: recordSize, capacity: guess + 1, indexKind: indexKind, policy: policy),
            next.totalSize <= byteCount
        {
            guess += 1
        }
        return guess
    }

    /// Byte offset of a record (slot must be < capacity).
    @inline(__always) func recordOffset(_ slot: UInt32) -> Int { recordsOffset &+ Int(slot) &* stride }

    /// The slot of a record offset, or nil if the offset is not the start of a record.
    func slot(atOffset offset: Int) -> UInt32? {
        guard offset >= recordsOffset, offset < totalSize else { return nil }
        let delta = offset - recordsOffset
        guard delta % stride == 0 else { return nil }
        let slot = delta / stride
        return slot < capacity ? UInt32(slot) : nil
    }

    /// The mask of a stamp's time bits under this layout's policy.
    var stampTimeMask: UInt64 { policy.room.timeMask }
    /// The mask of a stamp's use bits under this layout's policy: S3-FIFO's 2-bit
    /// frequency, else the used bit alone (bit 1 is then part of the time).
    var stampMarkMask: UInt64 { policy.room.markMask }

    var tagMask: UInt32 { indexBits >= 32 ? 0 : UInt32.max >> UInt32(indexBits) }
    var slotMask: UInt32 { indexBits >= 32 ? .max : (1 << UInt32(indexBits)) - 1 }
}

extension _Layout {
    /// The header's immutable fields, each listed once: `create` writes them
    /// (`_RawFields.write`), attach and `probe` compare a segment with them (the
    /// first mismatch names the field), the corruption harness patches them. The
    /// magic (published last) and the lock line are not here; the list state,
    /// statistics and policy words below line 0 are written under the lock.
    static let fields: [_HeaderField<_Layout>] = [
        .u32("version", H.version) { _ in UInt64(version) },
        .u32("headerSize", H.headerSize) { _ in UInt64(headerSize) },
        .u32("recordSize", H.recordSize) { UInt64($0.recordSize) },
        .u32("stride", H.stride) { UInt64($0.stride) },
        .u32("capacity", H.capacity) { UInt64($0.capacity) },
        .u32("indexKind", H.indexKind) { $0.indexKind == .shared ? 1 : 0 },
        .u64("indexOffset", H.indexOffset) { UInt64($0.indexOffset) },
        .u32("indexSlots", H.indexSlots) { UInt64($0.indexSlots) },
        .u32("indexBits", H.indexBits) { UInt64($0.indexBits) },
        .u64("recordsOffset", H.recordsOffset) { UInt64($0.recordsOffset) },
        .u64("segmentSize", H.segmentSize) { UInt64($0.totalSize) },
        .u32("policy", H.policy) { UInt64($0.policy.code) },
        .u32("ghostSlots", H.ghostSlots) { UInt64($0.ghostSlots) },
        .u64("ghostOffset", H.ghostOffset) { UInt64($0.ghostOffset) },
        .u32("smallTarget", H.smallTarget) { UInt64($0.smallTarget) },
        .u32("ghostLength", H.ghostLength) { UInt64($0.ghostLength) },
    ]

    /// The layout a header's inputs (header size, record size, capacity, index
    /// kind, policy) describe, read through `word`; nil when one is out of range.
    /// Every other field follows from these: compare them with `fields`.
    static func described(by word: (Int) -> UInt32) -> _Layout? {
        let kind = word(H.indexKind)
        guard Int(word(H.headerSize)) == headerSize, kind <= 1, let policy = ShmLRU.EvictionPolicy(code: word(H.policy)) else {
            return nil
        }
        return _Layout(
            recordSize: Int(word(H.recordSize)), capacity: Int(word(H.capacity)), indexKind: kind == 1 ? .shared : .processLocal,
            policy: policy)
    }
}

/// The murmur3 finalizer: a bijection on UInt32 that scatters keys over the index
/// (and the bench's keys: `package`, one copy for both).
@inlinable @inline(__always)
package func _mix32(_ value: UInt32) -> UInt32 {
    var h = value
    h ^= h >> 16
    h &*= 0x85eb_ca6b
    h ^= h >> 13
    h &*= 0xc2b2_ae35
    h ^= h >> 16
    return h
}
