import CShm
import Synchronization

// Reads. With `.onEveryRead` (exact LRU) a read takes the lock and moves its
// record to the head. With `.atMostEvery(interval)` a read takes no lock: it finds
// the record through the shared index and copies the value inside the record's
// seqlock (sequence even and unchanged across the copy, hash and state checked
// inside the same window), so it never returns a torn value or another key's; it
// takes the lock only to promote a record whose last promotion is older than the
// interval.

extension ShmLRU {
    enum _ReadOutcome {
        case hit(length: Int, slot: UInt32, stamp: UInt64)
        case miss
        case tooSmall(length: Int)
        case contended
    }

    /// How many optimistic attempts a read makes before it takes the lock (which
    /// also repairs a record left odd by a writer that died).
    static let _optimisticAttempts = 64

    /// Copies the value of `hash` into `buffer`; returns its length, or nil on a miss.
    /// - Throws: `.invalidArgument` if the value is longer than `buffer`.
    public func get(_ hash: UInt32, into buffer: UnsafeMutableRawBufferPointer) throws(ShmError) -> Int? {
        try _checkAttached("get(\(hash), key: \(key))")
        if _promotionNanoseconds != 0 {
            for _ in 0..<ShmLRU._optimisticAttempts {
                switch _readOptimistic(hash, into: buffer) {
                case .hit(let length, let slot, let stamp):
                    _hits.wrappingAdd(1, ordering: .relaxed)
                    let now = cshm_monotonic_coarse_ns()
                    if now &- stamp >= _promotionNanoseconds, now > stamp { try _promoteIfStale(slot, hash: hash) }
                    return length
                case .miss:
                    _misses.wrappingAdd(1, ordering: .relaxed)
                    return nil
                case .tooSmall(let length):
                    throw ShmError(.invalidArgument, "get(\(hash), into:)", detail: "value is \(length) bytes; buffer holds \(buffer.count)")
                case .contended:
                    continue
                }
            }
        }
        return try _withLock("get(\(hash), key: \(key))") { () throws(ShmError) -> Int? in
            guard let found = _find(hash) else {
                _misses.wrappingAdd(1, ordering: .relaxed)
                return nil
            }
            let length = try _copyLocked(found.slot, into: buffer, "get(\(hash), into:)")
            try _promoteLocked(found.slot)
            _hits.wrappingAdd(1, ordering: .relaxed)
            return length
        }
    }

    /// Lends the value of `hash` to `body` without copying it; nil on a miss.
    /// The lock is held while `body` runs: keep it short, and do not call the cache from it.
    public func withValue<R>(_ hash: UInt32, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R? {
        var bodyError: (any Error)? = nil
        let result = try _withLock("withValue(\(hash), key: \(key))") { () throws(ShmError) -> R? in
            guard let found = _find(hash) else {
                _misses.wrappingAdd(1, ordering: .relaxed)
                return nil
            }
            _hits.wrappingAdd(1, ordering: .relaxed)
            try _promoteLocked(found.slot)
            do { return try body(try _valueLocked(found.slot)) } catch {
                bodyError = error
                return nil
            }
        }
        if let bodyError { throw bodyError }
        return result
    }

    /// The value of `hash` as bytes; nil on a miss.
    public func bytes(_ hash: UInt32) throws(ShmError) -> [UInt8]? {
        var length: Int? = nil
        var failure: ShmError? = nil
        let bytes = [UInt8](unsafeUninitializedCapacity: recordSize) { buffer, initialized in
            do throws(ShmError) { length = try get(hash, into: UnsafeMutableRawBufferPointer(buffer)) } catch { failure = error }
            initialized = length ?? 0
        }
        if let failure { throw failure }
        return length == nil ? nil : bytes
    }

    /// The value of `hash` decoded as UTF-8 (invalid sequences repaired); nil on a miss.
    public func string(_ hash: UInt32) throws(ShmError) -> String? {
        try bytes(hash).map { String(decoding: $0, as: UTF8.self) }
    }

    /// True if `hash` is in the cache. Does not count as a use.
    public func contains(_ hash: UInt32) throws(ShmError) -> Bool {
        try _withLock("contains(\(hash), key: \(key))") { () throws(ShmError) -> Bool in _find(hash) != nil }
    }

    // MARK: By offset

    /// Lends the value of the live record at `offset` (the seed's `get_el`) to `body`.
    /// - Throws: `.invalidOffset`, `.alreadyDeleted` (the seed returned the old value
    ///   prefixed with "DELETED"), then whatever `body` throws.
    public func withValue<R>(atOffset offset: Int, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        let slot = try _slot(atOffset: offset, "withValue(atOffset: \(offset))")
        var bodyResult: Result<R, any Error>? = nil
        try _withLock("withValue(atOffset: \(offset), key: \(key))") { () throws(ShmError) in
            guard _segment.isLive(meta: _segment.meta(slot)) else {
                throw ShmError(.alreadyDeleted, "withValue(atOffset: \(offset), key: \(key))")
            }
            _hits.wrappingAdd(1, ordering: .relaxed)
            try _promoteLocked(slot)
            let value = try _valueLocked(slot)
            bodyResult = Result { try body(value) }
        }
        return try bodyResult!.get()
    }

    /// The value of the live record at `offset`, as bytes.
    public func bytes(atOffset offset: Int) throws(ShmError) -> [UInt8] {
        do { return try withValue(atOffset: offset) { Array($0) } } catch let error as ShmError { throw error } catch {
            fatalError("unreachable: \(error)")
        }
    }

    /// The value of the live record at `offset`, decoded as UTF-8.
    public func string(atOffset offset: Int) throws(ShmError) -> String {
        String(decoding: try bytes(atOffset: offset), as: UTF8.self)
    }

    /// The hash of the live record at `offset`.
    public func hash(atOffset offset: Int) throws(ShmError) -> UInt32 {
        let slot = try _slot(atOffset: offset, "hash(atOffset: \(offset))")
        return try _withLock("hash(atOffset: \(offset))") { () throws(ShmError) -> UInt32 in
            guard _segment.isLive(meta: _segment.meta(slot)) else { throw ShmError(.alreadyDeleted, "hash(atOffset: \(offset))") }
            return _segment.hash(slot)
        }
    }

    // MARK: Internals

    /// The payload of a live record, under the lock, its length checked.
    func _valueLocked(_ slot: UInt32) throws(ShmError) -> UnsafeRawBufferPointer {
        let length = _segment.length(meta: _segment.meta(slot))
        guard length <= recordSize else { throw _corrupted("record \(slot) claims \(length) bytes") }
        return UnsafeRawBufferPointer(start: _segment.payload(slot), count: length)
    }

    func _copyLocked(_ slot: UInt32, into buffer: UnsafeMutableRawBufferPointer, _ operation: @autoclosure () -> String)
        throws(ShmError) -> Int
    {
        let value = try _valueLocked(slot)
        guard value.count <= buffer.count else {
            throw ShmError(.invalidArgument, operation(), detail: "value is \(value.count) bytes; buffer holds \(buffer.count)")
        }
        if let target = buffer.baseAddress, let source = value.baseAddress, value.count > 0 {
            target.copyMemory(from: source, byteCount: value.count)
        }
        return value.count
    }

    /// Promotes per the policy, under the lock.
    func _promoteLocked(_ slot: UInt32) throws(ShmError) {
        let now = cshm_monotonic_ns()
        if _promotionNanoseconds == 0 || now &- _segment.stamp(slot) >= _promotionNanoseconds {
            try _promote(slot, now: now)
        }
    }

    /// After an optimistic hit: take the lock and promote, if the record still holds `hash`.
    func _promoteIfStale(_ slot: UInt32, hash: UInt32) throws(ShmError) {
        try _withLock("get(\(hash), key: \(key))") { () throws(ShmError) in
            let s = _segment
            guard s.hash(slot) == hash, s.isLive(meta: s.meta(slot)) else { return }
            let now = cshm_monotonic_ns()
            guard now &- s.stamp(slot) >= _promotionNanoseconds else { return }  // a peer promoted it meanwhile
            try _promote(slot, now: now)
            s.bumpStat(_Layout.H.statPromotions)
        }
    }

    /// One lock-free attempt through the shared index.
    @inline(__always)
    func _readOptimistic(_ hash: UInt32, into buffer: UnsafeMutableRawBufferPointer) -> _ReadOutcome {
        let table = _sharedIndex.unsafelyUnwrapped
        let s = _segment
        let indexSeq = cshm_load_acquire_u32(s.indexSeqPointer)
        if indexSeq & 1 != 0 { return .contended }
        let mixed = _mix32(hash)
        let wanted = table.tag(mixed: mixed)
        var position = table.home(mixed: mixed)
        for _ in 0..<table.slots {
            let entry = table.load(position)
            if entry == 0 { break }
            if table.entryTag(entry) == wanted {
                let slot = table.entrySlot(entry)
                if s.isSlot(slot) {
                    let seqPointer = s.seqPointer(slot)
                    let before = cshm_load_acquire_u32(seqPointer)
                    if before & 1 != 0 { return .contended }
                    let meta = s.meta(slot)
                    if s.hash(slot) == hash, s.isLive(meta: meta) {
                        let length = s.length(meta: meta)
                        if length > recordSize { return .contended }  // torn header: the recheck below decides
                        if length > buffer.count {
                            cshm_fence_acquire()
                            return cshm_load_relaxed_u32(seqPointer) == before ? .tooSmall(length: length) : .contended
                        }
                        if length > 0 { cshm_racy_copy(buffer.baseAddress, s.payload(slot), length) }
                        let stamp = s.stamp(slot)
                        cshm_fence_acquire()
                        guard cshm_load_relaxed_u32(seqPointer) == before else { return .contended }
                        return .hit(length: length, slot: slot, stamp: stamp)
                    }
                }
            }
            position = table.advance(position)
        }
        cshm_fence_acquire()
        return cshm_load_relaxed_u32(s.indexSeqPointer) == indexSeq ? .miss : .contended
    }
}
