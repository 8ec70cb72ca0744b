import CShm
import Glibc

// Thin wrappers over the SysV calls, in the manner of swift-system: each returns a
// `Result` with the errno, retries on EINTR where the call can be interrupted,
// and does nothing else. The public `throws` API in ShmRegion builds on these.

/// An errno value as the `Failure` of a `Result`. `case .failure(EEXIST)` matches it.
struct _Errno: Error, Equatable {
    var code: Int32
    init(_ code: Int32) { self.code = code }
    static func ~= (pattern: Int32, value: _Errno) -> Bool { pattern == value.code }
}

@inline(__always)
func _retryingOnEINTR<T>(_ body: () -> T, failed: (T) -> Bool) -> Result<T, _Errno> {
    while true {
        let value = body()
        if !failed(value) { return .success(value) }
        let code = errno
        if code != EINTR { return .failure(_Errno(code)) }
    }
}

func _shmget(key: Int32, size: Int, flags: Int32) -> Result<Int32, _Errno> {
    _retryingOnEINTR({ shmget(key_t(key), size, flags) }, failed: { $0 < 0 })
}

func _shmat(id: Int32, readOnly: Bool) -> Result<UnsafeMutableRawPointer, _Errno> {
    // shmat reports failure as (void *)-1, not NULL.
    let failedAddress = UnsafeMutableRawPointer(bitPattern: -1)
    switch _retryingOnEINTR({ shmat(id, nil, readOnly ? SHM_RDONLY : 0) }, failed: { $0 == failedAddress }) {
    case .success(let address?): return .success(address)
    case .success(nil): return .failure(_Errno(EINVAL))
    case .failure(let code): return .failure(code)
    }
}

func _shmdt(_ address: UnsafeRawPointer) -> Result<Void, _Errno> {
    _retryingOnEINTR({ shmdt(address) }, failed: { $0 != 0 }).map { _ in () }
}

func _shmRemove(id: Int32) -> Result<Void, _Errno> {
    _retryingOnEINTR({ shmctl(id, IPC_RMID, nil) }, failed: { $0 != 0 }).map { _ in () }
}

/// The kernel's view of a segment (`IPC_STAT`), reduced to what the library needs.
struct _SegmentStatus: Sendable {
    var key: Int32
    /// Permission bits (0o777).
    var mode: UInt32
    var size: UInt64
    var attachCount: UInt64
    var creatorPID: Int32
    var lastPID: Int32
    var ownerUID: UInt32
}

func _shmStat(id: Int32) -> Result<_SegmentStatus, _Errno> {
    var ds = shmid_ds()
    return _retryingOnEINTR({ shmctl(id, IPC_STAT, &ds) }, failed: { $0 != 0 }).map { _ in
        _SegmentStatus(
            key: Int32(ds.shm_perm.__key), mode: UInt32(ds.shm_perm.mode) & 0o777, size: UInt64(ds.shm_segsz),
            attachCount: UInt64(ds.shm_nattch), creatorPID: Int32(ds.shm_cpid), lastPID: Int32(ds.shm_lpid),
            ownerUID: UInt32(ds.shm_perm.uid))
    }
}

func _ftok(path: String, id: Int32) -> Result<Int32, _Errno> {
    _retryingOnEINTR({ Int32(ftok(path, id)) }, failed: { $0 == -1 })
}

/// Formats a SysV key as the kernel tools do (`ipcs -m`).
func _hexKey(_ key: Int32) -> String {
    "0x" + String(UInt32(bitPattern: key), radix: 16)
}

/// One line of `/proc/sysvipc/shm`: a segment's id and the kernel's view of it.
struct _SegmentListing: Sendable {
    var id: Int32
    var status: _SegmentStatus
}

/// Reads a small file of /proc whole (its size is not known in advance).
func _readProcFile(_ path: String) -> String? {
    guard let file = fopen(path, "r") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
        if n <= 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
    }
    return String(decoding: bytes, as: UTF8.self)
}

func _listSegments() -> [_SegmentListing] {
    guard let text = _readProcFile("/proc/sysvipc/shm") else { return [] }
    var result: [_SegmentListing] = []
    for line in text.split(separator: "\n").dropFirst() {
        let f = line.split(separator: " ", omittingEmptySubsequences: true)
        // key shmid perms size cpid lpid nattch uid gid cuid cgid ... (perms in octal)
        guard f.count >= 8, let key = Int32(f[0]), let id = Int32(f[1]), let perms = UInt32(f[2], radix: 8),
            let size = UInt64(f[3]), let cpid = Int32(f[4]), let lpid = Int32(f[5]), let nattch = UInt64(f[6]),
            let uid = UInt32(f[7])
        else { continue }
        result.append(
            _SegmentListing(
                id: id,
                status: _SegmentStatus(
                    key: key, mode: perms & 0o777, size: size, attachCount: nattch, creatorPID: cpid, lastPID: lpid,
                    ownerUID: uid)))
    }
    return result
}

/// `/proc/sys/kernel/shmmax`, or a conservative default when /proc is not readable.
func _shmmax() -> UInt64 {
    if let text = _readProcFile("/proc/sys/kernel/shmmax"),
        let value = UInt64(text.split(whereSeparator: { $0 == "\n" || $0 == " " }).first ?? "")
    {
        return value
    }
    return 32 << 20
}
