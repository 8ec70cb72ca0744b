import CShm
import Glibc

/// Every failure ShmLRU reports: what went wrong (`code`), what was being
/// attempted (`operation`), and the `errno` when a system call failed.
///
///     do { _ = try ShmRegion.create(key: 42, byteCount: 4096) }
///     catch let error as ShmError where error.code == .exists { … }
public struct ShmError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The kind of failure. Compare with `==`; new codes may be added.
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        /// The code's name, e.g. `notFound`.
        public var rawValue: String
        /// A code with this name.
        public init(rawValue: String) { self.rawValue = rawValue }
        /// The code's name.
        public var description: String { rawValue }

        // Regions
        /// A segment with that key already exists (create).
        public static let exists = Code(rawValue: "exists")
        /// No segment with that key (attach), or no such record or hash.
        public static let notFound = Code(rawValue: "notFound")
        /// The caller may not create, attach or remove that segment.
        public static let permissionDenied = Code(rawValue: "permissionDenied")
        /// A size or count of zero, or over the system's limit.
        public static let invalidSize = Code(rawValue: "invalidSize")
        /// A bad key, element index, path, option or argument.
        public static let invalidArgument = Code(rawValue: "invalidArgument")
        /// A write through a region attached read-only.
        public static let readOnly = Code(rawValue: "readOnly")
        /// The region or cache was detached already.
        public static let detached = Code(rawValue: "detached")
        /// A huge-page segment was asked for and the system has none free (or the
        /// caller may not use them): see /proc/sys/vm/nr_hugepages.
        public static let hugePagesUnavailable = Code(rawValue: "hugePagesUnavailable")
        /// Any other failed system call; see `errno`.
        public static let systemCall = Code(rawValue: "systemCall")

        // LRU
        /// The segment does not hold a ShmLRU cache of this layout (magic, version or sizes differ).
        public static let incompatibleSegment = Code(rawValue: "incompatibleSegment")
        /// The segment's structure is inconsistent (found by attach or `verify()`).
        public static let corrupted = Code(rawValue: "corrupted")
        /// A value longer than the record's payload.
        public static let valueTooLarge = Code(rawValue: "valueTooLarge")
        /// Every record is in use and the cache refuses to evict.
        public static let full = Code(rawValue: "full")
        /// An offset that is not a record: out of range, misaligned, or in the header.
        public static let invalidOffset = Code(rawValue: "invalidOffset")
        /// The record at that offset was deleted already.
        public static let alreadyDeleted = Code(rawValue: "alreadyDeleted")
        /// The segment's lock could not be taken in time.
        public static let lockTimeout = Code(rawValue: "lockTimeout")
        /// `ShmStore.get(_:as:orLoad:)`: the load took longer than the store's
        /// `loadTimeout`, or a load of that key failed moments ago (within
        /// `loadFailureTTL`; the detail quotes its error).
        public static let loadFailed = Code(rawValue: "loadFailed")
    }

    /// What went wrong.
    public var code: Code
    /// What was attempted, e.g. `shmget(key: 0x2a, size: 4096, IPC_CREAT|IPC_EXCL)`.
    public var operation: String
    /// The `errno` of the failed system call, if one failed.
    public var errno: Int32?
    /// Extra detail for a person.
    public var detail: String?

    /// An error of `operation` with its code, and the `errno` and detail when known.
    public init(_ code: Code, _ operation: String, errno: Int32? = nil, detail: String? = nil) {
        self.code = code
        self.operation = operation
        self.errno = errno
        self.detail = detail
    }

    /// `operation: code`, then the errno's text and the detail when known.
    public var description: String {
        var text = "\(operation): \(code.rawValue)"
        if let errno {
            text += " (errno \(errno): \(String(cString: strerror(errno))))"
        }
        if let detail { text += ": \(detail)" }
        return text
    }

    /// Maps a failed SysV call's errno to a code.
    static func system(_ operation: String, errno: Int32, detail: String? = nil) -> ShmError {
        let code: Code
        switch errno {
        case EEXIST: code = .exists
        case ENOENT, EIDRM: code = .notFound
        case EACCES, EPERM: code = .permissionDenied
        case EINVAL, ENOSPC, ENOMEM, E2BIG: code = .invalidSize
        default: code = .systemCall
        }
        return ShmError(code, operation, errno: errno, detail: detail)
    }
}
