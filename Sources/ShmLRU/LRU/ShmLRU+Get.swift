import CShm
import Glibc
import Synchronization

// Reads. With `.onEveryRead` (exact LRU) a read takes the lock and moves its
// record to the head. With `.atMostEvery(interval)` a read takes no lock: it finds
// the record through the shared index and copies the value inside the record's
// seqlock (sequence even and unchanged across the copy, hash and state checked
// inside the same window), so it never returns a torn value or another key's.
// The read marks the record used (one 8-byte store into the record's header
// line, which it just read: no lock, no other shared line) on its first use after
// it was linked at the head, then at most once per interval; the record moves to
// the head when it reaches the LRU tail (the eviction gives a marked record a
// second chance), as memcached's segmented LRU does. A hit on a record already
// marked within the interval writes nothing shared.

extension ShmLRU {
    enum _ReadOutcome {
        /// The value was copied; `record` is where it lives, `stamp` its stamp then.
        case hit(length: Int, record: UnsafeMutableRawPointer, stamp: UInt64)
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
        guard _attachment.isAttached else { throw _getError(hash, .detached, length: 0, buffer: buffer) }
        if _promotionNanoseconds != 0 {
            // One attempt inline; the retries out of line, so that the hot path
            // keeps the index geometry in registers instead of spilling it across
            // a retry loop (measured: ~20 fewer instructions per hit).
            if let answer = try _getOptimistic(hash, into: buffer) { return answer }
            return try _getContended(hash, into: buffer)
        }
        return try _getLocked(hash, into: buffer)
    }

    /// One lock-free attempt of `get`, counted: its answer (the value's length, or
    /// nil on a miss), or nil when it met a writer (then try again, or take the lock).
    /// - Throws: `.invalidArgument` if the value is longer than `buffer`.
    @inline(__always)
    func _getOptimistic(_ hash: UInt32, into buffer: UnsafeMutableRawBufferPointer) throws(ShmError) -> Int?? {
        switch _readOptimistic(hash, into: buffer) {
        case .hit(let length, let record, let stamp):
            _noteOptimisticHit(record, stamp: stamp)
            return length
        case .miss:
            _countMiss()
            return .some(nil)
        case .tooSmall(let length):
            throw _getError(hash, .invalidArgument, length: length, buffer: buffer)
        case .contended:
            return nil
        }
    }

    /// A lock-free hit: counts it and marks the record per the policy.
    @inline(__always)
    func _noteOptimisticHit(_ record: UnsafeMutableRawPointer, stamp: UInt64) {
        let hits = _hits.load(ordering: .relaxed) &+ 1
        _hits.store(hits, ordering: .relaxed)
        _markIfStale(record, stamp: stamp, now: _readClock(hits: hits))
    }

    /// The first optimistic attempt met a writer: the remaining attempts (yielding
    /// the CPU between the later ones, so a writer on this core can finish), then
    /// one try of the lock that does not wait, then a miss.
    ///
    /// A lock-free read never waits for the lock: a writer stopped inside its
    /// critical section (SIGSTOP, a debugger, the cgroup freezer) leaves the index
    /// or a record odd for as long as it is stopped, and every read would then
    /// wait out the lock timeout. A moving entry is answered as a miss instead
    /// (the entry is being changed: a cache may miss). A writer that died there
    /// leaves the lock free to take (EOWNERDEAD): the try repairs its work and reads.
    @inline(never)
    func _getContended(_ hash: UInt32, into buffer: UnsafeMutableRawBufferPointer) throws(ShmError) -> Int? {
        var attempts = ShmLRU._optimisticAttempts &- 1
        while attempts > 0 {
            if attempts < ShmLRU._optimisticAttempts / 2 { sched_yield() }
            if let answer = try _getOptimistic(hash, into: buffer) { return answer }
            attempts &-= 1
        }
        do {
            return try _getLocked(hash, into: buffer, timeoutNanoseconds: 0)
        } catch where error.code == .lockTimeout {
            _countMiss()
            _busyMisses.store(_busyMisses.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
            return nil
        }
    }

    /// The errors of `get`, formatted off the hot path.
    @inline(never)
    func _getError(_ hash: UInt32, _ code: ShmError.Code, length: Int, buffer: UnsafeMutableRawBufferPointer) -> ShmError {
        code == .detached
            ? ShmError(.detached, "get(\(hash), key: \(key))")
            : ShmError(code, "get(\(hash), into:)", detail: "value is \(length) bytes; buffer holds \(buffer.count)")
    }

    /// A read under the lock: exact LRU, or an optimistic read that kept colliding with writers.
    @inline(never)
    func _getLocked(
        _ hash: UInt32, into buffer: UnsafeMutableRawBufferPointer, timeoutNanoseconds: Int64? = nil
    ) throws(ShmError) -> Int? {
        if _attachment.isAttached { _probe.warm(hash) }  // hints: see `_Probe.warm(_:)`; never on a gone mapping
        return try _withLock("get(\(hash), key: \(key))", timeoutNanoseconds: timeoutNanoseconds) { () throws(ShmError) -> Int? in
            let now = _lockedNow()
            guard let found = _find(hash) else {
                _countMiss()
                return nil
            }
            if _promotionNanoseconds == 0 { _prefetchNeighbours(found.slot) }
            let length = try _copyLocked(found.slot, into: buffer, "get(\(hash), into:)")
            try _promoteLocked(found.slot, now: now)
            _countHit()
            return length
        }
    }

    /// The handle's clock for a lock-free hit (see `_clock`): read for real once
    /// per `_clockRefreshReads` hits.
    @inline(__always) func _readClock(hits: UInt64) -> UInt64 {
        if hits & (ShmLRU._clockRefreshReads - 1) != 0 { return _clock.load(ordering: .relaxed) }
        return _refreshClock()
    }

    /// Reads the coarse clock for real and makes it the handle's clock.
    @inline(__always) func _refreshClock() -> UInt64 {
        let now = _coarseMonotonicNanoseconds()
        _clock.store(now, ordering: .relaxed)
        return now
    }

    // Per-handle counters: process-local, so a read writes no shared line for them.
    // A plain load and store rather than an atomic add (a locked instruction on
    // every read, which also drains the store buffer): exact for one thread,
    // approximate when several threads share a handle.
    @inline(__always) func _countHit() { _hits.store(_hits.load(ordering: .relaxed) &+ 1, ordering: .relaxed) }
    @inline(__always) func _countMiss() { _misses.store(_misses.load(ordering: .relaxed) &+ 1, ordering: .relaxed) }

    /// Lends the value of `hash` to `body` without copying it; nil on a miss.
    /// The lock is held while `body` runs: keep it short, and do not call the cache from it.
    public func withValue<R>(_ hash: UInt32, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R? {
        var bodyError: (any Error)? = nil
        let result = try _withLock("withValue(\(hash), key: \(key))") { () throws(ShmError) -> R? in
            guard let found = _find(hash) else {
                _countMiss()
                return nil
            }
            _countHit()
            try _promoteLocked(found.slot, now: _lockedNow())
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

    /// Lends the value of the live record at `offset` (shm-typed-lru's `get_el`) to `body`.
    /// - Throws: `.invalidOffset`, `.alreadyDeleted` (shm-typed-lru returned the old value
    ///   prefixed with "DELETED"), then whatever `body` throws.
    public func withValue<R>(atOffset offset: Int, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        let slot = try _slot(atOffset: offset, "withValue(atOffset: \(offset))")
        var bodyResult: Result<R, any Error>? = nil
        try _withLock("withValue(atOffset: \(offset), key: \(key))") { () throws(ShmError) in
            guard _segment.isLive(meta: _segment.meta(slot)) else {
                throw ShmError(.alreadyDeleted, "withValue(atOffset: \(offset), key: \(key))")
            }
            _countHit()
            try _promoteLocked(slot, now: _lockedNow())
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
    @inline(__always)
    func _valueLocked(_ slot: UInt32) throws(ShmError) -> UnsafeRawBufferPointer {
        let length = _segment.length(meta: _segment.meta(slot))
        guard length <= recordSize else { throw _corrupted("record \(slot) claims \(length) bytes") }
        return UnsafeRawBufferPointer(start: _segment.payload(slot), count: length)
    }

    @inline(__always)
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

    /// One lock-free attempt through the shared index (`_Probe.sight`).
    @inline(__always)
    func _readOptimistic(_ hash: UInt32, into buffer: UnsafeMutableRawBufferPointer) -> _ReadOutcome {
        let p = _probe
        guard let snapshot = p.indexSnapshot() else { return .contended }
        switch p.sight(hash) {
        case .found(let sight):
            let length = sight.length
            if length > p.recordSize { return .contended }  // torn header: the recheck decides
            if length > buffer.count { return sight.isUnchanged() ? .tooSmall(length: length) : .contended }
            if length > 0 { cshm_racy_copy(buffer.baseAddress, sight.words.payload, length) }
            let stamp = sight.words.stamp
            guard sight.isUnchanged() else { return .contended }
            return .hit(length: length, record: sight.record, stamp: stamp)
        case .absent: return p.indexUnchanged(since: snapshot) ? .miss : .contended
        case .contended: return .contended
        }
    }
}
