import Synchronization

/// The seed's API (shm-typed-array + shm-typed-lru), keyed by segment key, so
/// that a port of its `example.js` reads line by line:
///
///     let buf = Shm.create(1_000_000)!                       // shm.create(1000000)
///     let cache = Shm.initLRU(buf.key, 250, 1_000_000)        // shm.initLRU(key, 250, 1000000)
///     let offset = Shm.set(buf.key, 134, "this is a test")    // shm.set(key, hash, value)
///     Shm.get_el(buf.key, offset!)                            // "this is a test"
///     Shm.get_el_hash(buf.key, 134)
///
/// Conventions kept from the seed: `set` returns the record's offset; a read
/// returns the value or nil; a failure returns nil/false and leaves its reason for
/// `get_last_reason(key)` (which resets it to "OK"). Defects fixed: every call
/// locks the segment; no 16-bit limits; values are length-checked and
/// binary-safe; bad offsets and a stale map are reported, not crashed on or
/// answered with another key's value; `debug_dump_list` is valid JSON.
/// Reads are exact LRU, as in the seed. New code should use `ShmRegion` and
/// `ShmLRU` directly: they throw typed errors.
public enum Shm {
    /// The element kinds of shm-typed-array.
    public enum ArrayType: String, Sendable, CaseIterable {
        case buffer = "Buffer", int8 = "Int8Array", uint8 = "Uint8Array", uint8Clamped = "Uint8ClampedArray"
        case int16 = "Int16Array", uint16 = "Uint16Array", int32 = "Int32Array", uint32 = "Uint32Array"
        case float32 = "Float32Array", float64 = "Float64Array"

        /// The size of one element of this type, in bytes.
        public var elementSize: Int {
            switch self {
            case .buffer, .int8, .uint8, .uint8Clamped: 1
            case .int16, .uint16: 2
            case .int32, .uint32, .float32: 4
            case .float64: 8
            }
        }
    }

    struct Entry {
        var region: ShmRegion
        var cache: ShmLRU?
        var lastReason = "OK"
    }

    static let state = Mutex<[ShmKey: Entry]>([:])
    static let lastCreateReason = Mutex<String>("OK")

    /// Records the reason for `get_last_reason`: on the key's entry, or (for a key
    /// this process has not attached) as the unkeyed reason, so it is never lost.
    private static func fail<T>(_ key: ShmKey?, _ error: ShmError, _ result: T) -> T {
        let reason = seedReason(error)
        let stored = key.map { key in
            state.withLock { entries -> Bool in
                guard entries[key] != nil else { return false }
                entries[key]!.lastReason = reason
                return true
            }
        } ?? false
        if !stored { lastCreateReason.withLock { $0 = reason } }
        return result
    }

    /// The seed's reason text where it had one ("out of free memory", "deleted",
    /// "already deleted", "OUT OF BOUNDS"), then the typed error's description.
    static func seedReason(_ error: ShmError) -> String {
        let phrase: String
        switch error.code {
        case .full: phrase = "out of free memory"
        case .alreadyDeleted: phrase = error.operation.hasPrefix("remove") ? "already deleted" : "deleted"
        case .invalidOffset: phrase = "OUT OF BOUNDS"
        case .valueTooLarge: phrase = "value too large"
        case .notFound: phrase = "not found"
        default: phrase = error.code.rawValue
        }
        return "\(phrase): \(error)"
    }

    // MARK: shm-typed-array

    /// Creates a segment of `count` elements; nil if the key exists (reason in `get_last_reason(key)`).
    public static func create(_ count: Int, _ type: ArrayType = .buffer, _ key: ShmKey? = nil) -> ShmRegion? {
        guard count > 0, count <= LengthMax / type.elementSize else {
            lastCreateReason.withLock { $0 = "count \(count) out of range 1...\(LengthMax / type.elementSize)" }
            return nil
        }
        do {
            let region = try ShmRegion.create(key: key, byteCount: count * type.elementSize)
            state.withLock { $0[region.key] = Entry(region: region) }
            return region
        } catch {
            return fail(key, error, nil)
        }
    }

    /// Attaches an existing segment; nil if there is none.
    public static func get(_ key: ShmKey, _ type: ArrayType = .buffer) -> ShmRegion? {
        if let region = state.withLock({ $0[key]?.region }), region.isAttached { return region }
        guard let region = try? ShmRegion.attach(key: key) else { return nil }
        state.withLock { $0[key] = Entry(region: region) }
        return region
    }

    /// Detaches the segment; returns 0 once it is destroyed, else the attachments
    /// left (-1 if this process has not attached it). `force` removes it even
    /// while others are attached.
    @discardableResult
    public static func detach(_ key: ShmKey, _ force: Bool = false) -> Int {
        guard let entry = state.withLock({ $0.removeValue(forKey: key) }) else { return -1 }
        if force { try? entry.region.remove() }
        return (try? entry.region.detach()) ?? 0
    }

    /// Detaches every segment of this process (removing those it created); returns how many.
    @discardableResult
    public static func detachAll() -> Int {
        // Detach first: emptying the table first would let the regions' deinit
        // detach them uncounted.
        let count = ShmRegion.detachAll()
        state.withLock { $0.removeAll() }
        return count
    }

    /// Bytes attached by this process.
    public static func getTotalSize() -> Int { ShmRegion.totalSize }

    /// The segment's size in bytes, or nil.
    public static func getSegmentSize(_ key: ShmKey) -> Int? { get(key)?.byteCount }

    /// The largest byte count a segment may have.
    public static var LengthMax: Int { ShmRegion.maxByteCount }

    // MARK: shm-typed-lru

    /// Lays out (initializer) or attaches (not) an LRU of `recordSize`-byte records
    /// in the segment, using `regionSize` bytes of it; returns the record count.
    /// A second call in the same process returns the same count.
    @discardableResult
    public static func initLRU(
        _ key: ShmKey, _ recordSize: Int, _ regionSize: Int, _ isInitializer: Bool = true,
        index: ShmLRU.IndexKind = .processLocal
    ) -> Int? {
        guard let region = get(key) else { return nil }
        if let cache = state.withLock({ $0[key]?.cache }) { return cache.capacity }
        do throws(ShmError) {
            let cache: ShmLRU
            if isInitializer {
                guard regionSize > 0, regionSize <= region.byteCount else {
                    throw ShmError(
                        .invalidSize, "initLRU(\(key), \(recordSize), \(regionSize))",
                        detail: "the region has \(region.byteCount) bytes")
                }
                let fitting = _Layout.capacity(fitting: regionSize, recordSize: recordSize, indexKind: index)
                cache = try ShmLRU(initializing: region, recordSize: recordSize, capacity: fitting, index: index)
            } else {
                cache = try ShmLRU(attaching: region, recordSize: recordSize)
            }
            state.withLock { $0[key]?.cache = cache }
            return cache.capacity
        } catch {
            return fail(key, error, nil)
        }
    }

    private static func withCache<T>(_ key: ShmKey, _ failure: T, _ body: (ShmLRU) throws(ShmError) -> T) -> T {
        guard let cache = state.withLock({ $0[key]?.cache }) else {
            return fail(key, ShmError(.notFound, "key \(key)", detail: "no LRU initialized in this process"), failure)
        }
        do { return try body(cache) } catch { return fail(key, error, failure) }
    }

    /// Stores `value` under `hash`; returns the record's offset, or nil (see `get_last_reason`).
    @discardableResult
    public static func set(_ key: ShmKey, _ hash: UInt32, _ value: String) -> Int? {
        withCache(key, nil) { (cache) throws(ShmError) -> Int? in try cache.set(hash, value).offset }
    }

    /// The value at a record offset (returned by `set`), or nil: a deleted record's
    /// old value is not returned (the seed's "DELETED: …"); the reason says "deleted".
    public static func get_el(_ key: ShmKey, _ offset: Int) -> String? {
        withCache(key, nil) { (cache) throws(ShmError) -> String? in try cache.string(atOffset: offset) }
    }

    /// The value stored under `hash`, or nil on a miss.
    public static func get_el_hash(_ key: ShmKey, _ hash: UInt32) -> String? {
        withCache(key, nil) { (cache) throws(ShmError) -> String? in try cache.string(hash) }
    }

    /// Deletes the record at `offset`.
    @discardableResult
    public static func del_el(_ key: ShmKey, _ offset: Int) -> Bool {
        withCache(key, false) { (cache) throws(ShmError) -> Bool in
            _ = try cache.remove(atOffset: offset)
            return true
        }
    }

    /// Deletes the record with `hash`.
    @discardableResult
    public static func del_key(_ key: ShmKey, _ hash: UInt32) -> Bool {
        withCache(key, false) { (cache) throws(ShmError) -> Bool in
            guard try cache.remove(hash) else {
                throw ShmError(.notFound, "del_key(\(key), \(hash))", detail: "no such hash")
            }
            return true
        }
    }

    /// The reason of the last failure on `key`, then "OK" until the next one.
    public static func get_last_reason(_ key: ShmKey) -> String {
        state.withLock { entries in
            guard let reason = entries[key]?.lastReason else {
                return lastCreateReason.withLock { reason in
                    defer { reason = "OK" }
                    return reason
                }
            }
            entries[key]?.lastReason = "OK"
            return reason
        }
    }

    /// Rebuilds this process's hash map from the segment.
    @discardableResult
    public static func reload_hash_map(_ key: ShmKey) -> Bool {
        withCache(key, false) { (cache) throws(ShmError) -> Bool in
            try cache.reloadIndex()
            return true
        }
    }

    /// Adds the records tagged `shareKey` to this process's hash map.
    @discardableResult
    public static func reload_hash_map_update(_ key: ShmKey, _ shareKey: UInt32) -> Bool {
        withCache(key, false) { (cache) throws(ShmError) -> Bool in
            try cache.reloadIndex(shareKey: shareKey)
            return true
        }
    }

    /// Tags the record at `offset` with `shareKey`.
    @discardableResult
    public static func set_share_key(_ key: ShmKey, _ offset: Int, _ shareKey: UInt32) -> Bool {
        withCache(key, false) { (cache) throws(ShmError) -> Bool in
            try cache.setShareKey(shareKey, atOffset: offset)
            return true
        }
    }

    /// Evicts records last used before `cutoff`, at most `maxEvictions`; returns their hashes.
    @discardableResult
    public static func run_lru_eviction(_ key: ShmKey, _ cutoff: ShmInstant, _ maxEvictions: Int) -> [UInt32] {
        withCache(key, []) { (cache) throws(ShmError) -> [UInt32] in
            try cache.evict(lastUsedBefore: cutoff, limit: maxEvictions)
        }
    }

    /// The allocated list as JSON, most recent first (or backwards).
    public static func debug_dump_list(_ key: ShmKey, _ backwards: Bool = false) -> String? {
        withCache(key, nil) { (cache) throws(ShmError) -> String? in try cache.dumpJSON(backwards: backwards) }
    }
}
