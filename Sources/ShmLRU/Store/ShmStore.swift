import CShm
import Glibc

// ShmStore: cluster-shared-memory's keyed store, per-key locks, listen and TTL,
// with no master process: every process works on shared memory directly.
//
// Design
// ------
// * Two segments. The store's key names a small *store segment* (magic
//   "SHMSTOR1", layout in _StoreLayout.swift) holding the configuration, the
//   per-key lock table, its waiter table and the change log. The values live in
//   an ordinary ShmLRU segment (shared index) under a random free key recorded in
//   the store segment's header. Why a companion segment and not a new section of
//   the LRU segment: the LRU layout (LRU/_Layout.swift, `verify()`, attach
//   validation, recovery) stays exactly as it is, every LRU tool keeps working on
//   the data segment, and the lock table has a lock domain of its own (a process
//   blocked on a per-key lock never holds the data lock). The cost is one more
//   segment per store; `remove()` removes both, and a store created by a process
//   that exits normally is removed with it, like any segment.
// * Records. A value is stored in one LRU record whose payload is the store's
//   24-byte header (key length, expiry, max age), the UTF-8 key, then the value.
//   `max` is the LRU's capacity; a set into a full store first reclaims expired
//   entries near the LRU tail, then evicts the least recently used (or throws
//   `.full` with `whenFull: .refuse`).
// * Hashing. The LRU hash of a key is SipHash-1-3 of its UTF-8 bytes, keyed by
//   a random 128-bit seed kept in the store segment's header (_StableHash.swift):
//   stable across the processes of one store, and not computable offline, so a
//   client choosing keys cannot aim them at one probe window. The key is stored
//   and compared on every lookup, so a collision never returns another key's value.
//   Collisions are resolved by probing: a key may live under hash, hash+1, …,
//   hash+probeLimit-1 (default 8); a lookup checks them all (there is no
//   tombstone, so a removal never hides a key further on). When every probe hash
//   is taken by other live keys, `set` throws `.keyCollision` and changes nothing.
// * Values. Raw bytes (`set(_:bytes:)`, `bytes(_:)`) or any `Codable` value,
//   encoded as JSON with FoundationEssentials' JSONEncoder: part of the toolchain
//   (no package), much lighter than Foundation, and it encodes top-level
//   fragments, so 0, false and "" round-trip (cluster-shared-memory loses them). Only
//   ShmStore+Codable.swift imports it. A key plus value larger than a record is
//   `.valueTooLarge` and changes nothing.
// * Sized by memory (`Configuration(memory:maxValueSize:)`, ShmStore+Memory.swift):
//   records of 256 bytes, and a value that does not fit one spills to the value
//   heap at the end of the store segment, chained over 1024-byte chunks
//   (ValueHeap/: _ValueHeap.swift; write, free and eviction in
//   ShmStore+SpilledValues.swift, lock-free reads in ShmStore+SpilledRead.swift,
//   recovery and verify in ShmStore+ValueHeapRecovery.swift). The heap is guarded
//   by the data lock.
// * Every write runs under the data segment's lock (the cache's owner-word lock,
//   LRU/Lock/_SegmentLock.swift, through `ShmLRU._withLock`), including the
//   change-log append, so the log order is the order of the changes. Reads are
//   lock-free (Read/).
// * Per-key locks (Locks/_LockTable.swift): a table of slots bound to keys, guarded
//   by its own robust mutex; waiters queue with an arrival number and the earliest
//   live waiter takes a released lock (FIFO). The holder is a process (PID + start
//   time), so a token may be released from any thread. A waiter sleeps on the
//   slot's futex word and wakes at least every 50 ms to check the holder is still
//   alive; a dead holder's lock goes to the next waiter, who is told.
// * Listen (Listen/ShmStore+Listen.swift): every change appends an entry (kind, key,
//   new value) to a ring in the store segment and bumps a futex word. Each store
//   handle runs at most one pump thread, started by the first `listen`, that
//   sleeps on that word (no CPU while nothing changes), reads new entries and
//   hands them to this process's listeners of their key. A listener that falls
//   more than the ring's length behind is told how many changes it missed.
// * TTL (ShmStore+TTL.swift): a store-wide default max age and a per-entry
//   override; expiry instants are CLOCK_MONOTONIC nanoseconds (one clock for every
//   process). An expired entry is invisible, and is reclaimed when met (get, set
//   of its key or a key sharing its probes, a set into a full store, or
//   `purgeExpired()`). A get renews the age only with `renewsAgeOnGet`.

/// A keyed store of values shared by processes, on an LRU segment: `set`, `get`
/// and `remove` by `String` key, per-key cross-process locks, change listeners,
/// and expiry.
///
///     let store = try ShmStore.create(key: 0x5EED, configuration: .init(capacity: 10_000))
///     try store.set("myObj", Person(name: "Tom", age: 10))
///     // any process
///     let peer = try ShmStore.attach(key: 0x5EED)
///     try peer.withBlockingLock("myObj") { _ in
///         var tom = try peer.get("myObj", as: Person.self)!
///         tom.age += 1
///         try peer.set("myObj", tom)
///     }
public final class ShmStore: @unchecked Sendable {
    /// Fixed when the store is created; every process that attaches uses it.
    public struct Configuration: Sendable, Hashable {
        /// The most entries held (cluster-shared-memory's `max`): the LRU's capacity
        /// (sized by memory: `expectedEntries`, by default one per 4 KiB of `memory`).
        public var capacity: Int
        /// Bytes per record: 24 + the key's UTF-8 length + the encoded value must fit
        /// (sized by memory: 256, and a larger value spills to the value heap).
        public var recordSize: Int
        /// The default time an entry lives after its set; nil: entries do not expire.
        public var maxAge: Duration?
        /// Whether a get restarts the entry's max age (cluster-shared-memory's default: it does not).
        public var renewsAgeOnGet: Bool
        /// A set of a new key into a full store evicts the least recently used entry, or throws `.full`.
        public var whenFull: ShmLRU.FullPolicy
        /// Keys that may be locked or waited for at once.
        public var lockSlots: Int
        /// Lock calls that may wait at once, over all keys and processes.
        public var lockWaiters: Int
        /// Changes the log keeps for listeners that fall behind.
        public var changeLogCapacity: Int
        /// How many hashes (hash, hash+1, …) a key may use when its own is taken (1...64).
        public var probeLimit: Int
        /// How a full store chooses the entry to evict (recorded in the data segment;
        /// attach takes the segment's). See `ShmLRU.EvictionPolicy`. The default,
        /// `ShmLRU.EvictionPolicy.storeDefault` (adaptive W-TinyLFU), missed least
        /// of this library's policies on the real traces the bench replays (within
        /// 2 % of libCacheSim's best on 17 of 18 rows, S3-FIFO 13; it misses up to
        /// 4 % more than S3-FIFO on synthetic Zipf: see "Eviction policies"), and
        /// its hits take no lock.
        public var policy: ShmLRU.EvictionPolicy
        /// When a get moves its entry towards the head of the LRU list. With
        /// `.atMostEvery` (the default) store reads take no lock (see
        /// ShmStore+LockFreeRead.swift); `.onEveryRead` is exact LRU, every get under the lock.
        public var promotion: ShmLRU.Promotion
        /// get-or-load: how long a load that found nothing (returned nil) is
        /// remembered as a miss; nil: not remembered (lua-resty-mlcache's `neg_ttl`).
        public var negativeTTL: Duration?
        /// get-or-load: when a load throws, a value expired at most this long ago is
        /// returned instead of the error; nil: never (lua-resty-mlcache's `resurrect_ttl`).
        public var staleIfError: Duration?
        /// This handle's limit on every lock wait: the data segment's lock, and a
        /// per-key lock when no timeout is given (0: try once; nil: no limit).
        /// Not stored in the segment: each process chooses its own.
        public var lockTimeout: Duration?
        /// get-or-load: the longest a load may run; a load still running then is
        /// abandoned (cancelled, its result ignored) and its caller and waiters get
        /// `.loadFailed` (nil: no limit). Not stored in the segment.
        public var loadTimeout: Duration? = ShmStore.defaultLoadTimeout
        /// get-or-load: how long a failed load (thrown or timed out) is remembered,
        /// for every process: callers within it get `.loadFailed` (or the stale
        /// value `staleIfError` allows) instead of running the load again, so a
        /// burst of waiters sees one failure, not one per waiter (nil: not
        /// remembered). Not stored in the segment.
        public var loadFailureTTL: Duration? = .seconds(1)
        /// Memory mode (`init(memory:maxValueSize:expectedEntries:…)`): the byte
        /// budget of both segments, values spilling to a chunk heap; nil: sized by records.
        public var memory: Int?
        /// Memory mode: the largest value `set` takes; nil: sized by records.
        public var maxValueSize: Int?

        /// A configuration sized by records (no value heap: a value must fit one
        /// record); every parameter has a default (10,000 entries of up to 1024 bytes, no expiry, evict when full, 256 lock slots, 256 waiters, 256 changes kept, 8 probes).
        public init(
            capacity: Int = 10_000, recordSize: Int = 1024, maxAge: Duration? = nil, renewsAgeOnGet: Bool = false,
            whenFull: ShmLRU.FullPolicy = .evict, lockSlots: Int = 256, lockWaiters: Int = 256,
            changeLogCapacity: Int = 256, probeLimit: Int = 8, policy: ShmLRU.EvictionPolicy = .storeDefault,
            promotion: ShmLRU.Promotion = .atMostEvery(.seconds(1)), negativeTTL: Duration? = nil, staleIfError: Duration? = nil,
            lockTimeout: Duration? = ShmStore.defaultLockTimeout
        ) {
            self.policy = policy
            self.capacity = capacity
            self.recordSize = recordSize
            self.maxAge = maxAge
            self.renewsAgeOnGet = renewsAgeOnGet
            self.whenFull = whenFull
            self.lockSlots = lockSlots
            self.lockWaiters = lockWaiters
            self.changeLogCapacity = changeLogCapacity
            self.probeLimit = probeLimit
            self.promotion = promotion
            self.negativeTTL = negativeTTL
            self.staleIfError = staleIfError
            self.lockTimeout = lockTimeout
        }
    }

    /// The default `lockTimeout`: 10 s, as the cache's. A finite default turns a
    /// lock wait that cannot end (a holder that cannot run) into an error.
    public static let defaultLockTimeout: Duration? = .seconds(10)

    /// The default `loadTimeout`: 10 s, the default lock timeout (waiters for a
    /// load give up then anyway).
    public static let defaultLoadTimeout: Duration? = .seconds(10)

    /// The store segment's key (the name other processes attach by).
    public var key: ShmKey { _storeRegion.key }
    /// The LRU segment holding the values (for stats and `verify()`; change it only through the store).
    public let cache: ShmLRU
    /// The configuration the store was created with.
    public let configuration: Configuration

    let _storeRegion: ShmRegion
    let _store: _StoreSegment
    let _locks: _LockTable
    let _asyncLocks: _AsyncLockWaiter
    let _maxAgeNanoseconds: UInt64
    let _hash: @Sendable (String) -> UInt32
    /// `_hash` is the stable hash: reads hash the key's UTF-8 bytes in place.
    let _usesStableHash: Bool
    /// The record hash's key, from the header (see _StableHash.swift).
    let _hashSeed: _SipKey

    /// The record hash of `key` in this store (tests choose colliding keys with it).
    package func _recordHash(_ key: String) -> UInt32 { _hash(key) }
    let _hub: _ListenerHub
    /// This handle's decoded values and codec (_DecodedCache.swift).
    let _decoded = _DecodedCache()
    /// The value heap of a store sized by memory; nil for one sized by records.
    let _heap: _ValueHeap?

    /// Records in use, expired ones included until they are reclaimed.
    public var count: Int { cache.count }
    /// The largest key + value a record holds: `recordSize - 24` (in a store
    /// sized by memory, larger values spill to its value heap, up to `maxValueSize`).
    public var maxEntryBytes: Int { cache.recordSize - _StoreLayout.payloadHeaderSize }

    private init(
        storeRegion: ShmRegion, layout: _StoreLayout, cache: ShmLRU, configuration: Configuration,
        hash: (@Sendable (String) -> UInt32)?, lockHash: (@Sendable ([UInt8]) -> UInt64)? = nil
    ) {
        _storeRegion = storeRegion
        let segment = _StoreSegment(base: storeRegion._attachment.base, layout: layout)
        _store = segment
        _locks = _LockTable(
            segment: segment, mutex: _RobustMutex(address: segment.mutex),
            defaultTimeoutNanoseconds: configuration.lockTimeout.map { _nanoseconds($0) } ?? -1,
            hash: lockHash)
        _asyncLocks = _AsyncLockWaiter(table: _locks, region: storeRegion)
        self.cache = cache
        self.configuration = configuration
        _maxAgeNanoseconds = configuration.maxAge.map { UInt64(max(0, _nanoseconds($0))) } ?? 0
        let seed = _SipKey(k0: segment.load64(_StoreLayout.H.hashSeed0), k1: segment.load64(_StoreLayout.H.hashSeed1))
        _hashSeed = seed
        _hash = hash ?? { _storeKeyHash(seed, $0) }
        _usesStableHash = hash == nil
        _hub = _ListenerHub(segment: segment, region: storeRegion)
        _heap = _ValueHeap(segment: segment, maxValueSize: configuration.maxValueSize)
        _hub.owner = self
        _ = _ProcessIdentity.current  // read this process's start time now, while a descriptor is likely free
    }

    deinit { _hub.stop() }

    // MARK: Create

    /// Creates a store: its store segment under `key` (a free random key when
    /// nil: read it back from `key` to hand to other processes), and an LRU data
    /// segment under a free random key.
    ///
    /// - Throws: `.exists` for a taken key (`open(key:configuration:)` attaches
    ///   or replaces a stale one; `attach(key:)` attaches it); `.invalidSize` for a capacity, record
    ///   size or table size out of range; `.invalidArgument` for a max age that is
    ///   not positive or a probe limit outside 1...64.
    public static func create(
        key: ShmKey? = nil, configuration: Configuration = Configuration(), permissions: UInt16 = 0o600,
        persistent: Bool = false
    ) throws(ShmError) -> ShmStore {
        try _create(key: key, configuration: configuration, permissions: permissions, persistent: persistent, hash: nil)
    }

    /// Checks what a handle alone uses (not stored in the segment).
    static func _validateHandleOptions(lockTimeout: Duration?, _ operation: @autoclosure () -> String) throws(ShmError) {
        if let lockTimeout, lockTimeout < .zero {
            throw ShmError(
                .invalidArgument, operation(), detail: "lockTimeout must not be negative (0: try once; nil: no limit), not \(lockTimeout)")
        }
    }

    /// `create` with a replaceable hash function (tests force collisions with it).
    static func _create(
        key: ShmKey?, configuration: Configuration, permissions: UInt16, persistent: Bool,
        hash: (@Sendable (String) -> UInt32)?, lockHash: (@Sendable ([UInt8]) -> UInt64)? = nil
    ) throws(ShmError) -> ShmStore {
        let operation = "ShmStore.create(key: \(key.map { "\($0)" } ?? "nil"))"
        let c = configuration
        try _validateHandleOptions(lockTimeout: c.lockTimeout, operation)
        for (name, window) in [
            ("negativeTTL", c.negativeTTL), ("staleIfError", c.staleIfError), ("loadTimeout", c.loadTimeout),
            ("loadFailureTTL", c.loadFailureTTL),
        ] {
            if let window, window <= .zero {
                throw ShmError(.invalidArgument, operation, detail: "\(name) must be positive (nil: none)")
            }
        }
        let plan = try _memoryPlan(c, operation)
        guard let layout = _StoreLayout(
            recordSize: c.recordSize, lockSlots: c.lockSlots, waiterSlots: c.lockWaiters, logCapacity: c.changeLogCapacity,
            heapChunks: plan?.chunks ?? 0)
        else {
            throw ShmError(
                .invalidSize, operation,
                detail: "recordSize must be in \(_StoreLayout.payloadHeaderSize + 1)...\(_Layout.maxRecordSize); lockSlots, "
                    + "lockWaiters and changeLogCapacity in 1...\(_StoreLayout.maxTableSlots)")
        }
        guard (1...64).contains(c.probeLimit) else {
            throw ShmError(.invalidArgument, operation, detail: "probeLimit must be in 1...64, not \(c.probeLimit)")
        }
        if let maxAge = c.maxAge, maxAge <= .zero {
            throw ShmError(.invalidArgument, operation, detail: "maxAge must be positive (nil: no expiry)")
        }
        guard c.capacity >= 1, c.capacity < _Layout.maxCapacity else {
            throw ShmError(.invalidSize, operation, detail: "capacity must be in 1...\(_Layout.maxCapacity - 1)")
        }
        let region: ShmRegion
        do {
            region = try ShmRegion.create(key: key, byteCount: layout.totalSize, permissions: permissions, persistent: persistent)
        } catch where error.code == .exists {
            throw ShmError(
                .exists, operation, errno: error.errno,
                detail: "a segment already has this key: ShmStore.open(key:configuration:) attaches it (or replaces a stale "
                    + "store), ShmStore.attach(key:) attaches it as it is")
        }
        let s = _StoreSegment(base: region._attachment.base, layout: layout)
        // Version and header size first, then the data segment's key before that
        // segment exists: a creator killed from here on leaves a half-made store
        // (no magic) that names every segment it made, so `open` and
        // `remove(key:)` can reclaim them (ShmStore+Open.swift).
        var header = _StoreHeader(layout: layout, dataKey: 0, seed: _SipKey.random(), configuration: c)
        var cache: ShmLRU? = nil
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<1_000 where cache == nil {
            let dataKey = ShmKey(UInt32.random(in: 1...0xFFFF_FFFE, using: &generator))
            guard dataKey != region.key else { continue }
            header.dataKey = dataKey.unsignedValue
            s.write(_StoreLayout.identityFields, header)
            cshm_fence_seq_cst()
            do {
                cache = try ShmLRU.create(
                    // One spare record: an update is written into a free record before
                    // the old one is let go (see ShmLRU+Replace.swift).
                    key: dataKey, recordSize: c.recordSize, capacity: c.capacity + 1, index: .shared, permissions: permissions,
                    persistent: persistent, options: ShmLRU.Options(promotion: c.promotion, lockTimeout: c.lockTimeout, policy: c.policy))
            } catch where error.code == .exists {
                continue
            } catch {
                try? region.remove()
                _ = try? region.detach()
                throw error
            }
        }
        guard let cache else {
            try? region.remove()
            _ = try? region.detach()
            throw ShmError(.exists, operation, detail: "no free key found for the data segment")
        }
        _claim(cache, for: region.key)
        #if SHMLRU_TESTING
        // Test-only: a creator killed inside create, its data segment made and
        // claimed, its header unfinished (issue 24, item 5).
        if getenv("SHMLRU_KILL_IN_STORE_CREATE") != nil { kill(getpid(), SIGKILL) }
        #endif
        s.write(_StoreLayout.fields, header)
        if let plan { _ValueHeap.initialize(s, plan) }
        do {
            try _RobustMutex.initialize(at: s.mutex)
        } catch {
            try? region.remove()
            _ = try? region.detach()
            try? cache.region.remove()
            _ = try? cache.detach()
            throw error
        }
        cshm_store_release_u64(s.u64(_StoreLayout.H.magic), _StoreLayout.magic)
        return ShmStore(storeRegion: region, layout: layout, cache: cache, configuration: c, hash: hash, lockHash: lockHash)
    }

    // MARK: Attach

    /// Attaches the store whose store segment has this key.
    ///
    /// - Throws: `.notFound`; `.incompatibleSegment` for a segment that is not a
    ///   ShmStore of this layout version; `.corrupted` for a header that does not
    ///   add up, claims more than the segment holds, or names a data segment that
    ///   is gone or does not match.
    ///   `.permissionDenied` for a segment owned by another user than this one,
    ///   root or `allowingOwner` (see `ShmRegion.attach(key:readOnly:allowingOwner:)`).
    /// - Parameters:
    ///   - key: the store segment's key.
    ///   - wait: how long to wait for a store that its creator is still laying out.
    ///   - lockTimeout: this handle's limit on lock waits (see `Configuration.lockTimeout`).
    ///   - allowingOwner: a user id, besides this process's and root, whose segments may be attached.
    public static func attach(
        key: ShmKey, wait: Duration = .seconds(2), lockTimeout: Duration? = ShmStore.defaultLockTimeout,
        allowingOwner: UInt32? = nil
    ) throws(ShmError) -> ShmStore {
        try _attach(key: key, wait: wait, lockTimeout: lockTimeout, hash: nil, allowingOwner: allowingOwner)
    }

    static func _attach(
        key: ShmKey, wait: Duration, lockTimeout: Duration? = ShmStore.defaultLockTimeout, hash: (@Sendable (String) -> UInt32)?,
        lockHash: (@Sendable ([UInt8]) -> UInt64)? = nil, allowingOwner: UInt32? = nil
    ) throws(ShmError) -> ShmStore {
        try _validateHandleOptions(lockTimeout: lockTimeout, "ShmStore.attach(key: \(key))")
        let region: ShmRegion
        let header: (_StoreLayout, Configuration, ShmKey)
        do {
            region = try ShmRegion.attach(key: key, allowingOwner: allowingOwner)
            header = try _validateHeader(of: region, wait: wait)
        } catch {
            ShmEvents._emitIfRefused(error, key: key)
            throw error
        }
        let (layout, configuration, lruKey) = header
        let data: ShmRegion
        do { data = try ShmRegion.attach(key: lruKey, allowingOwner: allowingOwner) } catch {
            throw ShmError(.corrupted, "ShmStore.attach(key: \(key))", detail: "its data segment \(lruKey) cannot be attached: \(error)")
        }
        return try _attach(
            storeRegion: region, layout: layout, configuration: configuration, data: data, lockTimeout: lockTimeout, hash: hash,
            lockHash: lockHash)
    }

    /// Attaches the store whose segments are attached as `storeRegion` (its header
    /// validated into `layout` and `configuration`) and `data` (the segment the
    /// header names), checking that `data` is its own.
    static func _attach(
        storeRegion region: ShmRegion, layout: _StoreLayout, configuration: Configuration, data: ShmRegion,
        lockTimeout: Duration? = ShmStore.defaultLockTimeout, hash: (@Sendable (String) -> UInt32)?,
        lockHash: (@Sendable ([UInt8]) -> UInt64)? = nil
    ) throws(ShmError) -> ShmStore {
        let operation = "ShmStore.attach(key: \(region.key))"
        let cache: ShmLRU
        do {
            cache = try ShmLRU(
                attaching: data, recordSize: layout.recordSize,
                options: ShmLRU.Options(promotion: configuration.promotion, lockTimeout: lockTimeout))
        } catch {
            throw ShmError(.corrupted, operation, detail: "its data segment \(data.key) cannot be attached: \(error)")
        }
        try _checkOwnership(cache, storeKey: region.key, operation)
        var c = configuration
        c.capacity = cache.capacity - (c.capacity == _StoreLayout.spareRecordMarker ? 1 : 0)
        guard c.capacity >= 1 else {
            throw ShmError(.corrupted, operation, detail: "its data segment holds no record beyond the spare")
        }
        c.policy = cache.policy
        c.lockTimeout = lockTimeout
        return ShmStore(storeRegion: region, layout: layout, cache: cache, configuration: c, hash: hash, lockHash: lockHash)
    }

    /// `readOnlyAllowed` is for `probe(key:)`, which only reads the header.
    static func _validateHeader(
        of region: ShmRegion, wait: Duration, readOnlyAllowed: Bool = false
    ) throws(ShmError) -> (_StoreLayout, Configuration, ShmKey) {
        let operation = "ShmStore.attach(key: \(region.key))"
        guard readOnlyAllowed || !region.isReadOnly else { throw ShmError(.readOnly, operation, detail: "locks and listeners need a read-write attachment") }
        guard region.byteCount >= _StoreLayout.headerSize else {
            throw ShmError(.incompatibleSegment, operation, detail: "\(region.byteCount) bytes is smaller than a ShmStore header")
        }
        let header = try _HeaderCheck(
            region, magic: _StoreLayout.magic, versionOffset: _StoreLayout.H.version, version: _StoreLayout.version,
            what: "ShmStore", absent: "no ShmStore was created in this segment", wait: wait, operation)
        guard let stored = _StoreHeader(reading: header) else {
            throw ShmError(.corrupted, operation, detail: "store header sizes out of range")
        }
        let layout = stored.layout
        if let mismatch = header.firstMismatch(_StoreLayout.identityFields + _StoreLayout.fields, stored) {
            throw ShmError(.corrupted, operation, detail: "store header offsets do not match its sizes: \(mismatch)")
        }
        guard layout.totalSize <= region.byteCount else {
            throw ShmError(.corrupted, operation, detail: "header claims \(layout.totalSize) bytes; the segment has \(region.byteCount)")
        }
        let memoryMode = try _ValueHeap.validate(region, layout, operation)
        let probeLimit = Int(stored.probeLimit)
        let (maxAge, flags, promotion) = (stored.maxAge, stored.flags, stored.promotion)
        let (negativeTTL, staleIfError) = (stored.negativeTTL, stored.staleIfError)
        guard (1...64).contains(probeLimit), maxAge <= UInt64(Int64.max), flags & ~_StoreLayout.knownFlags == 0,
            promotion <= UInt64(Int64.max), negativeTTL <= UInt64(Int64.max), staleIfError <= UInt64(Int64.max)
        else {
            throw ShmError(.corrupted, operation, detail: "store options out of range")
        }
        let lruKey = ShmKey(stored.dataKey)
        guard !lruKey.isPrivate, lruKey != region.key else {
            throw ShmError(.corrupted, operation, detail: "no data segment key")
        }
        let configuration = Configuration(
            // Stands for "the data segment has a spare record" until attach reads its capacity.
            capacity: flags & _StoreLayout.flagSpareRecord != 0 ? _StoreLayout.spareRecordMarker : 0, recordSize: layout.recordSize, maxAge: maxAge == 0 ? nil : .nanoseconds(Int64(maxAge)),
            renewsAgeOnGet: flags & _StoreLayout.flagRenewOnGet != 0,
            whenFull: flags & _StoreLayout.flagRefuseWhenFull != 0 ? .refuse : .evict,
            lockSlots: layout.lockSlots, lockWaiters: layout.waiterSlots, changeLogCapacity: layout.logCapacity,
            probeLimit: probeLimit, promotion: promotion == 0 ? .onEveryRead : .atMostEvery(.nanoseconds(Int64(promotion))),
            negativeTTL: negativeTTL == 0 ? nil : .nanoseconds(Int64(negativeTTL)),
            staleIfError: staleIfError == 0 ? nil : .nanoseconds(Int64(staleIfError)))
        var c = configuration
        (c.memory, c.maxValueSize) = (memoryMode?.memory, memoryMode?.maxValueSize)
        return (layout, c, lruKey)
    }

    // MARK: Detach and remove

    /// Stops this handle's listeners and detaches both segments.
    public func detach() throws(ShmError) {
        _hub.stop()
        _ = try cache.detach()
        _ = try _storeRegion.detach()
    }

    /// Marks both segments for removal: their keys are freed at once, the memory
    /// goes when the last process detaches. This handle stays usable until then.
    public func remove() throws(ShmError) {
        try cache.region.remove()
        try _storeRegion.remove()
    }

    /// Removes the store with this key (its store segment and its data segment).
    ///
    /// The data segment the store header names is removed only if it is this
    /// store's (an ShmLRU cache of its record size claimed by this key, see
    /// ShmStore+Ownership.swift): a forged header cannot make it remove another
    /// program's segment.
    /// A store left half-made by a creator that died inside `create` is removed
    /// with the data segment that creator made.
    /// - Throws: `.notFound`, `.incompatibleSegment` if the key holds no store,
    ///   `.corrupted` if the segment it names as its data is not its own
    ///   (nothing is removed then: remove the store segment alone with
    ///   `ShmRegion.remove(key:)` or `shm-lru rm --force`).
    public static func remove(key: ShmKey) throws(ShmError) {
        let operation = "ShmStore.remove(key: \(key))"
        let region = try ShmRegion.attach(key: key)
        defer { _ = try? region.detach() }
        let header: (_StoreLayout, Configuration, ShmKey)
        do { header = try _validateHeader(of: region, wait: .zero) } catch {
            // A store whose creator died inside `create`: reclaim what it made.
            if _isHalfMadeStore(region), case .success(let info) = _shmStat(id: region.id),
                !(info.creatorPID > 0 && _ProcessIdentity(pid: info.creatorPID, start: 0).isAlive)
            {
                _removeDataSegment(of: region, storeKey: key)
                try region.remove()
                return
            }
            throw error
        }
        let (layout, _, lruKey) = header
        if ShmRegion.exists(key: lruKey) {
            let data: ShmRegion
            do { data = try ShmRegion.attach(key: lruKey, readOnly: true) } catch {
                throw ShmError(error.code, operation, errno: error.errno, detail: "its data segment \(lruKey): \(error)")
            }
            defer { _ = try? data.detach() }
            try _checkDataSegment(data, recordSize: layout.recordSize, storeKey: key, operation)
            try data.remove()  // by id: the segment just checked, even if the key was reused meanwhile
        }
        try region.remove()
    }

    // MARK: Internals

    func _operation(_ name: String, _ key: String) -> String {
        "ShmStore.\(name)(\"\(key.count > 64 ? String(key.prefix(64)) + "…" : key)\", key: \(self.key))"
    }
}
