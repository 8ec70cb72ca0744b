import CShm
import Glibc

/// A SysV shared-memory segment attached to this process: the region layer of
/// shm-typed-array, in Swift.
///
/// Create one by key (or let ShmLRU pick a free key), attach to it from any
/// process that knows the key, and read or write it through typed views that
/// are lent inside closures:
///
///     let region = try ShmRegion.create(key: 0x5EED, count: 1_000, of: Float.self)
///     try region.withUnsafeMutableBufferPointer(of: Float.self) { $0[0] = 10 }
///     // another process
///     let same = try ShmRegion.attach(key: 0x5EED)
///     let x = try same.withUnsafeBufferPointer(of: Float.self) { $0[0] }
///
/// A segment created by a process is removed when that process exits normally
/// (unless created with `persistent: true`) or when `remove()` is called; it is
/// then destroyed by the kernel once the last process detaches. A segment whose
/// creator was killed (SIGKILL) stays until removed: `shm-lru list`, `ipcs -m`,
/// `shm-lru rm KEY` or `ipcrm -M KEY`.
///
/// Dropping the last reference to a region detaches it.
public final class ShmRegion: Sendable, CustomStringConvertible {
    let _attachment: _Attachment

    /// The key the segment was created or found under.
    public var key: ShmKey { _attachment.key }
    /// The kernel's id for the segment (`shmid`).
    public var id: Int32 { _attachment.id }
    /// The segment's size in bytes, as the kernel reports it (shm-typed-array's `getSegmentSize`).
    public var byteCount: Int { _attachment.byteCount }
    /// Attached with `SHM_RDONLY`: every mutable view throws `.readOnly`.
    public var isReadOnly: Bool { _attachment.isReadOnly }
    /// False once `detach()` (or `detachAll()`) ran.
    public var isAttached: Bool { _attachment.isAttached }

    init(_ attachment: _Attachment) { _attachment = attachment }

    deinit { _ = _attachment.detach() }

    /// `ShmRegion(key, id, bytes)`.
    public var description: String {
        "ShmRegion(key: \(key), id: \(id), bytes: \(byteCount)\(isReadOnly ? ", read-only" : ""))"
    }

    // MARK: Limits

    /// The largest segment the kernel accepts (`shmmax`), capped to what an `Int` holds.
    public static var maxByteCount: Int {
        let limit = _shmmax()
        return limit > UInt64(Int.max) ? Int.max : Int(limit)
    }

    /// The largest element count accepted for `T` (shm-typed-array's `LengthMax`).
    public static func maxCount<T: ShmElement>(of type: T.Type) -> Int {
        maxByteCount / MemoryLayout<T>.stride
    }

    // MARK: Create and attach

    /// Creates a new segment of `byteCount` bytes, zero-filled.
    ///
    /// - Parameters:
    ///   - key: the key to create it under; `nil` picks a free random key.
    ///   - byteCount: the segment's size in bytes.
    ///   - permissions: the mode bits; 0600 (this user only) unless asked.
    ///   - persistent: keep the segment when this process exits.
    /// - Throws: `.exists` if the key is taken, `.invalidSize` for 0 or more than
    ///   `maxByteCount`, `.permissionDenied`, `.invalidArgument` for key 0.
    public static func create(
        key: ShmKey? = nil, byteCount: Int, permissions: UInt16 = 0o600, persistent: Bool = false
    ) throws(ShmError) -> ShmRegion {
        try _create(key: key, byteCount: byteCount, permissions: permissions, persistent: persistent, extraFlags: 0)
    }

    /// `create`, with extra `shmget` flags (`SHM_HUGETLB`: ShmRegion+HugePages.swift).
    static func _create(
        key: ShmKey?, byteCount: Int, permissions: UInt16, persistent: Bool, extraFlags: Int32
    ) throws(ShmError) -> ShmRegion {
        let operation = "create(key: \(key.map(\.description) ?? "random"), byteCount: \(byteCount))"
        guard byteCount > 0, byteCount <= maxByteCount else {
            throw ShmError(.invalidSize, operation, detail: "byteCount must be in 1...\(maxByteCount)")
        }
        guard permissions <= 0o777 else {
            throw ShmError(.invalidArgument, operation, detail: "permissions must be within 0o777")
        }
        let flags = IPC_CREAT | IPC_EXCL | Int32(permissions) | extraFlags
        if let key {
            guard !key.isPrivate else {
                throw ShmError(.invalidArgument, operation, detail: "key 0 (IPC_PRIVATE) cannot be found again")
            }
            switch _shmget(key: key.rawValue, size: byteCount, flags: flags) {
            case .success(let id): return try attach(id: id, key: key, readOnly: false, removeAtExit: !persistent, created: true)
            case .failure(let code): throw ShmError.system(operation, errno: code.code)
            }
        }
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<1_000 {
            let candidate = ShmKey(UInt32.random(in: 1...0xFFFF_FFFE, using: &generator))
            switch _shmget(key: candidate.rawValue, size: byteCount, flags: flags) {
            case .success(let id):
                return try attach(id: id, key: candidate, readOnly: false, removeAtExit: !persistent, created: true)
            case .failure(EEXIST): continue
            case .failure(let code): throw ShmError.system(operation, errno: code.code)
            }
        }
        throw ShmError(.exists, operation, detail: "no free key found")
    }

    /// Creates a segment for `count` elements of `T`.
    public static func create<T: ShmElement>(
        key: ShmKey? = nil, count: Int, of type: T.Type, permissions: UInt16 = 0o600, persistent: Bool = false
    ) throws(ShmError) -> ShmRegion {
        guard count > 0, count <= maxCount(of: T.self) else {
            throw ShmError(
                .invalidSize, "create(key: \(key.map(\.description) ?? "random"), count: \(count), of: \(T.shmTypeName))",
                detail: "count must be in 1...\(maxCount(of: T.self))")
        }
        return try create(key: key, byteCount: count * MemoryLayout<T>.stride, permissions: permissions, persistent: persistent)
    }

    /// Attaches an existing segment by key.
    ///
    /// A segment owned by another user is refused unless named: a segment
    /// planted at an application's key by another account (even with mode 0666)
    /// would otherwise feed this process its values and read what it writes.
    ///
    /// - Parameters:
    ///   - key: the segment's key.
    ///   - readOnly: map it read-only (writes through it then trap).
    ///   - owner: a user id, besides this process's effective uid and
    ///     root (always accepted), whose segments may be attached.
    /// - Throws: `.notFound` when no segment has that key, `.permissionDenied`
    ///   (also for a segment whose owner is neither this user, root nor `owner`).
    public static func attach(key: ShmKey, readOnly: Bool = false, allowingOwner owner: UInt32? = nil) throws(ShmError) -> ShmRegion {
        try _attach(key: key, readOnly: readOnly, owners: .trusted(owner))
    }

    /// Whose segments an attach accepts.
    enum _Owners {
        /// This process's effective uid, root, and the named uid.
        case trusted(UInt32?)
        /// Any: for reads that trust nothing in the segment (`ShmLRU.probe`).
        case any
    }

    static func _attach(key: ShmKey, readOnly: Bool, owners: _Owners) throws(ShmError) -> ShmRegion {
        let operation = "attach(key: \(key)\(readOnly ? ", readOnly" : ""))"
        guard !key.isPrivate else {
            throw ShmError(.invalidArgument, operation, detail: "key 0 (IPC_PRIVATE) names no shared segment")
        }
        switch _shmget(key: key.rawValue, size: 0, flags: 0) {
        case .success(let id):
            return try attach(id: id, key: key, readOnly: readOnly, removeAtExit: false, created: false, owners: owners)
        case .failure(let code): throw ShmError.system(operation, errno: code.code)
        }
    }

    /// True if a segment with this key exists (whether or not we may attach it).
    public static func exists(key: ShmKey) -> Bool {
        guard !key.isPrivate else { return false }
        switch _shmget(key: key.rawValue, size: 0, flags: 0) {
        case .success: return true
        case .failure(let code): return code.code != ENOENT
        }
    }

    private static func attach(
        id: Int32, key: ShmKey, readOnly: Bool, removeAtExit: Bool, created: Bool, owners: _Owners = .any
    ) throws(ShmError) -> ShmRegion {
        let operation = "shmat(id: \(id), key: \(key))"
        let info: _SegmentStatus
        switch _shmStat(id: id) {
        case .success(let value): info = value
        case .failure(let code):
            if created { _ = _shmRemove(id: id) }
            throw ShmError.system("shmctl(IPC_STAT, id: \(id), key: \(key))", errno: code.code)
        }
        if case .trusted(let named) = owners {
            let me = UInt32(geteuid())
            guard info.ownerUID == me || info.ownerUID == 0 || info.ownerUID == named else {
                throw ShmError(
                    .permissionDenied, "attach(key: \(key))",
                    detail: "the segment belongs to uid \(info.ownerUID), not to this user (uid \(me)) or root: "
                        + "pass allowingOwner: \(info.ownerUID) to trust it")
            }
        }
        guard info.size > 0, info.size <= UInt64(Int.max) else {
            if created { _ = _shmRemove(id: id) }
            throw ShmError(.invalidSize, operation, detail: "segment reports \(info.size) bytes")
        }
        switch _shmat(id: id, readOnly: readOnly) {
        case .success(let base):
            let attachment = _Attachment(
                key: key, id: id, byteCount: Int(info.size), isReadOnly: readOnly, removeAtExit: removeAtExit, base: base)
            _Registry.shared.add(attachment)
            return ShmRegion(attachment)
        case .failure(let code):
            if created { _ = _shmRemove(id: id) }
            throw ShmError.system(operation, errno: code.code)
        }
    }

    /// A second attachment of this same segment (by id, so also after `remove()`):
    /// the corruption harnesses attach the segments they own afresh for each input.
    func _reattach() throws(ShmError) -> ShmRegion {
        try ShmRegion.attach(id: id, key: key, readOnly: isReadOnly, removeAtExit: false, created: false)
    }

    // MARK: Detach and remove

    /// Detaches this process from the segment and returns how many attachments
    /// remain (from every process). When none remain and this process created the
    /// segment (not persistent), the segment is removed as well; otherwise it is
    /// removed when this process exits normally. Detaching twice returns the
    /// current count and changes nothing.
    @discardableResult
    public func detach() throws(ShmError) -> Int {
        let attachment = _attachment
        _ = attachment.detach()
        switch _shmStat(id: attachment.id) {
        case .success(let info):
            if info.attachCount == 0, attachment.removeAtExit { _Registry.shared.removeCreated(id: attachment.id) }
            return Int(info.attachCount)
        case .failure(EINVAL), .failure(EIDRM):
            return 0  // removed and gone
        case .failure(let code):
            throw ShmError.system("detach(key: \(key))", errno: code.code)
        }
    }

    /// Marks the segment for removal (`IPC_RMID`): its key is freed at once and
    /// the memory goes when the last process detaches. This process stays attached.
    public func remove() throws(ShmError) {
        switch _shmRemove(id: id) {
        case .success, .failure(EINVAL), .failure(EIDRM):
            _Registry.shared.forgetCreated(id: id)
            return
        case .failure(let code): throw ShmError.system("remove(key: \(key))", errno: code.code)
        }
    }

    /// Removes the segment with this key (which need not be attached).
    public static func remove(key: ShmKey) throws(ShmError) {
        let operation = "remove(key: \(key))"
        guard !key.isPrivate else { throw ShmError(.invalidArgument, operation) }
        switch _shmget(key: key.rawValue, size: 0, flags: 0) {
        case .success(let id):
            if case .failure(let code) = _shmRemove(id: id) { throw ShmError.system(operation, errno: code.code) }
            _Registry.shared.forgetCreated(id: id)
        case .failure(let code): throw ShmError.system(operation, errno: code.code)
        }
    }

    /// How many attachments the segment has, from every process.
    public var attachCount: Int {
        get throws(ShmError) {
            switch _shmStat(id: id) {
            case .success(let info): return Int(info.attachCount)
            case .failure(let code): throw ShmError.system("attachCount(key: \(key))", errno: code.code)
            }
        }
    }

    /// Detaches every region of this process; removes the segments it created
    /// (unless persistent), also those it detached earlier. Returns how many were detached.
    @discardableResult
    public static func detachAll() -> Int {
        _Registry.shared.detachAllAndRemoveCreated()
    }

    /// The bytes this process has attached, over all its regions (shm-typed-array's `getTotalSize`).
    public static var totalSize: Int {
        _Registry.shared.all.reduce(0) { $0 + ($1.isAttached ? $1.byteCount : 0) }
    }
}
