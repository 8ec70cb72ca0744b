// The ShmLRU segment layout. This file is the only place that knows an offset.
//
//  byte 0                                                           segment end
//  +--------------+-------------------------+-----------------------------------+
//  | header 512 B | index: UInt32 x slots   | records: capacity x stride        |
//  +--------------+-------------------------+-----------------------------------+
//                 ^ indexOffset (0 bytes    ^ recordsOffset (64-aligned)
//                   for a process-local index)
//
//  Header (each line of 64 bytes has one writer pattern, to keep false sharing off
//  the read path):
//   line 0   immutable after init: magic, layout version, header size, record size,
//            stride, capacity, index kind, index offset/slots/bits, records offset,
//            laid-out size, ready flag
//   line 1   the process-shared robust pthread mutex (40 bytes on glibc x86-64/arm64)
//   line 2   list state, written under the lock: count, free head, LRU head and tail,
//            free count, generation (bumped by recovery), change sequence and its
//            waiter count (futex words for listeners), creation time, high-water
//            mark (slots at or above it were never used: init touches no record)
//   line 3   index sequence: odd while the index is being reshaped (a reader that
//            misses while it moved retries)
//   line 4-5 statistics (UInt64): inserts, updates, deletes, evictions, recoveries,
//            promotions
//   line 6   owner (UInt64): 0, or "STOR" << 32 | the key of the ShmStore whose
//            data segment this is (ShmStore checks it before using or removing it)
//   line 6-7 the rest reserved (zero)
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
//                       promotion marks it lock-free; eviction then gives it a second chance)
//   +32 payload, recordSize bytes (values are binary; their length is in meta)
//
//  Index (shared kind): open addressing with linear probing over `indexSlots`
//  (2 x capacity) UInt32 entries; 0 is empty, otherwise `tag << indexBits | slot + 1`
//  where the tag is the low bits of the mixed hash, so most probes are settled
//  without touching a record. Home = (mix(hash) * indexSlots) >> 32. Deletion shifts
//  entries back (no tombstones), inside an odd index sequence.
//
//  Every value read from the segment is checked before use: slots against the
//  capacity, lengths against the record size, list walks against the capacity.

/// Sizes and offsets of one segment, computed from (record size, capacity, index kind)
/// and nothing else. Attaching recomputes them and compares with the header.
struct _Layout: Equatable, Sendable {
    static let magic: UInt64 = 0x3130_5552_4C4D_4853  // "SHMLRU01" little-endian
    static let version: UInt32 = 1
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
        static let mutex = 64  // 64 bytes reserved
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
        static let indexSeq = 192
        static let statInserts = 256  // UInt64 each
        static let statUpdates = 264
        static let statDeletes = 272
        static let statEvictions = 280
        static let statRecoveries = 288
        static let statPromotions = 296
        /// UInt64: 0, or `ownerTagStore | key` when the segment is the data
        /// segment of the ShmStore whose store segment has that key.
        static let owner = 384
        static let reserved = 392  // up to headerSize: free for later layout versions
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
    let recordsOffset: Int
    let totalSize: Int

    /// The layout for these parameters, or nil if they are out of range or overflow.
    init?(recordSize: Int, capacity: Int, indexKind: ShmLRU.IndexKind) {
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
        let indexEnd = _Layout.headerSize + indexSlots * 4
        recordsOffset = (indexEnd + 63) & ~63
        let (records, overflow1) = capacity.multipliedReportingOverflow(by: stride)
        let (total, overflow2) = recordsOffset.addingReportingOverflow(records)
        guard !overflow1, !overflow2 else { return nil }
        totalSize = total
    }

    /// The largest capacity whose layout fits `byteCount` bytes (0 if none).
    static func capacity(fitting byteCount: Int, recordSize: Int, indexKind: ShmLRU.IndexKind) -> Int {
        guard let one = _Layout(recordSize: recordSize, capacity: 1, indexKind: indexKind), byteCount >= one.totalSize
        else { return 0 }
        let perRecord = one.stride + (indexKind == .shared ? 8 : 0)
        var guess = min(maxCapacity, max(1, (byteCount - headerSize) / perRecord))
        while guess > 1, (_Layout(recordSize: recordSize, capacity: guess, indexKind: indexKind)?.totalSize ?? .max) > byteCount {
            guess -= 1
        }
        while guess < maxCapacity,
            let next = _Layout(recordSize: recordSize, capacity: guess + 1, indexKind: indexKind), next.totalSize <= byteCount
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

    var tagMask: UInt32 { indexBits >= 32 ? 0 : UInt32.max >> UInt32(indexBits) }
    var slotMask: UInt32 { indexBits >= 32 ? .max : (1 << UInt32(indexBits)) - 1 }
}

/// The murmur3 finalizer: a bijection on UInt32 that scatters keys over the index.
@inline(__always)
func _mix32(_ value: UInt32) -> UInt32 {
    var h = value
    h ^= h >> 16
    h &*= 0x85eb_ca6b
    h ^= h >> 13
    h &*= 0xc2b2_ae35
    h ^= h >> 16
    return h
}
