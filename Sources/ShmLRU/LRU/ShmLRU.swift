import CShm
import Synchronization

/// An LRU cache of fixed-size records inside a SysV shared-memory segment,
/// shared by every process that attaches it.
///
/// One process creates it (the seed's "initializer"); others attach by key. Every
/// structural change happens under a process-shared robust mutex in the segment,
/// so processes may use one cache at once; a process killed while holding the
/// lock does not block the others (the next locker repairs the structure).
///
///     let cache = try ShmLRU.create(key: 0x5EED, recordSize: 250, capacity: 10_000)
///     try cache.set(134, "this is a test")
///     // any process:
///     let peer = try ShmLRU.attach(key: 0x5EED)
///     peer.string(134)   // "this is a test"
///
/// Keys are `UInt32` hashes chosen by the caller; values are bytes (at most
/// `recordSize`). A set into a full cache evicts the least recently used record
/// (or refuses, with `Options.whenFull = .refuse`).
public final class ShmLRU: @unchecked Sendable {
    /// Where the hash -> record map lives. Chosen at creation, stored in the header.
    public enum IndexKind: String, Sendable, CaseIterable, Codable {
        /// In the segment: a peer's set or delete is visible at once, attach scans nothing.
        case shared
        /// In each process (the seed's design): after peer writes, call `reloadIndex()`.
        /// A stale map never returns another key's value; it reports a miss.
        case processLocal
    }

    /// What `set` does with a new hash when every record is in use.
    public enum FullPolicy: Sendable, Hashable {
        /// Evict the least recently used record and report its hash (the default).
        case evictLeastRecentlyUsed
        /// Throw `.full` and change nothing (the seed's behaviour).
        case refuse
    }

    /// When a read (or an update) moves its record to the head of the LRU list.
    public enum Promotion: Sendable, Hashable {
        /// Every read and update takes the lock and moves the record to the head
        /// (exact LRU; the seed's behaviour).
        case onEveryRead
        /// Reads take no lock. A read or update marks its record used (one store
        /// into the record's own header): the first use after the record was linked
        /// at the head, then at most once per interval (refreshing the use's time).
        /// A marked record that reaches the LRU tail moves to the head instead of
        /// being evicted (a second chance, as memcached's segmented LRU does). Other
        /// reads write nothing shared. Stamps use the coarse monotonic clock, read
        /// once per 64 reads of a handle. Needs the shared index. An interval of
        /// zero is exact LRU.
        case atMostEvery(Duration)
    }

    public struct Options: Sendable, Hashable {
        public var whenFull: FullPolicy
        public var promotion: Promotion
        /// How long to wait for the segment's lock before throwing `.lockTimeout`; nil waits for ever.
        public var lockTimeout: Duration?
        /// How long `attach` waits for a cache that is still being initialized.
        public var attachWait: Duration
        /// A user id whose segments `attach` accepts besides this process's
        /// effective uid and root (see `ShmRegion.attach(key:readOnly:allowingOwner:)`).
        public var allowedOwner: UInt32?

        public init(
            whenFull: FullPolicy = .evictLeastRecentlyUsed, promotion: Promotion = .onEveryRead,
            lockTimeout: Duration? = .seconds(10), attachWait: Duration = .seconds(2), allowedOwner: UInt32? = nil
        ) {
            self.whenFull = whenFull
            self.promotion = promotion
            self.lockTimeout = lockTimeout
            self.attachWait = attachWait
            self.allowedOwner = allowedOwner
        }
    }

    /// The region holding the cache. Detaching it ends this handle.
    public let region: ShmRegion
    public let options: Options

    let _segment: _Segment
    /// The region's mapping (held here too, so the hot paths check it with one load).
    let _attachment: _Attachment
    let _mutex: _RobustMutex
    let _sharedIndex: _IndexTable?
    let _localIndex: _LocalIndex?
    /// The lock-free read's view of the shared index and the records.
    let _probe: _Probe
    let _lockTimeoutNanoseconds: Int64
    /// Nanoseconds between promotions of a record; 0 for exact LRU.
    let _promotionNanoseconds: UInt64
    let _hits = Atomic<UInt64>(0)
    let _misses = Atomic<UInt64>(0)
    let _busyMisses = Atomic<UInt64>(0)
    /// This handle's view of the coarse monotonic clock, for the time of a mark
    /// and for whether a marked record's mark is an interval old: refreshed every
    /// `_clockRefreshReads` hits (and every as many locked reads and updates).
    /// Reading the clock on every hit would cost more than the hit: the vDSO read
    /// stalls the memory accesses in flight (measured: +150 to +230 ns per get at
    /// 1M records in this VM). It lags the real clock by at most 63 of this
    /// handle's hits; a lag only delays a refresh of a mark's time, never the
    /// first mark after a link (which needs no clock).
    let _clock = Atomic<UInt64>(cshm_monotonic_coarse_ns())
    static let _clockRefreshReads: UInt64 = 64
    /// Locked reads and updates, counted for refreshing `_clock`.
    let _clockTicks = Atomic<UInt64>(0)

    /// Records in the cache.
    public var capacity: Int { _segment.layout.capacity }
    /// The largest value a record holds, in bytes.
    public var recordSize: Int { _segment.layout.recordSize }
    public var indexKind: IndexKind { _segment.layout.indexKind }
    /// Live records now (read without the lock: a snapshot); 0 once detached.
    public var count: Int {
        guard region._attachment.isAttached else { return 0 }  // the mapping is gone: never read it
        return min(Int(_segment.count), capacity)
    }
    /// The segment's key.
    public var key: ShmKey { region.key }

    private init(region: ShmRegion, layout: _Layout, options: Options) throws(ShmError) {
        self.region = region
        self.options = options
        let segment = _Segment(base: region._attachment.base, layout: layout, faultInjection: true)
        _segment = segment
        _attachment = region._attachment
        _mutex = _RobustMutex(address: segment.mutex)
        _lockTimeoutNanoseconds = options.lockTimeout.map { _nanoseconds($0) } ?? -1
        switch layout.indexKind {
        case .shared:
            _sharedIndex = _IndexTable(
                entries: segment.u32(layout.indexOffset), slots: layout.indexSlots, segment: segment)
            _localIndex = nil
        case .processLocal:
            _sharedIndex = nil
            _localIndex = _LocalIndex(segment: segment)
        }
        _probe = _Probe(table: _sharedIndex ?? _localIndex!.table, segment: segment)
        switch options.promotion {
        case .onEveryRead:
            _promotionNanoseconds = 0
        case .atMostEvery(let interval):
            guard layout.indexKind == .shared else {
                throw ShmError(
                    .invalidArgument, "ShmLRU(options:)",
                    detail: "promotion intervals need the shared index; a process-local index reads under the lock")
            }
            _promotionNanoseconds = UInt64(max(0, _nanoseconds(interval)))
        }
    }

    // MARK: Create

    /// Creates a segment sized for `capacity` records of `recordSize` bytes and
    /// lays out an empty cache in it.
    ///
    /// - Throws: `.exists` for a taken key, `.invalidSize` for a record size outside
    ///   1...16 MiB - 1, a capacity outside 1...2^30 - 1, or a segment over the system's limit.
    public static func create(
        key: ShmKey? = nil, recordSize: Int, capacity: Int, index: IndexKind = .shared,
        permissions: UInt16 = 0o600, persistent: Bool = false, options: Options = Options()
    ) throws(ShmError) -> ShmLRU {
        let operation = "ShmLRU.create(key: \(key.map(\.description) ?? "random"), recordSize: \(recordSize), capacity: \(capacity))"
        guard let layout = _Layout(recordSize: recordSize, capacity: capacity, indexKind: index) else {
            throw ShmError(
                .invalidSize, operation,
                detail: "recordSize must be in 1...\(_Layout.maxRecordSize), capacity in 1...\(_Layout.maxCapacity)")
        }
        let region = try ShmRegion.create(
            key: key, byteCount: layout.totalSize, permissions: permissions, persistent: persistent)
        do {
            return try ShmLRU(initializing: region, layout: layout, zeroFilled: true, options: options)
        } catch {
            try? region.remove()
            _ = try? region.detach()
            throw error
        }
    }

    /// Lays out an empty cache in an existing region (the seed's `initLRU(…, true)`).
    /// `capacity` defaults to as many records as fit.
    ///
    /// - Throws: `.exists` if the region already holds a ShmLRU cache,
    ///   `.invalidSize` if not even one record fits, `.readOnly`.
    public convenience init(
        initializing region: ShmRegion, recordSize: Int, capacity: Int? = nil, index: IndexKind = .shared,
        options: Options = Options()
    ) throws(ShmError) {
        let operation = "ShmLRU(initializing: \(region.key), recordSize: \(recordSize))"
        guard region.isAttached else { throw ShmError(.detached, operation) }
        guard !region.isReadOnly else { throw ShmError(.readOnly, operation) }
        let fitting = _Layout.capacity(fitting: region.byteCount, recordSize: recordSize, indexKind: index)
        let wanted = capacity ?? fitting
        guard wanted >= 1, wanted <= fitting,
            let layout = _Layout(recordSize: recordSize, capacity: wanted, indexKind: index)
        else {
            throw ShmError(
                .invalidSize, operation,
                detail: "\(region.byteCount) bytes hold at most \(fitting) records of \(recordSize) bytes; asked \(wanted)")
        }
        if region.byteCount >= 8, _Segment(base: region._attachment.base, layout: layout).load64(_Layout.H.magic) == _Layout.magic {
            throw ShmError(.exists, operation, detail: "the region already holds a ShmLRU cache: attach to it")
        }
        try self.init(initializing: region, layout: layout, zeroFilled: false, options: options)
    }

    private convenience init(initializing region: ShmRegion, layout: _Layout, zeroFilled: Bool, options: Options)
        throws(ShmError)
    {
        let base = region._attachment.base
        if !zeroFilled { base.initializeMemory(as: UInt8.self, repeating: 0, count: layout.totalSize) }
        let segment = _Segment(base: base, layout: layout)
        segment.store(_Layout.H.version, _Layout.version)
        segment.store(_Layout.H.headerSize, UInt32(_Layout.headerSize))
        segment.store(_Layout.H.recordSize, UInt32(layout.recordSize))
        segment.store(_Layout.H.stride, UInt32(layout.stride))
        segment.store(_Layout.H.capacity, UInt32(layout.capacity))
        segment.store(_Layout.H.indexKind, layout.indexKind == .shared ? 1 : 0)
        segment.store64(_Layout.H.indexOffset, UInt64(layout.indexOffset))
        segment.store(_Layout.H.indexSlots, UInt32(layout.indexSlots))
        segment.store(_Layout.H.indexBits, UInt32(layout.indexBits))
        segment.store64(_Layout.H.recordsOffset, UInt64(layout.recordsOffset))
        segment.store64(_Layout.H.segmentSize, UInt64(layout.totalSize))
        segment.freeHead = _Layout.none
        segment.head = _Layout.none
        segment.tail = _Layout.none
        segment.store64(_Layout.H.createdAt, cshm_monotonic_ns())
        try _RobustMutex.initialize(at: segment.mutex)
        // Publish: the magic goes last, with release ordering, so an attacher that
        // sees it sees a complete header.
        cshm_store_release_u64(segment.u64(_Layout.H.magic), _Layout.magic)
        try self.init(region: region, layout: layout, options: options)
    }

    // MARK: Attach

    /// Attaches the cache in the segment with this key (the seed's `initLRU(…, false)`).
    ///
    /// - Parameter recordSize: if given, the cache must have this record size.
    /// - Throws: `.notFound`; `.incompatibleSegment` for a segment that is not a
    ///   ShmLRU cache of this layout version, or another record size; `.corrupted`
    ///   for a header that does not add up or claims more than the segment holds.
    public static func attach(key: ShmKey, recordSize: Int? = nil, options: Options = Options()) throws(ShmError) -> ShmLRU {
        let region = try ShmRegion.attach(key: key, allowingOwner: options.allowedOwner)
        return try ShmLRU(attaching: region, recordSize: recordSize, options: options)
    }

    /// Attaches the cache that an initializer laid out in `region`.
    public convenience init(attaching region: ShmRegion, recordSize: Int? = nil, options: Options = Options()) throws(ShmError) {
        let layout = try ShmLRU._validateHeader(of: region, expectedRecordSize: recordSize, wait: options.attachWait)
        try self.init(region: region, layout: layout, options: options)
        if let local = _localIndex {
            try _withLock("attach(key: \(region.key))") { () throws(ShmError) in try local.rebuild(shareKey: nil) }
        }
    }

    /// Reads the header and checks every field against the kernel's segment size.
    /// `readOnlyAllowed` is for `probe(key:)`, which only reads the header.
    static func _validateHeader(
        of region: ShmRegion, expectedRecordSize: Int?, wait: Duration, readOnlyAllowed: Bool = false
    ) throws(ShmError) -> _Layout {
        let operation = "ShmLRU.attach(key: \(region.key))"
        guard region.isAttached else { throw ShmError(.detached, operation) }
        guard readOnlyAllowed || !region.isReadOnly else {
            throw ShmError(.readOnly, operation, detail: "the cache's lock needs a read-write attachment")
        }
        guard region.byteCount >= _Layout.headerSize else {
            throw ShmError(.incompatibleSegment, operation, detail: "\(region.byteCount) bytes is smaller than a ShmLRU header")
        }
        let base = region._attachment.base
        let magicPointer = base.assumingMemoryBound(to: UInt64.self)
        var magic = cshm_load_acquire_u64(magicPointer)
        if magic == 0 {  // maybe still being initialized by its creator
            let deadline = cshm_monotonic_ns() &+ UInt64(max(0, _nanoseconds(wait)))
            while magic == 0, cshm_monotonic_ns() < deadline {
                usleep(1_000)
                magic = cshm_load_acquire_u64(magicPointer)
            }
        }
        guard magic == _Layout.magic else {
            throw ShmError(
                .incompatibleSegment, operation,
                detail: magic == 0 ? "no ShmLRU cache was initialized in this segment" : "not a ShmLRU segment (magic 0x\(String(magic, radix: 16)))")
        }
        func field(_ offset: Int) -> UInt32 { cshm_load_relaxed_u32((base + offset).assumingMemoryBound(to: UInt32.self)) }
        func field64(_ offset: Int) -> UInt64 { cshm_load_relaxed_u64((base + offset).assumingMemoryBound(to: UInt64.self)) }
        let version = field(_Layout.H.version)
        guard version == _Layout.version else {
            throw ShmError(.incompatibleSegment, operation, detail: "layout version \(version); this library reads \(_Layout.version)")
        }
        let recordSize = Int(field(_Layout.H.recordSize))
        let capacity = Int(field(_Layout.H.capacity))
        let kindRaw = field(_Layout.H.indexKind)
        guard Int(field(_Layout.H.headerSize)) == _Layout.headerSize, kindRaw <= 1,
            let layout = _Layout(recordSize: recordSize, capacity: capacity, indexKind: kindRaw == 1 ? .shared : .processLocal)
        else {
            throw ShmError(.corrupted, operation, detail: "header sizes out of range (record \(recordSize), capacity \(capacity))")
        }
        guard Int(field(_Layout.H.stride)) == layout.stride,
            field64(_Layout.H.indexOffset) == UInt64(layout.indexOffset),
            Int(field(_Layout.H.indexSlots)) == layout.indexSlots,
            Int(field(_Layout.H.indexBits)) == layout.indexBits,
            field64(_Layout.H.recordsOffset) == UInt64(layout.recordsOffset),
            field64(_Layout.H.segmentSize) == UInt64(layout.totalSize)
        else {
            throw ShmError(.corrupted, operation, detail: "header offsets do not match its record size and capacity")
        }
        guard layout.totalSize <= region.byteCount else {
            throw ShmError(
                .corrupted, operation, detail: "header claims \(layout.totalSize) bytes; the segment has \(region.byteCount)")
        }
        guard _RobustMutex(address: base + _Layout.H.mutex).hasExpectedKind else {
            throw ShmError(.corrupted, operation, detail: "the segment's lock is not a robust process-shared mutex")
        }
        if let expectedRecordSize, expectedRecordSize != recordSize {
            throw ShmError(
                .incompatibleSegment, operation, detail: "record size is \(recordSize), expected \(expectedRecordSize)")
        }
        return layout
    }

    /// Detaches this handle's region (see `ShmRegion.detach()`); returns the attachments left.
    @discardableResult
    public func detach() throws(ShmError) -> Int { try region.detach() }

    // MARK: Locking

    @inline(__always)
    func _checkAttached(_ operation: @autoclosure () -> String) throws(ShmError) {
        guard _attachment.isAttached else { throw ShmError(.detached, operation()) }
    }

    /// Runs `body` under the segment's lock. A previous holder that died is
    /// repaired after first; a structure found inconsistent inside `body` is
    /// repaired and `body` retried once.
    @inline(__always)  // the body closure then inlines too: no context, no thunk on every locked call
    func _withLock<R>(
        _ operation: @autoclosure () -> String, timeoutNanoseconds: Int64? = nil, _ body: () throws(ShmError) -> R
    ) throws(ShmError) -> R {
        // Counted in flight (waiting or holding): a concurrent `detach()` waits for
        // this call to release the lock before the mapping is taken away.
        guard _attachment.enter() else { throw ShmError(.detached, operation()) }
        defer { _attachment.leave() }
        let acquired: _RobustMutex.Acquired
        do { acquired = try _mutex.lock(timeoutNanoseconds: timeoutNanoseconds ?? _lockTimeoutNanoseconds) } catch {
            throw ShmError(error.code, operation(), errno: error.errno, detail: error.detail)
        }
        defer {
            _mutex.unlock()
            _segment.wakeChangeWaiters()  // see `_Segment.publishChange()`
        }
        if acquired == .previousOwnerDied {
            _rebuildLocked()
            _mutex.markConsistent()
        }
        if let local = _localIndex, local.generationSeen != _segment.generation {
            try? local.rebuild(shareKey: nil)
        }
        do {
            return try body()
        } catch where error.code == .corrupted {
            _rebuildLocked()
            return try body()
        }
    }
}

@inline(__always)
func _nanoseconds(_ duration: Duration) -> Int64 {
    let (seconds, attoseconds) = duration.components
    let (total, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
    if overflow { return seconds < 0 ? .min : .max }
    return total &+ attoseconds / 1_000_000_000
}
