import CShm

// A store sized by memory: `Configuration(memory:maxValueSize:expectedEntries:)`.
// Its records are 256 bytes (a small value, 24 + key + value <= 256, stays
// inline and is read exactly as in a store sized by records); a larger value
// spills to the value heap, chained over 1024-byte chunks (_ValueHeap.swift).
// The budget covers both segments: the data segment's records and index, the
// store segment's tables, and the heap, which gets whatever is left.

extension ShmStore.Configuration {
    /// Bytes per record of a store sized by memory.
    public static let memoryRecordSize = 256

    /// A store given a byte budget: any value from 0 bytes up to `maxValueSize`
    /// fits, without choosing a record size. Both segments together take at
    /// most `memory` bytes.
    ///
    /// - Parameters:
    ///   - memory: the byte budget of the store (its two shared segments).
    ///   - maxValueSize: the largest value `set` takes (up to 1 GiB). The heap
    ///     must hold two of them (an update keeps the old value until the new
    ///     one is whole), else `create` throws `.invalidSize`.
    ///   - expectedEntries: how many entries the store may hold at most (its
    ///     records, 256 bytes each); by default one per 4 KiB of `memory`, at
    ///     least 64.
    ///   - maxAge: the default time an entry lives after its set; nil: no expiry.
    ///   - renewsAgeOnGet: whether a get restarts the entry's max age.
    ///   - whenFull: evict to make room (by `policy`), or throw `.full`.
    ///   - lockSlots: keys that may be locked or waited for at once.
    ///   - lockWaiters: lock calls that may wait at once.
    ///   - changeLogCapacity: changes kept for listeners that fall behind.
    ///   - probeLimit: hashes a key may use when its own is taken (1...64).
    ///   - policy: how a full store chooses what to evict.
    ///   - promotion: when a get moves its entry towards the head (lock-free by default).
    ///   - negativeTTL: get-or-load: how long a load's nil is remembered.
    ///   - staleIfError: get-or-load: how long past expiry a value may answer a failed load.
    ///   - lockTimeout: this handle's limit on every lock wait (not stored in the segment).
    public init(
        memory: Int, maxValueSize: Int = 1 << 20, expectedEntries: Int? = nil, maxAge: Duration? = nil,
        renewsAgeOnGet: Bool = false, whenFull: ShmLRU.FullPolicy = .evict, lockSlots: Int = 256,
        lockWaiters: Int = 256, changeLogCapacity: Int = 256, probeLimit: Int = 8, policy: ShmLRU.EvictionPolicy = .storeDefault,
        promotion: ShmLRU.Promotion = .atMostEvery(.seconds(1)), negativeTTL: Duration? = nil, staleIfError: Duration? = nil,
        lockTimeout: Duration? = ShmStore.defaultLockTimeout
    ) {
        self.init(
            capacity: expectedEntries ?? Swift.max(64, memory / 4096), recordSize: Self.memoryRecordSize, maxAge: maxAge,
            renewsAgeOnGet: renewsAgeOnGet, whenFull: whenFull, lockSlots: lockSlots, lockWaiters: lockWaiters,
            changeLogCapacity: changeLogCapacity, probeLimit: probeLimit, policy: policy, promotion: promotion,
            negativeTTL: negativeTTL, staleIfError: staleIfError, lockTimeout: lockTimeout)
        self.memory = memory
        self.maxValueSize = maxValueSize
    }
}

extension ShmStore {
    /// How a store's memory is used now (see `memoryUsage()`).
    public struct MemoryUsage: Sendable, Hashable {
        /// The configured budget (`Configuration.memory`); for a store sized by
        /// records, the size of its two segments.
        public var budgetBytes: Int
        /// The size of the two segments (at most `budgetBytes`).
        public var segmentBytes: Int
        /// Key and value bytes of the live entries: what the application stored.
        public var liveBytes: Int
        /// Entries held (expired ones included until reclaimed).
        public var entries: Int
        /// Chunks of the value heap (0 for a store sized by records).
        public var heapChunks: Int
        /// Chunks on the heap's free list.
        public var freeHeapChunks: Int
        /// `liveBytes / budgetBytes`: the share of the budget holding data.
        public var efficiency: Double { budgetBytes > 0 ? Double(liveBytes) / Double(budgetBytes) : 0 }
    }

    /// The memory the store holds now: its budget, live key and value bytes,
    /// entries, and the value heap's chunks. Walks every record under the data lock.
    public func memoryUsage() throws(ShmError) -> MemoryUsage {
        try cache._withLockedHandle("ShmStore.memoryUsage(key: \(key))") { (lru) throws(ShmError) -> MemoryUsage in
            try _recoverHeapIfNeeded(lru)
            var live = 0
            var entries = 0
            try lru.walkThrowing(from: .mostRecent) { (slot) throws(ShmError) -> Bool in
                let payload = try lru.value(slot)
                guard let header = _PayloadHeader.read(payload) else { return true }
                entries += 1
                live += header.keyLength + (_spilledDescriptor(header, payload)?.length ?? header.value(in: payload).count)
                return true
            }
            let segments = _storeRegion.byteCount + cache.region.byteCount
            return MemoryUsage(
                budgetBytes: configuration.memory ?? segments, segmentBytes: segments, liveBytes: live, entries: entries,
                heapChunks: _heap?.chunkCount ?? 0, freeHeapChunks: _heap?.freeCount ?? 0)
        }
    }

    /// The value heap a configuration asks for; nil for a store sized by records.
    static func _memoryPlan(_ c: Configuration, _ operation: String) throws(ShmError) -> _ValueHeap.Plan? {
        guard let memory = c.memory else {
            if c.maxValueSize != nil {
                throw ShmError(.invalidArgument, operation, detail: "maxValueSize needs a memory budget (Configuration(memory:))")
            }
            return nil
        }
        let maxValueSize = c.maxValueSize ?? 1 << 20
        guard (1..._ValueHeap.maxValueSizeLimit).contains(maxValueSize) else {
            throw ShmError(.invalidSize, operation, detail: "maxValueSize must be in 1...\(_ValueHeap.maxValueSizeLimit), not \(maxValueSize)")
        }
        let minimumRecord = _StoreLayout.payloadHeaderSize + _ValueHeap.descriptorSize + 1
        guard c.recordSize >= minimumRecord, c.capacity >= 1, c.capacity < _Layout.maxCapacity,
            let data = _Layout(recordSize: c.recordSize, capacity: c.capacity + 1, indexKind: .shared, policy: c.policy),
            let tables = _StoreLayout(
                recordSize: c.recordSize, lockSlots: c.lockSlots, waiterSlots: c.lockWaiters, logCapacity: c.changeLogCapacity)
        else {
            throw ShmError(
                .invalidSize, operation,
                detail: "expectedEntries must be in 1...\(_Layout.maxCapacity - 1), recordSize at least \(minimumRecord); "
                    + "lockSlots, lockWaiters and changeLogCapacity in 1...\(_StoreLayout.maxTableSlots)")
        }
        let fixed = data.totalSize + ((tables.totalSize + 63) & ~63) + _ValueHeap.headerSize
        let needed = 2 * _ValueHeap.chunks(for: maxValueSize)
        let (available, overflow) = memory.subtractingReportingOverflow(fixed)
        let chunks = overflow || available < 0 ? 0 : min(available / _ValueHeap.chunkSize, _ValueHeap.maxChunks)
        guard chunks >= needed else {
            throw ShmError(
                .invalidSize, operation,
                detail: "memory \(memory) bytes is too small: records and tables take \(fixed) bytes (\(c.capacity) entries), "
                    + "and the value heap must hold two values of maxValueSize \(maxValueSize) (\(needed) chunks of "
                    + "\(_ValueHeap.chunkSize) bytes); give at least \(fixed + needed * _ValueHeap.chunkSize) bytes")
        }
        return _ValueHeap.Plan(chunks: chunks, maxValueSize: maxValueSize, memory: memory)
    }
}
