import CShm
import Glibc

// Warm restarts: `snapshot(to:)` writes a store's live entries to a file while the
// store serves, and `restore(from:)` / `open(key:configuration:restoringFrom:)`
// (ShmStore+Restore.swift) fill a store from it after a reboot, a removal of the
// segments or a move to another machine.
//
// Design
// ------
// * No global stop: entries are copied one at a time through the records'
//   seqlocks, in the policy's order of preference (_SnapshotScan.swift).
// * Crash-safe replacement: the file is written under a temporary name in the
//   same directory (`<path>.tmp-<pid>-<random>`), synced, renamed over `path`,
//   and the directory synced. A snapshot killed at any point leaves `path` as it
//   was (the previous snapshot, whole) and a temporary file, which the next
//   snapshot of the same path removes once its writer process is gone.
// * Self-describing and checked: the format (_SnapshotFormat.swift) carries the
//   store's configuration, a CRC-32C per block and over the whole file; the
//   reader (_SnapshotReader.swift) checks every length before it uses it.
// * Lives: each entry keeps its remaining time to live, counted from the
//   snapshot's CLOCK_REALTIME instant (CLOCK_MONOTONIC does not survive a reboot);
//   a restore subtracts the time since, and leaves out what expired meanwhile.

extension ShmStore {
    /// Writes the store's live entries to `path` while the store keeps serving:
    /// each entry whole (its key, value, remaining time to live and how much the
    /// eviction policy counted it), most preferred first, into a temporary file
    /// that is synced and renamed over `path`. A crash or a kill at any moment
    /// leaves the previous file at `path` whole.
    ///
    /// The store is not stopped: entries are copied one at a time, lock-free
    /// (a record being written is retried, then copied under the data lock alone).
    /// An entry changed during the snapshot is written with one of its values.
    ///
    /// - Parameters:
    ///   - path: the snapshot file (replaced whole).
    ///   - permissions: the new file's mode (the process's umask applies).
    /// - Throws: `.detached`; `.notFound`, `.permissionDenied` or `.systemCall`
    ///   (with the errno) when the file cannot be written; then `path` is unchanged.
    @discardableResult
    public func snapshot(to path: String, permissions: UInt16 = 0o600) throws(ShmError) -> SnapshotReport {
        let operation = "ShmStore.snapshot(to: \"\(path)\", key: \(key))"
        guard cache._lockFreeView.isAttached else { throw ShmError(.detached, operation) }
        let started = _monotonicNanoseconds()
        let (directory, name) = _splitPath(path)
        _removeAbandonedTemporaries(directory: directory, name: name)
        var random = SystemRandomNumberGenerator()
        let temporary = "\(path).tmp-\(getpid())-\(String(random.next() as UInt32, radix: 16))"
        let fd = Glibc.open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode_t(permissions))
        guard fd >= 0 else { throw ShmError.system(operation, errno: errno, detail: "cannot create \(temporary)") }
        var open = true
        var renamed = false
        defer {
            if open { close(fd) }
            if !renamed { unlink(temporary) }
        }
        try _writeAll(fd, [UInt8](repeating: 0, count: _SnapshotFormat.headerSize), operation)
        let written = try _writeSnapshot(operation) { (bytes) throws(ShmError) in try _writeAll(fd, bytes, operation) }
        let header = _SnapshotEncoder.header(written.header)
        let headerWritten = header.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        guard headerWritten == header.count else { throw ShmError.system(operation, errno: errno, detail: "writing the header") }
        guard fsync(fd) == 0 else { throw ShmError.system(operation, errno: errno, detail: "fsync") }
        open = false
        guard close(fd) == 0 else { throw ShmError.system(operation, errno: errno, detail: "close") }
        guard rename(temporary, path) == 0 else { throw ShmError.system(operation, errno: errno, detail: "rename to \(path)") }
        renamed = true
        let directoryFD = Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryFD >= 0 {
            _ = fsync(directoryFD)  // the rename made durable; a file system that cannot sync a directory still renamed
            close(directoryFD)
        }
        return SnapshotReport(
            path: path, entries: written.entries, bytes: written.bytes + _SnapshotFormat.headerSize, payloadBytes: written.payloadBytes,
            skippedExpired: written.skippedExpired, retried: written.retried, followed: written.followed,
            duration: .nanoseconds(Int64(clamping: _monotonicNanoseconds() &- started)))
    }

    /// Reads a snapshot file whole, checking every checksum and count, without a store.
    /// - Throws: `.notFound` and the like when the file cannot be opened;
    ///   `.snapshotVersionTooNew`; `.snapshotDamaged` when its header is unusable
    ///   (damage after the header is reported in the summary).
    public static func inspectSnapshot(at path: String) throws(ShmError) -> SnapshotSummary {
        let operation = "ShmStore.inspectSnapshot(at: \"\(path)\")"
        return try _withSnapshotFile(path, operation) { (source) throws(ShmError) -> SnapshotSummary in
            let reader = try _SnapshotReader(source, operation)
            var entries = 0
            let (fault, _) = reader.walk { block in
                entries += block.entries.count
                return true
            }
            return SnapshotSummary(
                configuration: _configuration(reader.header), entries: entries, bytes: source.size,
                writtenAtNanoseconds: reader.header.writtenAt,
                damage: fault.map { SnapshotDamage(offset: $0.offset, reason: $0.reason, entriesBefore: entries) })
        }
    }

    // MARK: Internals

    /// What `_writeSnapshot` wrote after the header.
    struct _SnapshotWritten {
        var header: _SnapshotHeader
        var entries: Int
        var payloadBytes: Int
        var skippedExpired: Int
        var retried: Int
        var followed: Int
        /// Bytes after the header (blocks and trailer).
        var bytes: Int
    }

    /// Copies the entries (_SnapshotScan.swift) into blocks and hands each block,
    /// then the trailer, to `sink`; returns the header to write at the start.
    func _writeSnapshot(_ operation: String, sink: ([UInt8]) throws(ShmError) -> Void) throws(ShmError) -> _SnapshotWritten {
        let writtenAt = _realtimeNanoseconds()
        var result = _SnapshotWritten(
            header: _snapshotHeader(writtenAt: writtenAt), entries: 0, payloadBytes: 0, skippedExpired: 0, retried: 0, followed: 0, bytes: 0)
        var running = _crc32cStart
        var blockIndex: UInt32 = 0
        var block: [UInt8] = []
        var blockEntries: UInt32 = 0
        var seen = Set<[UInt8]>()
        func flush() throws(ShmError) {
            guard blockEntries > 0 else { return }
            let head = _SnapshotEncoder.blockHead(index: blockIndex, count: blockEntries, entries: block)
            running = head.withUnsafeBytes { _crc32cUpdate(running, $0) }
            running = block.withUnsafeBytes { _crc32cUpdate(running, $0) }
            try sink(head)
            try sink(block)
            result.bytes += head.count + block.count
            blockIndex += 1
            block.removeAll(keepingCapacity: true)
            blockEntries = 0
        }
        func take(_ read: _SnapshotRead) throws(ShmError) {
            switch read {
            case .entry(let entry, _):
                guard seen.insert(entry.key).inserted else { return }  // met under another record already
                if !block.isEmpty, block.count + entry.encodedSize > _SnapshotFormat.blockTarget { try flush() }
                _SnapshotEncoder.append(entry, to: &block)
                blockEntries += 1
                result.entries += 1
                result.payloadBytes += entry.key.count + entry.value.count
            case .expired:
                result.skippedExpired += 1
            case .empty, .foreign, .busy:
                return
            }
        }
        var retried = 0  // apart from `result`, which `take` writes meanwhile
        var followed = 0
        for candidate in try _snapshotCandidates(operation) {
            guard cache._lockFreeView.isAttached else { throw ShmError(.detached, operation) }
            try _snapshotCopy(candidate, retried: &retried, followed: &followed, operation, take: take)
        }
        result.retried = retried
        result.followed = followed
        try flush()
        let trailer = _SnapshotEncoder.trailer(blockCount: blockIndex, entryCount: UInt64(result.entries), running: running)
        try sink(trailer)
        result.bytes += trailer.count
        result.header.entryCount = UInt64(result.entries)
        result.header.blockCount = UInt64(blockIndex)
        return result
    }

    /// A whole snapshot in memory (tests and the fuzz harness).
    func _snapshotImage() throws(ShmError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: _SnapshotFormat.headerSize)
        let written = try _writeSnapshot("ShmStore._snapshotImage") { (part) throws(ShmError) in bytes.append(contentsOf: part) }
        bytes.replaceSubrange(0..<_SnapshotFormat.headerSize, with: _SnapshotEncoder.header(written.header))
        return bytes
    }

    /// The header fields that describe this store (counts filled in at the end).
    func _snapshotHeader(writtenAt: UInt64) -> _SnapshotHeader {
        let c = configuration
        var flags: UInt32 = 0
        if c.renewsAgeOnGet { flags |= _SnapshotFormat.flagRenewOnGet }
        if c.whenFull == .refuse { flags |= _SnapshotFormat.flagRefuseWhenFull }
        if c.memory != nil { flags |= _SnapshotFormat.flagMemory }
        func ns(_ d: Duration?) -> UInt64 { d.map { UInt64(max(0, _nanoseconds($0))) } ?? 0 }
        let promotion: UInt64
        switch c.promotion {
        case .onEveryRead: promotion = 0
        case .atMostEvery(let interval): promotion = ns(interval)
        }
        return _SnapshotHeader(
            policy: cache.policy, flags: flags, writtenAt: writtenAt, capacity: UInt64(c.capacity), recordSize: UInt32(cache.recordSize),
            probeLimit: UInt32(c.probeLimit), memory: UInt64(c.memory ?? 0), maxValueSize: UInt64(c.maxValueSize ?? 0),
            maxAge: _maxAgeNanoseconds, promotion: promotion, negativeTTL: ns(c.negativeTTL), staleIfError: ns(c.staleIfError),
            lockSlots: UInt32(c.lockSlots), lockWaiters: UInt32(c.lockWaiters), changeLogCapacity: UInt32(c.changeLogCapacity),
            entryCount: 0, blockCount: 0)
    }

    /// The configuration a snapshot's header describes (checked by the reader; `create` checks it again).
    static func _configuration(_ h: _SnapshotHeader) -> Configuration {
        func duration(_ ns: UInt64) -> Duration? { ns == 0 ? nil : .nanoseconds(Int64(clamping: ns)) }
        let promotion: ShmLRU.Promotion = h.promotion == 0 ? .onEveryRead : .atMostEvery(.nanoseconds(Int64(clamping: h.promotion)))
        let whenFull: ShmLRU.FullPolicy = h.flags & _SnapshotFormat.flagRefuseWhenFull != 0 ? .refuse : .evict
        let renews = h.flags & _SnapshotFormat.flagRenewOnGet != 0
        if h.flags & _SnapshotFormat.flagMemory != 0 {
            return Configuration(
                memory: Int(clamping: h.memory), maxValueSize: Int(clamping: h.maxValueSize), expectedEntries: Int(clamping: h.capacity),
                maxAge: duration(h.maxAge), renewsAgeOnGet: renews, whenFull: whenFull, lockSlots: Int(h.lockSlots),
                lockWaiters: Int(h.lockWaiters), changeLogCapacity: Int(h.changeLogCapacity), probeLimit: Int(h.probeLimit),
                policy: h.policy, promotion: promotion, negativeTTL: duration(h.negativeTTL), staleIfError: duration(h.staleIfError))
        }
        return Configuration(
            capacity: Int(clamping: h.capacity), recordSize: Int(h.recordSize), maxAge: duration(h.maxAge), renewsAgeOnGet: renews,
            whenFull: whenFull, lockSlots: Int(h.lockSlots), lockWaiters: Int(h.lockWaiters),
            changeLogCapacity: Int(h.changeLogCapacity), probeLimit: Int(h.probeLimit), policy: h.policy, promotion: promotion,
            negativeTTL: duration(h.negativeTTL), staleIfError: duration(h.staleIfError))
    }

    /// Opens `path` read-only and lends it as a source.
    static func _withSnapshotFile<R>(
        _ path: String, _ operation: String, _ body: (_SnapshotSource) throws(ShmError) -> R
    ) throws(ShmError) -> R {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ShmError.system(operation, errno: errno, detail: "cannot open \(path)") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw ShmError.system(operation, errno: errno, detail: "fstat") }
        guard info.st_mode & S_IFMT == S_IFREG else { throw ShmError(.invalidArgument, operation, detail: "\(path) is not a regular file") }
        return try body(_SnapshotSource(fd: fd, size: Int(info.st_size)))
    }
}

/// CLOCK_REALTIME in nanoseconds since 1970 (a snapshot's instant: it survives reboots).
func _realtimeNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return now.tv_sec < 0 ? 0 : UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
}

/// Writes all of `bytes` (retrying short writes and EINTR).
func _writeAll(_ fd: Int32, _ bytes: [UInt8], _ operation: @autoclosure () -> String) throws(ShmError) {
    let failure: Int32? = bytes.withUnsafeBytes { raw -> Int32? in
        var done = 0
        while done < raw.count {
            let n = write(fd, raw.baseAddress! + done, raw.count - done)
            if n < 0, errno == EINTR { continue }
            if n <= 0 { return n < 0 ? errno : ENOSPC }
            done += n
        }
        return nil
    }
    if let failure { throw ShmError.system(operation(), errno: failure, detail: "writing the snapshot") }
}

/// A path's directory ("." for a bare name) and last component.
func _splitPath(_ path: String) -> (directory: String, name: String) {
    guard let slash = path.lastIndex(of: "/") else { return (".", path) }
    let directory = String(path[..<slash])
    return (directory.isEmpty ? "/" : directory, String(path[path.index(after: slash)...]))
}

/// Removes `<name>.tmp-<pid>-<random>` files in `directory` left by snapshot
/// writers that are gone (killed mid-snapshot); a live writer's file stays.
func _removeAbandonedTemporaries(directory: String, name: String) {
    guard let dir = opendir(directory) else { return }
    defer { closedir(dir) }
    let prefix = name + ".tmp-"
    while let entry = readdir(dir) {
        // The name in place, up to its NUL: a dirent is allocated to its record
        // length, so copying the whole 256-byte `d_name` field reads past it.
        guard let nameOffset = MemoryLayout<dirent>.offset(of: \dirent.d_name) else { continue }
        let entryName = String(cString: (UnsafeRawPointer(entry) + nameOffset).assumingMemoryBound(to: CChar.self))
        guard entryName.hasPrefix(prefix) else { continue }
        let rest = entryName.dropFirst(prefix.count)
        guard let dash = rest.firstIndex(of: "-"), let pid = Int32(rest[..<dash]), pid > 0 else { continue }
        if kill(pid, 0) == 0 || errno == EPERM { continue }  // its writer may still be at work
        unlink(directory + "/" + entryName)
    }
}
