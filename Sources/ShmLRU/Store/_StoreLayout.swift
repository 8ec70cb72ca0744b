import CShm

// The ShmStore layouts: the store segment (found by the store's key) and the
// store's record payload inside the ShmLRU data segment. This file is the only
// place that knows a store offset; the ShmLRU data segment's own layout is in
// LRU/_Layout.swift and is not changed by the store.
//
//  Store segment (key = the store's key)
//  byte 0
//  +--------------+-----------------------------+------------------------+---------------------------+------------------+
//  | header 512 B | lock table                  | waiter table           | change log (ring)         | value heap       |
//  |              | lockSlots x lockSlotStride  | waiterSlots x 48 B     | logCapacity x logStride   | (memory mode     |
//  |              |                             |                        |                           |  only; see below)|
//  +--------------+-----------------------------+------------------------+---------------------------+------------------+
//
//  Header
//   line 0-1 immutable after init: magic "SHMSTOR1", version, header size, the data
//           segment's key, record size, lock slots, waiter slots, log capacity and
//           stride, section offsets, total size, default max age (ns, 0 = none),
//           flags (bit 0: a get renews the age; bit 1: refuse when
//           full; bit 2: the data segment has one spare record for
//           updates), probe limit, negative TTL and stale-if-error window of
//           get-or-load (ns, 0 = none), promotion interval (UInt64 ns at 104;
//           0 = exact LRU, every get under the lock; else gets are lock-free),
//           value heap: offset (UInt64 at 112, 0 = no heap), chunk count (UInt32
//           at 120), chunk size (UInt32 at 124); all three 0 for a store sized by
//           records (`Configuration(capacity:recordSize:)`). Each field is listed
//           once, with its name, in `_StoreLayout.identityFields` (written first,
//           before the data segment exists) or `_StoreLayout.fields`: create
//           writes those tables and attach compares a segment with them
//   line 2  the lock table's robust process-shared mutex (guards the waiter table,
//           slot bindings and every lock-word change but the two fast CASes)
//   line 3  change log: head (UInt64, the next sequence to write), log word (UInt32
//           futex word, bumped after every append), log waiters (UInt32)
//   line 4  the record hash's SipHash-1-3 key (two UInt64 at 256 and 264, drawn
//           at random by create, immutable; see _StableHash.swift)
//   line 5-7 reserved (zero)
//
//  Lock slot (lockSlotStride = 64 + lockKeyCapacity, lockKeyCapacity = recordSize
//  rounded up to 8), bound to one key from its first lock until it is idle and a
//  new key finds no free slot (layout 5; before, unbound at every release):
//   +0  state   UInt32  0 never used, 1 bound, 2 released (a tombstone for probing)
//   +4  kind    UInt32  0 a key's lock, 1 its get-or-load lock
//   +8  keyHash UInt64  FNV-1a 64 of the UTF-8 key: where probing starts, and a
//                       quick reject; never the identity on its own
//   +16 keyLen  UInt32  (<= lockKeyCapacity)
//   +20 flags   UInt32  bit 0: the previous holder died (told to the next taker)
//   +24 handOff UInt32  waiter entry+1 a hand-off under the table mutex is granting
//                       (0 otherwise): a repair completes a hand-off cut short
//   +28 gen     UInt32  binding generation, a seqlock: odd while the slot is bound
//                       or unbound; lock-free lockers check it around their key
//                       comparison and their read of the word
//   +32 start   UInt64  holder record: the holder's start time (/proc/PID/stat
//                       field 22), valid while +40 equals the word's token
//   +40 token   UInt64  holder record: the token +32 belongs to (0 while written)
//   +48 arrival UInt64  next arrival number (FIFO order of waiters)
//   +56 word    UInt64  the lock word: bits 0-31 holder PID (0: free), 32-61 grant
//                       counter (a token is PID + counter), bit 62 closed (being
//                       unbound), bit 63 slow (waiters, or a death to tell: lock and
//                       unlock go through the table mutex). Free -> held and
//                       held -> free are one CAS each when slow is clear.
//   +64 key     the UTF-8 key, keyLen bytes
//  A lock's identity is (kind, keyLen, key bytes), compared in full: two keys whose
//  hashes collide probe on to different slots, never share one lock. Why the
//  bytes and not a second hash: a 128-bit identity still lets a crafted or unlucky
//  pair of keys share a lock; the bytes cost lockKeyCapacity per slot (256 KB for
//  256 slots of 1 KB records), and any key a record can hold fits.
//
//  Waiter entry (48 B), one per blocked lock call, per process queue of async
//  lock calls on one key, or per doorbell:
//   +0  tag      UInt32  slot+1 of the lock waited for; 0 free; 0xFFFFFFFF a doorbell
//   +4  pid      Int32
//   +8  start    UInt64
//   +16 arrival  UInt64  its place in the slot's queue
//   +24 word     UInt32  futex word: bumped when the entry is granted or rung
//   +28 doorbell UInt32  index+1 of the entry whose word a grant rings (0: this one);
//                        an async waiter's process sleeps on one doorbell
//   +32 grant    UInt64  the token of the lock handed to this entry (0: waiting)
//   +40 flags    UInt32  bit 0: the granted lock's previous holder died; bit 31
//                        set: a release rang this entry leaving the free word whose
//                        grant counter is bits 1-30 (the entry may take that word
//                        with one CAS, without the table mutex)
//   +44 queued   UInt32  lock calls of its process this entry stands for (>= 1)
//  A release that finds slow set hands the lock to the earliest live waiter
//  (FIFO): under the table mutex it writes the holder record, the word and then
//  the entry's grant, and rings one word; nobody else wakes.
//
//  Change-log entry (stride = 16 + recordSize, rounded up to 8). Entry s lives at
//  s % logCapacity; written under the data segment's lock:
//   +0  seq     UInt64  s + 1 once complete; 0 while being written
//   +8  kind    UInt32  1 set, 2 removed, 3 expired, 4 evicted
//   +12 length  UInt32  payload length (<= recordSize)
//   +16 payload         a store record payload (below): header, key, value
//
//  Store record payload (inside an ShmLRU record of the data segment, and in a
//  change-log entry; read and written only through _StorePayload.swift):
//   +0  keyLen    UInt32
//   +4  flags     UInt32  bit 0: spilled (memory mode only; ignored without a heap)
//   +8  expiresAt UInt64  CLOCK_MONOTONIC ns; 0 never
//   +16 maxAge    UInt64  ns; the age a renewing get restores (0 never)
//   +24 key bytes (UTF-8), then the value bytes, or for a spilled value its
//       24-byte descriptor:
//         +0 length UInt64 (value bytes)  +8 first chunk UInt32  +12 chunk count UInt32
//         +16 stamp UInt64 (every chunk of the value carries it)
//
//  Value heap (memory mode: `Configuration(memory:maxValueSize:)`), at the
//  header's heap offset (64-aligned, after the change log). Guarded by the DATA
//  segment's lock (every store write already runs inside it), not by the lock
//  table's mutex: a chunk chain changes together with the record naming it.
//  +----------------------+---------+---------+-----+-------------------+
//  | heap header 128 B    | chunk 0 | chunk 1 | ... | chunk count - 1   |
//  +----------------------+---------+---------+-----+-------------------+
//   line 0 immutable: +0 chunk count UInt32, +4 chunk size UInt32 (1024),
//          +8 max value size UInt64, +16 memory budget UInt64
//   line 1 under the data lock: +64 free head UInt32 (0xFFFFFFFF: none),
//          +68 free count UInt32, +72 busy UInt32 (non-zero while a holder
//          changes the heap: a locker that finds it set rebuilds the heap),
//          +76 generation UInt32 (the data segment's rebuild generation the
//          heap was last consistent with: a data-segment repair also makes the
//          next locker rebuild the heap), +80 last stamp issued UInt64
//  Chunk (1024 B): +0 stamp UInt64 (the value's; written first, then a release
//  fence, then the rest: a per-chunk seqlock), +8 next UInt32 (0xFFFFFFFF: last;
//  on the free list: the next free chunk), +12 used UInt32 (payload bytes),
//  +16 payload, 1008 bytes. A value of n bytes takes ceil(n / 1008) chunks.
//  A value spills when 24 + key + value exceeds the record (256 B in memory mode).
//
//  Every field read from either segment is checked before use: slot numbers
//  against the table sizes, lengths against the record size, key lengths against
//  the payload length.

struct _StoreLayout: Equatable, Sendable {
    static let magic: UInt64 = 0x3152_4F54_534D_4853  // "SHMSTOR1" little-endian
    /// 5: one lock word per lock slot (lock-free uncontended locks), slots stay
    /// bound; 4: keyed record hash (SipHash-1-3, seed in the header); 3 hashed keys with FNV-1a 32.
    static let version: UInt32 = 5
    static let headerSize = 512
    static let lockSlotHeaderSize = 64
    static let waiterSize = 48
    static let doorbellTag: UInt32 = 0xFFFF_FFFF
    static let logEntryHeaderSize = 16
    static let payloadHeaderSize = 24
    static let maxTableSlots = 1 << 20
    static let maxLogCapacity = 1 << 20

    enum H {
        static let magic = 0  // UInt64
        static let version = 8
        static let headerSize = 12
        static let lruKey = 16
        static let recordSize = 20
        static let lockSlots = 24
        static let waiterSlots = 28
        static let logCapacity = 32
        static let logStride = 36
        static let lockTableOffset = 40  // UInt64
        static let waiterTableOffset = 48  // UInt64
        static let logOffset = 56  // UInt64
        static let totalSize = 64  // UInt64
        static let maxAge = 72  // UInt64
        static let flags = 80
        static let probeLimit = 84
        static let negativeTTL = 88  // UInt64
        static let staleIfError = 96  // UInt64
        static let promotion = 104  // UInt64
        static let heapOffset = 112  // UInt64 (0: no value heap)
        static let heapChunks = 120
        static let chunkSize = 124
        static let mutex = 128  // 64 bytes
        static let logHead = 192  // UInt64
        static let logWord = 200
        static let logWaiters = 204
        static let hashSeed0 = 256  // UInt64
        static let hashSeed1 = 264  // UInt64
    }

    enum L {
        static let state = 0
        static let kind = 4
        static let keyHash = 8
        static let keyLength = 16
        static let flags = 20
        static let handOff = 24
        static let generation = 28
        static let start = 32
        static let token = 40
        static let arrival = 48
        static let word = 56
        static let key = 64
    }

    enum W {
        static let slot = 0
        static let pid = 4
        static let start = 8
        static let arrival = 16
        static let word = 24
        static let doorbell = 28
        static let grant = 32
        static let flags = 40
        static let queued = 44
    }

    enum E {
        static let seq = 0
        static let kind = 8
        static let length = 12
        static let payload = 16
    }

    enum P {
        static let keyLength = 0
        static let flags = 4
        static let expiresAt = 8
        static let maxAge = 16
        static let key = 24
    }

    static let flagRenewOnGet: UInt32 = 1
    static let flagRefuseWhenFull: UInt32 = 2
    /// The data segment has one record more than the store's capacity: an update
    /// is written there before the old record is freed (ShmLRU+Replace.swift).
    static let flagSpareRecord: UInt32 = 4
    /// Payload flags: the value lives in the value heap (memory mode).
    static let payloadSpilled: UInt32 = 1
    static let knownFlags: UInt32 = 7
    /// `_validateHeader`'s capacity when the header has `flagSpareRecord` (attach then reads the real one).
    static let spareRecordMarker = -1
    static let slotEmpty: UInt32 = 0
    static let slotBound: UInt32 = 1
    static let slotReleased: UInt32 = 2
    static let lockFlagHolderDied: UInt32 = 1

    /// The header's promotion field for a policy: its interval in ns, 0 for exact LRU.
    static func promotionNanoseconds(_ promotion: ShmLRU.Promotion) -> UInt64 {
        switch promotion {
        case .onEveryRead: 0
        case .atMostEvery(let interval): UInt64(max(0, _nanoseconds(interval)))
        }
    }

    let recordSize: Int
    let lockSlots: Int
    /// Bytes of a lock slot (64 + lockKeyCapacity) and the longest lock key.
    let lockSlotStride: Int
    let lockKeyCapacity: Int
    let waiterSlots: Int
    let logCapacity: Int
    let logStride: Int
    let lockTableOffset: Int
    let waiterTableOffset: Int
    let logOffset: Int
    /// The value heap's header offset and chunk count (0, 0: no heap).
    let heapOffset: Int
    let heapChunks: Int
    let totalSize: Int

    init?(recordSize: Int, lockSlots: Int, waiterSlots: Int, logCapacity: Int, heapChunks: Int = 0) {
        guard recordSize > _StoreLayout.payloadHeaderSize, recordSize <= _Layout.maxRecordSize,
            (1..._StoreLayout.maxTableSlots).contains(lockSlots), (1..._StoreLayout.maxTableSlots).contains(waiterSlots),
            (1..._StoreLayout.maxLogCapacity).contains(logCapacity), (0..._ValueHeap.maxChunks).contains(heapChunks)
        else { return nil }
        self.recordSize = recordSize
        self.lockSlots = lockSlots
        lockKeyCapacity = (recordSize + 7) & ~7
        lockSlotStride = _StoreLayout.lockSlotHeaderSize + lockKeyCapacity
        self.waiterSlots = waiterSlots
        self.logCapacity = logCapacity
        logStride = (_StoreLayout.logEntryHeaderSize + recordSize + 7) & ~7
        lockTableOffset = _StoreLayout.headerSize
        waiterTableOffset = (lockTableOffset + lockSlots * lockSlotStride + 63) & ~63
        logOffset = (waiterTableOffset + waiterSlots * _StoreLayout.waiterSize + 63) & ~63
        let (log, overflow1) = logCapacity.multipliedReportingOverflow(by: logStride)
        let (total, overflow2) = logOffset.addingReportingOverflow(log)
        guard !overflow1, !overflow2 else { return nil }
        self.heapChunks = heapChunks
        if heapChunks == 0 {
            heapOffset = 0
            totalSize = total
        } else {
            heapOffset = (total + 63) & ~63
            let (chunks, overflow3) = heapChunks.multipliedReportingOverflow(by: _ValueHeap.chunkSize)
            let (end, overflow4) = (heapOffset + _ValueHeap.headerSize).addingReportingOverflow(chunks)
            guard !overflow3, !overflow4 else { return nil }
            totalSize = end
        }
    }

    @inline(__always) func lockSlotOffset(_ slot: Int) -> Int { lockTableOffset &+ slot &* lockSlotStride }
    @inline(__always) func waiterOffset(_ index: Int) -> Int { waiterTableOffset &+ index &* _StoreLayout.waiterSize }
    @inline(__always) func logEntryOffset(_ sequence: UInt64) -> Int {
        logOffset &+ Int(sequence % UInt64(logCapacity)) &* logStride
    }
}

/// What the store header holds besides its magic, raw: the layout, the data
/// segment's key, the record hash's seed and the stored settings. Written by
/// `create` through the two field tables, compared with them by attach.
struct _StoreHeader: Sendable {
    var layout: _StoreLayout
    var dataKey: UInt32
    var seed: _SipKey
    var maxAge: UInt64 = 0
    var flags: UInt32 = 0
    var probeLimit: UInt32 = 0
    var promotion: UInt64 = 0
    var negativeTTL: UInt64 = 0
    var staleIfError: UInt64 = 0

    /// The header `create` writes for `c` (its data segment always has the spare record).
    init(layout: _StoreLayout, dataKey: UInt32, seed: _SipKey, configuration c: ShmStore.Configuration) {
        self.layout = layout
        self.dataKey = dataKey
        self.seed = seed
        maxAge = c.maxAge.map { UInt64(_nanoseconds($0)) } ?? 0
        flags =
            (c.renewsAgeOnGet ? _StoreLayout.flagRenewOnGet : 0) | (c.whenFull == .refuse ? _StoreLayout.flagRefuseWhenFull : 0)
            | _StoreLayout.flagSpareRecord
        probeLimit = UInt32(c.probeLimit)
        promotion = _StoreLayout.promotionNanoseconds(c.promotion)
        negativeTTL = c.negativeTTL.map { UInt64(max(1, _nanoseconds($0))) } ?? 0
        staleIfError = c.staleIfError.map { UInt64(max(1, _nanoseconds($0))) } ?? 0
    }

    /// The header whose layout inputs and settings `header` holds (raw: `layout`
    /// still to be compared with the rest through the tables, the settings to be
    /// range-checked); nil when the inputs are out of range.
    init?(reading header: _HeaderCheck) {
        guard Int(header.u32(_StoreLayout.H.headerSize)) == _StoreLayout.headerSize,
            let layout = _StoreLayout(
                recordSize: Int(header.u32(_StoreLayout.H.recordSize)), lockSlots: Int(header.u32(_StoreLayout.H.lockSlots)),
                waiterSlots: Int(header.u32(_StoreLayout.H.waiterSlots)), logCapacity: Int(header.u32(_StoreLayout.H.logCapacity)),
                heapChunks: Int(header.u32(_StoreLayout.H.heapChunks)))
        else { return nil }
        self.layout = layout
        dataKey = header.u32(_StoreLayout.H.lruKey)
        seed = _SipKey(k0: header.u64(_StoreLayout.H.hashSeed0), k1: header.u64(_StoreLayout.H.hashSeed1))
        maxAge = header.u64(_StoreLayout.H.maxAge)
        flags = header.u32(_StoreLayout.H.flags)
        probeLimit = header.u32(_StoreLayout.H.probeLimit)
        promotion = header.u64(_StoreLayout.H.promotion)
        negativeTTL = header.u64(_StoreLayout.H.negativeTTL)
        staleIfError = header.u64(_StoreLayout.H.staleIfError)
    }
}

extension _StoreLayout {
    /// The fields `create` writes first, before the data segment exists: a
    /// creator killed after them leaves a half-made store (no magic) that names
    /// every segment it made (ShmStore+Open.swift). Each field of the store
    /// header is listed once, here or in `fields`.
    static let identityFields: [_HeaderField<_StoreHeader>] = [
        .u32("version", H.version) { _ in UInt64(version) },
        .u32("headerSize", H.headerSize) { _ in UInt64(headerSize) },
        .u64("hashSeed0", H.hashSeed0) { $0.seed.k0 },
        .u64("hashSeed1", H.hashSeed1) { $0.seed.k1 },
        .u32("dataKey", H.lruKey) { UInt64($0.dataKey) },
    ]

    /// The fields `create` writes once the data segment is made and claimed:
    /// the layout (attach recomputes it from the record size, table sizes and
    /// chunk count and names the first field that differs) and the settings.
    static let fields: [_HeaderField<_StoreHeader>] = [
        .u32("recordSize", H.recordSize) { UInt64($0.layout.recordSize) },
        .u32("lockSlots", H.lockSlots) { UInt64($0.layout.lockSlots) },
        .u32("waiterSlots", H.waiterSlots) { UInt64($0.layout.waiterSlots) },
        .u32("logCapacity", H.logCapacity) { UInt64($0.layout.logCapacity) },
        .u32("logStride", H.logStride) { UInt64($0.layout.logStride) },
        .u64("lockTableOffset", H.lockTableOffset) { UInt64($0.layout.lockTableOffset) },
        .u64("waiterTableOffset", H.waiterTableOffset) { UInt64($0.layout.waiterTableOffset) },
        .u64("logOffset", H.logOffset) { UInt64($0.layout.logOffset) },
        .u64("totalSize", H.totalSize) { UInt64($0.layout.totalSize) },
        .u64("maxAge", H.maxAge) { $0.maxAge },
        .u32("flags", H.flags) { UInt64($0.flags) },
        .u32("probeLimit", H.probeLimit) { UInt64($0.probeLimit) },
        .u64("negativeTTL", H.negativeTTL) { $0.negativeTTL },
        .u64("staleIfError", H.staleIfError) { $0.staleIfError },
        .u64("promotion", H.promotion) { $0.promotion },
        .u64("heapOffset", H.heapOffset) { UInt64($0.layout.heapOffset) },
        .u32("heapChunks", H.heapChunks) { UInt64($0.layout.heapChunks) },
        .u32("chunkSize", H.chunkSize) { $0.layout.heapChunks > 0 ? UInt64(_ValueHeap.chunkSize) : 0 },
    ]
}

/// Typed access to the store segment. Values read come back raw: check them.
struct _StoreSegment: _RawFields, @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let layout: _StoreLayout

    var mutex: UnsafeMutableRawPointer { base + _StoreLayout.H.mutex }

    // Lock slots
    @inline(__always) func slot(_ slot: Int, _ field: Int) -> Int { layout.lockSlotOffset(slot) &+ field }
    // Waiter entries
    @inline(__always) func waiter(_ index: Int, _ field: Int) -> Int { layout.waiterOffset(index) &+ field }
}
