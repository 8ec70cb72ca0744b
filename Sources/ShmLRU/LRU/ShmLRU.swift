import CShm
import Synchronization

/// An LRU cache of fixed-size records inside a SysV shared-memory segment,
/// shared by every process that attaches it.
///
/// One process creates it (shm-typed-lru's "initializer"); others attach by key. Every
/// structural change happens under a process-shared lock in the segment (`_SegmentLock`),
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
        /// In each process (shm-typed-lru's design): after peer writes, call `reloadIndex()`.
        /// A stale map never returns another key's value; it reports a miss.
        case processLocal
    }

    /// What `set` does with a new hash when every record is in use.
    public enum FullPolicy: Sendable, Hashable {
        /// Evict the record the eviction policy chooses (the least recently used
        /// under `.lru`, the policy's victim under SIEVE, S3-FIFO and TinyLFU) and
        /// report its hash (the default).
        case evict
        /// Throw `.full` and change nothing (shm-typed-lru's behaviour).
        case refuse

        /// The former name of ``evict``, which only said what `.lru` does.
        @available(*, deprecated, renamed: "evict")
        public static var evictLeastRecentlyUsed: FullPolicy { .evict }
    }

    /// When a read (or an update) moves its record to the head of the LRU list.
    public enum Promotion: Sendable, Hashable {
        /// Every read and update takes the lock and moves the record to the head
        /// (exact LRU; shm-typed-lru's behaviour).
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

    /// How this handle behaves: when full, when it promotes, how long it waits for the lock and for a cache being created. Per handle: not stored in the segment.
    public struct Options: Sendable, Hashable {
        /// What a set of a new hash does when no record is free.
        public var whenFull: FullPolicy
        /// When a read moves its record to the head of the LRU list.
        public var promotion: Promotion
        /// How long to wait for the segment's lock before throwing `.lockTimeout`
        /// (0: try once; negative: `.invalidArgument`); nil waits for ever.
        public var lockTimeout: Duration?
        /// How long `attach` waits for a cache that is still being initialized.
        public var attachWait: Duration
        /// The eviction policy. `create` records it in the segment (nil: `.lru`);
        /// `attach` with nil takes the segment's, and with another policy than the
        /// segment's throws `.incompatibleSegment`. Under `.sieve` and `.s3fifo`
        /// reads never take the lock (with the shared index), whatever `promotion`
        /// says; `.atMostEvery(interval)` then only sets how often a hit refreshes
        /// its record's last-use time (default: once a second).
        public var policy: EvictionPolicy?
        /// A user id whose segments `attach` accepts besides this process's
        /// effective uid and root (see `ShmRegion.attach(key:readOnly:allowingOwner:)`).
        public var allowedOwner: UInt32?

        /// Options; the defaults evict when full, promote on every read (exact LRU), wait up to 10 s for the lock and 2 s for a cache being created.
        public init(
            whenFull: FullPolicy = .evict, promotion: Promotion = .onEveryRead,
            lockTimeout: Duration? = .seconds(10), attachWait: Duration = .seconds(2), policy: EvictionPolicy? = nil,
            allowedOwner: UInt32? = nil
        ) {
            self.policy = policy
            self.whenFull = whenFull
            self.promotion = promotion
            self.lockTimeout = lockTimeout
            self.attachWait = attachWait
            self.allowedOwner = allowedOwner
        }
    }

    /// The region holding the cache. Detaching it ends this handle.
    public let region: ShmRegion
    /// The options this handle was opened with.
    public let options: Options

    let _segment: _Segment
    /// The region's mapping (held here too, so the hot paths check it with one load).
    let _attachment: _Attachment
    let _lock: _SegmentLock
    let _sharedIndex: _IndexTable?
    let _localIndex: _LocalIndex?
    /// The lock-free read's view of the shared index and the records.
    let _probe: _Probe
    let _lockTimeoutNanoseconds: Int64
    /// Nanoseconds between promotions of a record; 0 for exact LRU. Non-zero:
    /// reads are lock-free.
    let _promotionNanoseconds: UInt64
    /// Exact LRU: a use moves the record to the head, under the lock.
    let _exactLRU: Bool
    /// The segment's policy room (Policy/), taken once here: the locked paths call
    /// through it.
    let _room: any _PolicyRoom.Type
    /// Its set, removal and eviction members, as function values (`_RoomCalls`).
    let _roomCalls: _RoomCalls
    /// The policy's hit counts a frequency (S3-FIFO) rather than marking CLOCK's
    /// bit (`_PolicyRoom.countsFrequency`): the hit path's one policy branch.
    let _countsFrequency: Bool
    /// TinyLFU: the mini caches' area (`_TinyLFUMinis`), nil for the other
    /// policies; `_miniRing` is its use ring, to which a hit on a sampled key
    /// (stamp bit 3) appends its hash.
    let _minis: _TinyLFUMinis.Place?
    let _miniRing: UnsafeMutablePointer<UInt64>?
    let _miniRingMask: Int
    let _hits = Atomic<UInt64>(0)
    let _misses = Atomic<UInt64>(0)
    /// The part of `_hits` / `_misses` already added to the segment's totals (under the lock).
    let _hitsPublished = Atomic<UInt64>(0)
    let _missesPublished = Atomic<UInt64>(0)
    let _busyMisses = Atomic<UInt64>(0)
    /// This handle's view of the coarse monotonic clock, for the time of a mark
    /// and for whether a marked record's mark is an interval old: refreshed every
    /// `_clockRefreshReads` hits (and every as many locked reads and updates).
    /// Reading the clock on every hit would cost more than the hit: the vDSO read
    /// stalls the memory accesses in flight (measured: +150 to +230 ns per get at
    /// 1M records in this VM). It lags the real clock by at most 63 of this
    /// handle's hits; a lag only delays a refresh of a mark's time, never the
    /// first mark after a link (which reads the clock afresh: see `_markUse`).
    let _clock = Atomic<UInt64>(_coarseMonotonicNanoseconds())
    static let _clockRefreshReads: UInt64 = 64
    /// Locked reads and updates, counted for refreshing `_clock`.
    let _clockTicks = Atomic<UInt64>(0)

    /// Records in the cache.
    public var capacity: Int { _segment.layout.capacity }
    /// The largest value a record holds, in bytes.
    public var recordSize: Int { _segment.layout.recordSize }
    /// Where the hash index lives (fixed at creation).
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
        #if SHMLRU_TESTING
        _lock = _SegmentLock(address: segment.lock, faults: segment.faults)
        #else
        _lock = _SegmentLock(address: segment.lock)
        #endif
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
        _room = layout.policy.room
        _roomCalls = _room.calls
        _countsFrequency = _room.countsFrequency
        _minis = _TinyLFUMinis.Place(segment)
        _miniRing = _minis?.base.assumingMemoryBound(to: UInt64.self)
        _miniRingMask = (_minis?.geometry.ringSlots ?? 1) - 1
        switch options.promotion {
        case .onEveryRead:
            // SIEVE and S3-FIFO read without the lock whenever the index is shared.
            _promotionNanoseconds = layout.policy != .lru && layout.indexKind == .shared ? 1_000_000_000 : 0
        case .atMostEvery(let interval):
            guard layout.indexKind == .shared else {
                throw ShmError(
                    .invalidArgument, "ShmLRU(options:)",
                    detail: "promotion intervals need the shared index; a process-local index reads under the lock")
            }
            let nanoseconds = UInt64(max(0, _nanoseconds(interval)))
            _promotionNanoseconds = layout.policy != .lru ? max(1, nanoseconds) : nanoseconds
        }
        _exactLRU = layout.policy == .lru && _promotionNanoseconds == 0
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
        try _create(
            key: key, recordSize: recordSize, capacity: capacity, index: index, permissions: permissions,
            persistent: persistent, options: options, hugePages: false)
    }

    /// `create`, in a segment of huge pages or not (ShmLRU+HugePages.swift).
    static func _create(
        key: ShmKey?, recordSize: Int, capacity: Int, index: IndexKind, permissions: UInt16, persistent: Bool,
        options: Options, hugePages: Bool
    ) throws(ShmError) -> ShmLRU {
        let operation =
            "ShmLRU.create(key: \(key.map(\.description) ?? "random"), recordSize: \(recordSize), capacity: \(capacity)"
            + (hugePages ? ", hugePages: true)" : ")")
        try options._validate(operation)
        guard let layout = _Layout(recordSize: recordSize, capacity: capacity, indexKind: index, policy: options.policy ?? .lru)
        else {
            throw ShmError(
                .invalidSize, operation,
                detail: "recordSize must be in 1...\(_Layout.maxRecordSize), capacity in 1...\(_Layout.maxCapacity)")
        }
        let region: ShmRegion
        do {
            region = try ShmRegion.create(
                key: key, byteCount: layout.totalSize, permissions: permissions, persistent: persistent, hugePages: hugePages)
        } catch where error.code == .exists {
            throw ShmError(
                .exists, operation, errno: error.errno,
                detail: "a segment already has this key: ShmLRU.attach(key:) attaches it, ShmLRU.create(key: nil, …) picks a free key")
        }
        do {
            return try ShmLRU(initializing: region, layout: layout, zeroFilled: true, options: options)
        } catch {
            try? region.remove()
            _ = try? region.detach()
            throw error
        }
    }

    /// Lays out an empty cache in an existing region (shm-typed-lru's `initLRU(…, true)`).
    /// `capacity` defaults to as many records as fit.
    ///
    /// - Throws: `.exists` if the region already holds a ShmLRU cache,
    ///   `.invalidSize` if not even one record fits, `.readOnly`.
    public convenience init(
        initializing region: ShmRegion, recordSize: Int, capacity: Int? = nil, index: IndexKind = .shared,
        options: Options = Options()
    ) throws(ShmError) {
        let operation = "ShmLRU(initializing: \(region.key), recordSize: \(recordSize))"
        try options._validate(operation)
        guard region.isAttached else { throw ShmError(.detached, operation) }
        guard !region.isReadOnly else { throw ShmError(.readOnly, operation) }
        let policy = options.policy ?? .lru
        let fitting = _Layout.capacity(fitting: region.byteCount, recordSize: recordSize, indexKind: index, policy: policy)
        let wanted = capacity ?? fitting
        guard wanted >= 1, wanted <= fitting,
            let layout = _Layout(recordSize: recordSize, capacity: wanted, indexKind: index, policy: policy)
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

    convenience init(initializing region: ShmRegion, layout: _Layout, zeroFilled: Bool, options: Options)
        throws(ShmError)
    {
        let base = region._attachment.base
        if !zeroFilled { base.initializeMemory(as: UInt8.self, repeating: 0, count: layout.totalSize) }
        let segment = _Segment(base: base, layout: layout)
        segment.write(_Layout.fields, layout)
        segment.freeHead = _Layout.none
        segment.head = _Layout.none
        segment.tail = _Layout.none
        layout.policy.room.initialize(segment)
        segment.store64(_Layout.H.createdAt, _monotonicNanoseconds())
        _SegmentLock.initialize(at: segment.lock)
        // Publish: the magic goes last, with release ordering, so an attacher that
        // sees it sees a complete header.
        cshm_store_release_u64(segment.u64(_Layout.H.magic), _Layout.magic)
        try self.init(region: region, layout: layout, options: options)
    }

    // MARK: Attach

    /// Attaches the cache in the segment with this key (shm-typed-lru's `initLRU(…, false)`).
    ///
    /// - Parameters:
    ///   - key: the segment's key.
    ///   - recordSize: if given, the cache must have this record size.
    ///   - options: this handle's behaviour (when full, promotion, timeouts).
    /// - Throws: `.notFound`; `.incompatibleSegment` for a segment that is not a
    ///   ShmLRU cache of this layout version, or another record size; `.corrupted`
    ///   for a header that does not add up or claims more than the segment holds.
    public static func attach(key: ShmKey, recordSize: Int? = nil, options: Options = Options()) throws(ShmError) -> ShmLRU {
        let region: ShmRegion
        do { region = try ShmRegion.attach(key: key, allowingOwner: options.allowedOwner) } catch {
            ShmEvents._emitIfRefused(error, key: key)
            throw error
        }
        return try ShmLRU(attaching: region, recordSize: recordSize, options: options)
    }

    /// Attaches the cache that an initializer laid out in `region`.
    public convenience init(attaching region: ShmRegion, recordSize: Int? = nil, options: Options = Options()) throws(ShmError) {
        try options._validate("ShmLRU.attach(key: \(region.key))")
        let layout: _Layout
        do { layout = try ShmLRU._validateHeader(of: region, expectedRecordSize: recordSize, wait: options.attachWait) } catch {
            ShmEvents._emitIfRefused(error, key: region.key)
            throw error
        }
        if let wanted = options.policy, wanted != layout.policy {
            throw ShmError(
                .incompatibleSegment, "ShmLRU.attach(key: \(region.key))",
                detail: "the cache evicts by \(layout.policy.rawValue), not \(wanted.rawValue) (pass policy: nil to take the segment's)")
        }
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
        let header = try _HeaderCheck(
            region, magic: _Layout.magic, versionOffset: _Layout.H.version, version: _Layout.version, what: "ShmLRU cache",
            absent: "no ShmLRU cache was initialized in this segment", wait: wait, operation)
        guard let layout = _Layout.described(by: header.u32) else {
            throw ShmError(
                .corrupted, operation,
                detail: "header sizes out of range (record \(header.u32(_Layout.H.recordSize)), capacity \(header.u32(_Layout.H.capacity)))")
        }
        let recordSize = layout.recordSize
        if let mismatch = header.firstMismatch(_Layout.fields, layout) {
            throw ShmError(.corrupted, operation, detail: "header offsets do not match its record size and capacity: \(mismatch)")
        }
        guard layout.totalSize <= region.byteCount else {
            throw ShmError(
                .corrupted, operation, detail: "header claims \(layout.totalSize) bytes; the segment has \(region.byteCount)")
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
        let acquired: _SegmentLock.Acquired
        do { acquired = try _lock.lock(timeoutNanoseconds: timeoutNanoseconds ?? _lockTimeoutNanoseconds) } catch {
            throw _lockFailed(error, operation())
        }
        defer {
            _lock.unlock()
            _segment.wakeChangeWaiters()  // see `_Segment.publishChange()`
        }
        if acquired == .previousOwnerDied {
            _rebuildLocked()
            ShmEvents._emit(ShmEvent(.recoveredFromDeadHolder, key: key, operation: operation()))
        }
        _publishReadCounts()
        if let local = _localIndex, local.generationSeen != _segment.generation {
            try? local.rebuild(shareKey: nil)
        }
        do {
            return try body()
        } catch where error.code == .corrupted {
            _rebuildLocked()
            ShmEvents._emit(ShmEvent(.repairedInconsistency, key: key, operation: operation(), detail: error.detail))
            return try body()
        }
    }
}

extension ShmLRU.Options {
    /// Rejects a negative lock timeout (it used to mean "wait for ever").
    func _validate(_ operation: @autoclosure () -> String) throws(ShmError) {
        if let lockTimeout, lockTimeout < .zero {
            throw ShmError(.invalidArgument, operation(), detail: "lockTimeout must not be negative (0: try once; nil: no limit), not \(lockTimeout)")
        }
    }
}
