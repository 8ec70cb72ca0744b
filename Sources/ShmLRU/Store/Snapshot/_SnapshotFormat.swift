// The snapshot file format: the one owner of its bytes. `_SnapshotEncoder`
// writes every field and `_SnapshotReader` (_SnapshotReader.swift) reads every
// field through the offsets and sizes named here; nothing else knows them.
//
//  byte 0
//  +-------------+---------+---------+ ... +---------+---------+
//  | header 160B | block 0 | block 1 |     | block N | trailer |
//  +-------------+---------+---------+ ... +---------+---------+
//
// All integers little-endian.
//
//  Header (160 bytes; written last, over a placeholder, once the counts are known)
//   +0   magic u64 "SHMSNAP1"       +8   format version u32    +12  header size u32
//   +16  policy u32 (ShmLRU code)   +20  flags u32 (1 renews on get, 2 refuses when
//                                        full, 4 sized by memory; others zero)
//   +24  written at, CLOCK_REALTIME ns (u64: the remaining lives are counted from it)
//   +32  capacity u64   +40 record size u32   +44 probe limit u32
//   +48  memory u64     +56 max value size u64
//   +64  max age ns u64 +72 promotion interval ns u64 (0: on every read)
//   +80  negative TTL ns u64   +88 stale-if-error ns u64
//   +96  lock slots u32  +100 lock waiters u32  +104 change log capacity u32
//   +108 reserved u32 (zero)
//   +112 entry count u64   +120 block count u64
//   +128 reserved (zero) up to +156
//   +156 CRC-32C of bytes 0..<156
//
//  Block (20-byte head, then `length` bytes of entries)
//   +0 magic u32 "SBLK"  +4 block index u32 (0, 1, …)  +8 entries u32  +12 length u32
//   +16 CRC-32C of bytes +4..<+16 and of the entries: a block moved, duplicated or
//       cut changes its index or its bytes
//
//  Entry (28-byte head, then the key's UTF-8 bytes, then the value's)
//   +0 key length u32   +4 value length u32
//   +8 remaining life ns u64 at `written at` (0: never expires)
//   +16 max age ns u64 (0: none; renewed on get with renewsAgeOnGet)
//   +24 uses u32: how much the policy counted it (S3-FIFO frequency 0-3, LRU/SIEVE
//       0 or 1); bits above 7 zero
//
//  Trailer (24 bytes)
//   +0 magic u32 "SEND"  +4 block count u32  +8 entry count u64
//   +16 CRC-32C of every byte from the first block to +16 of the trailer
//   +20 reserved u32 (zero)
//
// Entries come in the policy's order of preference, most valuable first, so a
// restore that cannot take them all keeps the best. The file's bytes are checked
// at three levels: the header's CRC (and its sizes), each block's CRC, and the
// trailer's CRC over everything after the header. CRC-32C (Castagnoli), computed
// eight bytes at a time (slicing-by-8).

enum _SnapshotFormat {
    static let magic: UInt64 = 0x3150_414E_534D_4853  // "SHMSNAP1" little-endian
    /// Version 1: this layout. A reader refuses a higher one (typed error).
    static let version: UInt32 = 1
    static let headerSize = 160
    static let blockHeadSize = 20
    static let entryHeadSize = 28
    static let trailerSize = 24
    static let blockMagic: UInt32 = 0x4B4C_4253  // "SBLK"
    static let trailerMagic: UInt32 = 0x444E_4553  // "SEND"
    /// A block is closed once its entries reach this many bytes (one large entry makes a block of its own).
    static let blockTarget = 256 << 10
    /// The largest block a reader accepts: an entry of a 16 MiB record, or a value of
    /// `maxValueSize` (a writer never makes a larger one: see `maxValueBytes`).
    static let maxBlockLength = Int(Int32.max)
    /// The largest value a snapshot holds.
    static let maxValueBytes = maxBlockLength - entryHeadSize - (1 << 24)

    static let flagRenewOnGet: UInt32 = 1
    static let flagRefuseWhenFull: UInt32 = 2
    static let flagMemory: UInt32 = 4
    static let knownFlags: UInt32 = 7

    enum H {
        static let magic = 0
        static let version = 8
        static let headerSize = 12
        static let policy = 16
        static let flags = 20
        static let writtenAt = 24
        static let capacity = 32
        static let recordSize = 40
        static let probeLimit = 44
        static let memory = 48
        static let maxValueSize = 56
        static let maxAge = 64
        static let promotion = 72
        static let negativeTTL = 80
        static let staleIfError = 88
        static let lockSlots = 96
        static let lockWaiters = 100
        static let changeLogCapacity = 104
        static let entryCount = 112
        static let blockCount = 120
        static let crc = 156
    }

    enum B {
        static let magic = 0
        static let index = 4
        static let entries = 8
        static let length = 12
        static let crc = 16
    }

    enum E {
        static let keyLength = 0
        static let valueLength = 4
        static let remaining = 8
        static let maxAge = 16
        static let uses = 24
    }

    enum T {
        static let magic = 0
        static let blockCount = 4
        static let entryCount = 8
        static let crc = 16
    }
}

/// What a snapshot's header says about the store it was taken from.
struct _SnapshotHeader: Equatable {
    var policy: ShmLRU.EvictionPolicy
    var flags: UInt32
    var writtenAt: UInt64
    var capacity: UInt64
    var recordSize: UInt32
    var probeLimit: UInt32
    var memory: UInt64
    var maxValueSize: UInt64
    var maxAge: UInt64
    var promotion: UInt64
    var negativeTTL: UInt64
    var staleIfError: UInt64
    var lockSlots: UInt32
    var lockWaiters: UInt32
    var changeLogCapacity: UInt32
    var entryCount: UInt64
    var blockCount: UInt64
}

/// One entry of a snapshot, as written and as read.
struct _SnapshotEntry: Equatable {
    var key: [UInt8]
    var value: [UInt8]
    /// Nanoseconds left at the snapshot's `writtenAt`; 0: never expires.
    var remaining: UInt64
    var maxAge: UInt64
    /// How much the policy counted it (0-3).
    var uses: UInt32

    /// The bytes it takes in a block.
    var encodedSize: Int { _SnapshotFormat.entryHeadSize + key.count + value.count }
}

/// Writes the format's parts into byte arrays; the caller writes them out in order.
enum _SnapshotEncoder {
    static func header(_ h: _SnapshotHeader) -> [UInt8] {
        typealias H = _SnapshotFormat.H
        var bytes = [UInt8](repeating: 0, count: _SnapshotFormat.headerSize)
        bytes.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: _SnapshotFormat.magic.littleEndian, toByteOffset: H.magic, as: UInt64.self)
            raw.storeBytes(of: _SnapshotFormat.version.littleEndian, toByteOffset: H.version, as: UInt32.self)
            raw.storeBytes(of: UInt32(_SnapshotFormat.headerSize).littleEndian, toByteOffset: H.headerSize, as: UInt32.self)
            raw.storeBytes(of: h.policy.code.littleEndian, toByteOffset: H.policy, as: UInt32.self)
            raw.storeBytes(of: h.flags.littleEndian, toByteOffset: H.flags, as: UInt32.self)
            raw.storeBytes(of: h.writtenAt.littleEndian, toByteOffset: H.writtenAt, as: UInt64.self)
            raw.storeBytes(of: h.capacity.littleEndian, toByteOffset: H.capacity, as: UInt64.self)
            raw.storeBytes(of: h.recordSize.littleEndian, toByteOffset: H.recordSize, as: UInt32.self)
            raw.storeBytes(of: h.probeLimit.littleEndian, toByteOffset: H.probeLimit, as: UInt32.self)
            raw.storeBytes(of: h.memory.littleEndian, toByteOffset: H.memory, as: UInt64.self)
            raw.storeBytes(of: h.maxValueSize.littleEndian, toByteOffset: H.maxValueSize, as: UInt64.self)
            raw.storeBytes(of: h.maxAge.littleEndian, toByteOffset: H.maxAge, as: UInt64.self)
            raw.storeBytes(of: h.promotion.littleEndian, toByteOffset: H.promotion, as: UInt64.self)
            raw.storeBytes(of: h.negativeTTL.littleEndian, toByteOffset: H.negativeTTL, as: UInt64.self)
            raw.storeBytes(of: h.staleIfError.littleEndian, toByteOffset: H.staleIfError, as: UInt64.self)
            raw.storeBytes(of: h.lockSlots.littleEndian, toByteOffset: H.lockSlots, as: UInt32.self)
            raw.storeBytes(of: h.lockWaiters.littleEndian, toByteOffset: H.lockWaiters, as: UInt32.self)
            raw.storeBytes(of: h.changeLogCapacity.littleEndian, toByteOffset: H.changeLogCapacity, as: UInt32.self)
            raw.storeBytes(of: h.entryCount.littleEndian, toByteOffset: H.entryCount, as: UInt64.self)
            raw.storeBytes(of: h.blockCount.littleEndian, toByteOffset: H.blockCount, as: UInt64.self)
            let crc = _crc32c(UnsafeRawBufferPointer(rebasing: raw[0..<H.crc]))
            raw.storeBytes(of: crc.littleEndian, toByteOffset: H.crc, as: UInt32.self)
        }
        return bytes
    }

    /// Appends one entry to a block's bytes.
    static func append(_ entry: _SnapshotEntry, to block: inout [UInt8]) {
        typealias E = _SnapshotFormat.E
        var head = [UInt8](repeating: 0, count: _SnapshotFormat.entryHeadSize)
        head.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: UInt32(entry.key.count).littleEndian, toByteOffset: E.keyLength, as: UInt32.self)
            raw.storeBytes(of: UInt32(entry.value.count).littleEndian, toByteOffset: E.valueLength, as: UInt32.self)
            raw.storeBytes(of: entry.remaining.littleEndian, toByteOffset: E.remaining, as: UInt64.self)
            raw.storeBytes(of: entry.maxAge.littleEndian, toByteOffset: E.maxAge, as: UInt64.self)
            raw.storeBytes(of: min(entry.uses, 3).littleEndian, toByteOffset: E.uses, as: UInt32.self)
        }
        block.append(contentsOf: head)
        block.append(contentsOf: entry.key)
        block.append(contentsOf: entry.value)
    }

    /// A block's head for `entries` (the bytes `append` made), its CRC covering `entries`.
    static func blockHead(index: UInt32, count: UInt32, entries: [UInt8]) -> [UInt8] {
        typealias B = _SnapshotFormat.B
        var head = [UInt8](repeating: 0, count: _SnapshotFormat.blockHeadSize)
        head.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: _SnapshotFormat.blockMagic.littleEndian, toByteOffset: B.magic, as: UInt32.self)
            raw.storeBytes(of: index.littleEndian, toByteOffset: B.index, as: UInt32.self)
            raw.storeBytes(of: count.littleEndian, toByteOffset: B.entries, as: UInt32.self)
            raw.storeBytes(of: UInt32(entries.count).littleEndian, toByteOffset: B.length, as: UInt32.self)
            var crc = _crc32cUpdate(_crc32cStart, UnsafeRawBufferPointer(rebasing: raw[B.index..<B.crc]))
            crc = entries.withUnsafeBytes { _crc32cUpdate(crc, $0) }
            raw.storeBytes(of: _crc32cFinish(crc).littleEndian, toByteOffset: B.crc, as: UInt32.self)
        }
        return head
    }

    /// The trailer, its CRC continuing `running` (the CRC state over every byte after the header).
    static func trailer(blockCount: UInt32, entryCount: UInt64, running: UInt32) -> [UInt8] {
        typealias T = _SnapshotFormat.T
        var bytes = [UInt8](repeating: 0, count: _SnapshotFormat.trailerSize)
        bytes.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: _SnapshotFormat.trailerMagic.littleEndian, toByteOffset: T.magic, as: UInt32.self)
            raw.storeBytes(of: blockCount.littleEndian, toByteOffset: T.blockCount, as: UInt32.self)
            raw.storeBytes(of: entryCount.littleEndian, toByteOffset: T.entryCount, as: UInt64.self)
            let crc = _crc32cFinish(_crc32cUpdate(running, UnsafeRawBufferPointer(rebasing: raw[0..<T.crc])))
            raw.storeBytes(of: crc.littleEndian, toByteOffset: T.crc, as: UInt32.self)
        }
        return bytes
    }
}

// MARK: CRC-32C

/// CRC-32C's start state (the register before any byte).
let _crc32cStart: UInt32 = 0xFFFF_FFFF

@inline(__always) func _crc32cFinish(_ state: UInt32) -> UInt32 { ~state }

/// CRC-32C (Castagnoli) of `bytes`: `_crc32c("123456789") == 0xE3069283`.
func _crc32c(_ bytes: UnsafeRawBufferPointer) -> UInt32 { _crc32cFinish(_crc32cUpdate(_crc32cStart, bytes)) }

/// The eight tables of slicing-by-8, reflected polynomial 0x82F63B78.
private let _crc32cTables: [UInt32] = {
    var tables = [UInt32](repeating: 0, count: 8 * 256)
    for n in 0..<256 {
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
        tables[n] = c
    }
    for n in 0..<256 {
        var c = tables[n]
        for k in 1..<8 {
            c = tables[Int(c & 0xFF)] ^ (c >> 8)
            tables[k * 256 + n] = c
        }
    }
    return tables
}()

/// Runs the CRC register over `bytes` (start from `_crc32cStart`, end with `_crc32cFinish`).
func _crc32cUpdate(_ state: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
    guard var p = bytes.baseAddress, bytes.count > 0 else { return state }
    var crc = state
    var left = bytes.count
    _crc32cTables.withUnsafeBufferPointer { t in
        while left >= 8 {
            let word = UInt64(littleEndian: p.loadUnaligned(as: UInt64.self))
            let low = UInt32(truncatingIfNeeded: word) ^ crc
            let high = UInt32(truncatingIfNeeded: word >> 32)
            crc =
                t[7 * 256 + Int(low & 0xFF)] ^ t[6 * 256 + Int((low >> 8) & 0xFF)]
                ^ t[5 * 256 + Int((low >> 16) & 0xFF)] ^ t[4 * 256 + Int(low >> 24)]
                ^ t[3 * 256 + Int(high & 0xFF)] ^ t[2 * 256 + Int((high >> 8) & 0xFF)]
                ^ t[1 * 256 + Int((high >> 16) & 0xFF)] ^ t[Int(high >> 24)]
            p += 8
            left -= 8
        }
        while left > 0 {
            crc = t[Int((crc ^ UInt32(p.load(as: UInt8.self))) & 0xFF)] ^ (crc >> 8)
            p += 1
            left -= 1
        }
    }
    return crc
}
