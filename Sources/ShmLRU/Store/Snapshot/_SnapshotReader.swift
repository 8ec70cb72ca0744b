import Glibc

// Reads a snapshot file (format in _SnapshotFormat.swift) that may be truncated,
// corrupt or hostile. Every length, count and offset is checked against what is
// left of the file before it is used or allocated; a block is used only once its
// CRC matched and its entries parsed to exactly its length. The first fault stops
// the reading and is reported with its offset: the blocks before it are whole.
// Nothing here trusts the header's counts beyond checking them.

/// Where a snapshot's bytes come from: a file (read with pread, so a 1 GiB
/// snapshot is never held whole) or bytes in memory (the fuzz harness).
struct _SnapshotSource {
    enum Storage {
        case file(Int32)
        case memory([UInt8])
    }
    let storage: Storage
    /// Bytes in the source (a file's size when it was opened).
    let size: Int

    init(bytes: [UInt8]) {
        storage = .memory(bytes)
        size = bytes.count
    }

    init(fd: Int32, size: Int) {
        storage = .file(fd)
        self.size = size
    }

    /// `count` bytes at `offset`; nil when they are not all there (past the end, or a read error).
    func read(_ offset: Int, _ count: Int) -> [UInt8]? {
        guard offset >= 0, count >= 0, offset <= size, count <= size - offset else { return nil }
        switch storage {
        case .memory(let bytes):
            return Array(bytes[offset..<offset + count])
        case .file(let fd):
            var result = [UInt8](repeating: 0, count: count)
            let complete = result.withUnsafeMutableBytes { buffer -> Bool in
                var done = 0
                while done < count {
                    let n = pread(fd, buffer.baseAddress! + done, count - done, off_t(offset + done))
                    if n < 0, errno == EINTR { continue }
                    if n <= 0 { return false }
                    done += n
                }
                return true
            }
            return complete ? result : nil
        }
    }
}

/// A fault found in a snapshot: where, and what.
struct _SnapshotFault: Error, Equatable {
    var offset: Int
    var reason: String
}

struct _SnapshotReader {
    typealias F = _SnapshotFormat
    let source: _SnapshotSource
    let header: _SnapshotHeader

    /// A block read and checked.
    struct Block {
        var offset: Int
        var index: UInt32
        var entries: [_SnapshotEntry]
        /// The offset after it.
        var end: Int
    }

    /// Reads and checks the header.
    /// - Throws: `.snapshotVersionTooNew` for a newer format; `.snapshotDamaged`
    ///   naming the offset for anything else wrong in it.
    init(_ source: _SnapshotSource, _ operation: @autoclosure () -> String) throws(ShmError) {
        self.source = source
        func damaged(_ offset: Int, _ reason: String) -> ShmError {
            ShmError(.snapshotDamaged, operation(), detail: "at offset \(offset): \(reason)")
        }
        guard let start = source.read(0, min(source.size, F.headerSize)), start.count >= 12 else {
            throw damaged(0, "\(source.size) bytes: shorter than a snapshot header")
        }
        func u32(_ at: Int) -> UInt32 { start.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt32.self)) } }
        func u64(_ at: Int) -> UInt64 { start.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt64.self)) } }
        guard u64(F.H.magic) == F.magic else { throw damaged(0, "not a ShmStore snapshot (magic)") }
        let version = u32(F.H.version)
        guard version <= F.version else {
            throw ShmError(
                .snapshotVersionTooNew, operation(),
                detail: "format version \(version); this library reads versions up to \(F.version)")
        }
        guard version >= 1 else { throw damaged(F.H.version, "format version 0") }
        guard start.count == F.headerSize else { throw damaged(start.count, "the header is cut short (\(source.size) bytes)") }
        guard u32(F.H.headerSize) == UInt32(F.headerSize) else { throw damaged(F.H.headerSize, "header size \(u32(F.H.headerSize))") }
        let crc = start.withUnsafeBytes { _crc32c(UnsafeRawBufferPointer(rebasing: $0[0..<F.H.crc])) }
        guard crc == u32(F.H.crc) else { throw damaged(F.H.crc, "header checksum mismatch") }
        guard let policy = ShmLRU.EvictionPolicy(code: u32(F.H.policy)) else { throw damaged(F.H.policy, "unknown policy \(u32(F.H.policy))") }
        let flags = u32(F.H.flags)
        guard flags & ~F.knownFlags == 0 else { throw damaged(F.H.flags, "unknown flags \(flags)") }
        let h = _SnapshotHeader(
            policy: policy, flags: flags, writtenAt: u64(F.H.writtenAt), capacity: u64(F.H.capacity),
            recordSize: u32(F.H.recordSize), probeLimit: u32(F.H.probeLimit), memory: u64(F.H.memory),
            maxValueSize: u64(F.H.maxValueSize), maxAge: u64(F.H.maxAge), promotion: u64(F.H.promotion),
            negativeTTL: u64(F.H.negativeTTL), staleIfError: u64(F.H.staleIfError), lockSlots: u32(F.H.lockSlots),
            lockWaiters: u32(F.H.lockWaiters), changeLogCapacity: u32(F.H.changeLogCapacity), entryCount: u64(F.H.entryCount),
            blockCount: u64(F.H.blockCount))
        let limit = UInt64(Int64.max)
        guard (1...UInt64(_Layout.maxCapacity)).contains(h.capacity) else { throw damaged(F.H.capacity, "capacity \(h.capacity)") }
        guard (1...UInt32(_Layout.maxRecordSize)).contains(h.recordSize) else { throw damaged(F.H.recordSize, "record size \(h.recordSize)") }
        guard (1...64).contains(h.probeLimit) else { throw damaged(F.H.probeLimit, "probe limit \(h.probeLimit)") }
        guard h.memory <= limit, h.maxValueSize <= limit else { throw damaged(F.H.memory, "memory sizes out of range") }
        guard h.maxAge <= limit, h.promotion <= limit, h.negativeTTL <= limit, h.staleIfError <= limit else {
            throw damaged(F.H.maxAge, "durations out of range")
        }
        // Every block takes at least its head; every entry at least its head.
        guard h.blockCount <= UInt64(source.size / F.blockHeadSize), h.blockCount <= UInt64(UInt32.max) else {
            throw damaged(F.H.blockCount, "block count \(h.blockCount) for \(source.size) bytes")
        }
        guard h.entryCount <= UInt64(source.size / F.entryHeadSize) else {
            throw damaged(F.H.entryCount, "entry count \(h.entryCount) for \(source.size) bytes")
        }
        header = h
    }

    /// Reads and checks the block at `offset`, which must carry `index`; `running`
    /// (the CRC state over the bytes after the header) takes its bytes.
    func block(at offset: Int, index: UInt32, running: inout UInt32) throws(_SnapshotFault) -> Block {
        guard let head = source.read(offset, F.blockHeadSize) else {
            throw _SnapshotFault(offset: offset, reason: "the file ends inside block \(index)'s head")
        }
        func u32(_ at: Int) -> UInt32 { head.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt32.self)) } }
        guard u32(F.B.magic) == F.blockMagic else { throw _SnapshotFault(offset: offset, reason: "no block \(index) here (magic)") }
        guard u32(F.B.index) == index else {
            throw _SnapshotFault(offset: offset + F.B.index, reason: "block \(u32(F.B.index)) where block \(index) belongs")
        }
        let count = Int(u32(F.B.entries))
        let length = Int(u32(F.B.length))
        let payloadOffset = offset + F.blockHeadSize
        guard length <= F.maxBlockLength, length <= source.size - payloadOffset else {
            throw _SnapshotFault(offset: offset + F.B.length, reason: "block \(index)'s length \(length) runs past the end of the file")
        }
        guard count <= length / F.entryHeadSize else {
            throw _SnapshotFault(offset: offset + F.B.entries, reason: "block \(index) claims \(count) entries in \(length) bytes")
        }
        guard let payload = source.read(payloadOffset, length) else {
            throw _SnapshotFault(offset: payloadOffset, reason: "block \(index) cannot be read whole")
        }
        var crc = head.withUnsafeBytes { _crc32cUpdate(_crc32cStart, UnsafeRawBufferPointer(rebasing: $0[F.B.index..<F.B.crc])) }
        crc = payload.withUnsafeBytes { _crc32cUpdate(crc, $0) }
        guard _crc32cFinish(crc) == u32(F.B.crc) else {
            throw _SnapshotFault(offset: offset + F.B.crc, reason: "block \(index)'s checksum does not match its bytes")
        }
        let parsed = payload.withUnsafeBytes { raw in
            Result { () throws(_SnapshotFault) -> [_SnapshotEntry] in try Self.entries(raw, count: count, at: payloadOffset, block: index) }
        }
        let entries = try parsed.get()
        running = head.withUnsafeBytes { _crc32cUpdate(running, $0) }
        running = payload.withUnsafeBytes { _crc32cUpdate(running, $0) }
        return Block(offset: offset, index: index, entries: entries, end: payloadOffset + length)
    }

    /// Parses `count` entries that must fill `raw` exactly.
    static func entries(_ raw: UnsafeRawBufferPointer, count: Int, at base: Int, block: UInt32) throws(_SnapshotFault) -> [_SnapshotEntry] {
        var result: [_SnapshotEntry] = []
        result.reserveCapacity(count)
        var at = 0
        for n in 0..<count {
            let left = raw.count - at
            guard left >= F.entryHeadSize else {
                throw _SnapshotFault(offset: base + at, reason: "block \(block)'s entry \(n) is cut short")
            }
            func u32(_ field: Int) -> UInt32 { UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: at + field, as: UInt32.self)) }
            func u64(_ field: Int) -> UInt64 { UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: at + field, as: UInt64.self)) }
            let keyLength = Int(u32(F.E.keyLength))
            let valueLength = Int(u32(F.E.valueLength))
            let body = left - F.entryHeadSize
            guard keyLength <= body, valueLength <= body - keyLength else {
                throw _SnapshotFault(offset: base + at, reason: "block \(block)'s entry \(n): lengths \(keyLength) + \(valueLength) run past the block")
            }
            let remaining = u64(F.E.remaining)
            let maxAge = u64(F.E.maxAge)
            let uses = u32(F.E.uses)
            guard remaining <= UInt64(Int64.max), maxAge <= UInt64(Int64.max), uses <= 3 else {
                throw _SnapshotFault(offset: base + at + F.E.remaining, reason: "block \(block)'s entry \(n): fields out of range")
            }
            let keyStart = at + F.entryHeadSize
            let key = Array(UnsafeRawBufferPointer(rebasing: raw[keyStart..<keyStart + keyLength]))
            guard String(validating: key, as: UTF8.self) != nil else {
                throw _SnapshotFault(offset: base + keyStart, reason: "block \(block)'s entry \(n): the key is not UTF-8")
            }
            let valueStart = keyStart + keyLength
            let value = Array(UnsafeRawBufferPointer(rebasing: raw[valueStart..<valueStart + valueLength]))
            result.append(_SnapshotEntry(key: key, value: value, remaining: remaining, maxAge: maxAge, uses: uses))
            at = valueStart + valueLength
        }
        guard at == raw.count else {
            throw _SnapshotFault(offset: base + at, reason: "block \(block) has \(raw.count - at) bytes after its \(count) entries")
        }
        return result
    }

    /// Checks the trailer at `offset` against the blocks read and the running CRC,
    /// and that the file ends with it.
    func checkTrailer(at offset: Int, blocks: UInt32, entries: UInt64, running: UInt32) throws(_SnapshotFault) {
        guard let bytes = source.read(offset, F.trailerSize) else {
            throw _SnapshotFault(offset: offset, reason: "the file ends before its trailer")
        }
        func u32(_ at: Int) -> UInt32 { bytes.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt32.self)) } }
        func u64(_ at: Int) -> UInt64 { bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt64.self)) } }
        guard u32(F.T.magic) == F.trailerMagic else { throw _SnapshotFault(offset: offset, reason: "no trailer after block \(blocks)") }
        guard u32(F.T.blockCount) == blocks, u64(F.T.entryCount) == entries, UInt64(blocks) == header.blockCount,
            entries == header.entryCount
        else {
            throw _SnapshotFault(offset: offset + F.T.blockCount, reason: "the counts of the trailer, header and blocks differ")
        }
        let crc = bytes.withUnsafeBytes { _crc32cFinish(_crc32cUpdate(running, UnsafeRawBufferPointer(rebasing: $0[0..<F.T.crc]))) }
        guard crc == u32(F.T.crc) else { throw _SnapshotFault(offset: offset + F.T.crc, reason: "the file's checksum does not match") }
        guard offset + F.trailerSize == source.size else {
            throw _SnapshotFault(offset: offset + F.trailerSize, reason: "\(source.size - offset - F.trailerSize) bytes after the trailer")
        }
    }

    /// Reads every block in order, handing each to `visit` (which returns false to
    /// stop), then checks the trailer. Returns the first fault (nil: the file is whole)
    /// and the offset of each block read, for a second pass.
    func walk(_ visit: (Block) -> Bool) -> (fault: _SnapshotFault?, blocks: [(offset: Int, entries: Int)]) {
        var offset = F.headerSize
        var running = _crc32cStart
        var index: UInt32 = 0
        var entries: UInt64 = 0
        var blocks: [(offset: Int, entries: Int)] = []
        while UInt64(index) < header.blockCount {
            let block: Block
            do { block = try self.block(at: offset, index: index, running: &running) } catch { return (error, blocks) }
            blocks.append((offset, block.entries.count))
            entries += UInt64(block.entries.count)
            offset = block.end
            index += 1
            if !visit(block) { return (nil, blocks) }
        }
        do { try checkTrailer(at: offset, blocks: index, entries: entries, running: running) } catch { return (error, blocks) }
        return (nil, blocks)
    }
}
