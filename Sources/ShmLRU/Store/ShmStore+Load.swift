import CShm
import Synchronization

// Get-or-load with cross-process single-flight, after lua-resty-mlcache's `get`
// with a callback (its L3 loader under resty.lock, `neg_ttl`, `resurrect_ttl`):
//
// 1. A live value is returned as `get` would (promoted, age renewed if so
//    configured); a remembered miss returns nil.
// 2. On a miss, the caller takes the key's *load lock* (a per-key lock of its
//    own kind in the lock table, so it never blocks the key's ordinary lock),
//    asynchronously: at most one caller in all processes loads at a time.
// 3. Holding it, it looks again: a value that another process loaded while this
//    one waited is returned without loading. Otherwise `load` runs; its value is
//    stored (the store's default expiry), or its nil remembered for `negativeTTL`.
// 4. If `load` throws and the key's value expired at most `staleIfError` ago
//    (and has not been reclaimed since), that stale value is returned instead.
//
// A remembered miss is an entry under a reserved key: U+0000 "neg" U+0000 and the
// key (reserved: applications should not use keys starting with U+0000). It
// shows in `keys()` and to listeners of that reserved key only.
//
// 5. A load runs at most `loadTimeout` (a detached task raced against a timer:
//    a load that ignores cancellation is abandoned, not waited for).
// 6. A failed load (thrown or timed out) is remembered for `loadFailureTTL` under
//    U+0000 "err" U+0000 and the key (value: the failure's monotonic time, 8
//    bytes, then its error's description): the callers that were waiting for
//    the load lock meanwhile (in any process) get `.loadFailed`, or the stale
//    value, without loading again; a caller that arrives after it loads anew.

extension ShmStore {
    /// The value under `key`, loading it with `load` on a miss, once for all
    /// processes: when any number of callers in any number of processes miss the
    /// same key at once, one runs `load` and the others wait (asynchronously,
    /// without a thread each) and receive its value.
    ///
    /// - Parameters:
    ///   - key: the entry's key.
    ///   - type: the value's type.
    ///   - load: returns the value to store (the store's default expiry),
    ///     or nil for "there is none" (remembered for the store's `negativeTTL`).
    /// - Returns: the value, or nil when there is none.
    /// - Throws: what `load` throws, unless a value expired at most `staleIfError`
    ///   ago is still present (then that value is returned); `.lockTimeout` when
    ///   another caller's load took longer than this handle's `lockTimeout`;
    ///   `.codingFailed` when the stored bytes are not a `V`; `.cancelled`.
    public func get<V: Codable & Sendable>(
        _ key: String, as type: V.Type = V.self, orLoad load: @escaping @Sendable () async throws -> V?
    ) async throws -> V? {
        let operation = _operation("get(orLoad:)", key)
        switch try _lookupForLoad(key, operation) {
        case .value(let bytes): return try _decode(V.self, from: bytes, operation, codec: _decoded.codec)
        case .negative: return nil
        case .failed, .miss: break
        }
        let since = _monotonicNanoseconds()
        let identity = try _locks.identity(key, kind: _LockTable.kindLoad, operation)
        let grant = try await _asyncLocks.lock(identity, deadline: _locks.deadline(nil), operation)
        do {
            let result = try await _loadHoldingLock(key, as: V.self, load, since: since, operation)
            try _unlock(identity, id: grant.id, operation)
            return result
        } catch {
            try? _unlock(identity, id: grant.id, operation)
            throw error
        }
    }

    private func _loadHoldingLock<V: Codable & Sendable>(
        _ key: String, as type: V.Type, _ load: @escaping @Sendable () async throws -> V?, since: UInt64, _ operation: String
    ) async throws -> V? {
        let stale: [UInt8]?
        switch try _lookupForLoad(key, failedSince: since, operation) {
        case .value(let bytes): return try _decode(V.self, from: bytes, operation, codec: _decoded.codec)  // loaded while we waited
        case .negative: return nil
        case .failed(let message, let stale): return try _rememberedFailure(V.self, message, stale, operation)
        case .miss(let expired): stale = expired
        }
        let value: V?
        do { value = try await _runLoad(load, operation) } catch {
            _rememberFailure(key, error)
            if let stale { return try _decode(V.self, from: stale, operation, codec: _decoded.codec) }
            throw error
        }
        let negativeKey = _negativeKey(key)
        if configuration.loadFailureTTL != nil { _ = try? remove(_failureKey(key)) }
        if let value {
            try set(key, value)
            if _negativeTTLNanoseconds != 0 { try remove(negativeKey) }
        } else if _negativeTTLNanoseconds != 0, _fitsRecord(negativeKey) {
            try set(negativeKey, bytes: [], expiry: .after(.nanoseconds(Int64(clamping: _negativeTTLNanoseconds))))
        }
        return value
    }

    /// `load`, given at most `loadTimeout`: past it, `.loadFailed` (the load's
    /// task is cancelled and its result ignored; it is not waited for).
    func _runLoad<V: Sendable>(_ load: @escaping @Sendable () async throws -> V?, _ operation: String) async throws -> V? {
        guard let timeout = configuration.loadTimeout else { return try await load() }
        let nanoseconds = UInt64(max(1, _nanoseconds(timeout)))
        let race = _LoadRace<V?>()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<V?, any Error>) in
                race.start(continuation)
                let task = Task {
                    do { race.finish(.success(try await load())) } catch { race.finish(.failure(error)) }
                }
                let timer = Task {
                    try? await Task.sleep(nanoseconds: nanoseconds)
                    race.finish(.failure(ShmError(.loadFailed, operation, detail: "the load took longer than loadTimeout (\(timeout))")))
                }
                race.onFinish {  // whoever won: stop the other (a finished task ignores it)
                    timer.cancel()
                    task.cancel()
                }
            }
        } onCancel: {
            race.finish(.failure(ShmError(.cancelled, operation, detail: "the task was cancelled")))
        }
    }

    /// Remembers a failed load of `key` for `loadFailureTTL` (all processes).
    func _rememberFailure(_ key: String, _ error: any Error) {
        guard let ttl = configuration.loadFailureTTL else { return }
        let failureKey = _failureKey(key)
        guard _fitsRecord(failureKey) else { return }
        let room = cache.recordSize - _StoreLayout.payloadHeaderSize - failureKey.utf8.count - (_heap == nil ? 0 : _ValueHeap.descriptorSize)
        var value = withUnsafeBytes(of: _monotonicNanoseconds().littleEndian) { Array($0) }
        value += String(describing: error).utf8.prefix(max(0, room - 8))
        _ = try? set(failureKey, bytes: value, expiry: .after(ttl))
    }

    /// The remembered failure's answer: the stale value if any, else `.loadFailed`.
    func _rememberedFailure<V: Codable & Sendable>(_ type: V.Type, _ message: String, _ stale: [UInt8]?, _ operation: String) throws -> V? {
        if let stale { return try _decode(V.self, from: stale, operation, codec: _decoded.codec) }
        throw ShmError(.loadFailed, operation, detail: "a load of this key failed moments ago: \(message)")
    }

    func _failureKey(_ key: String) -> String { "\u{0}err\u{0}" + key }

    enum _LoadLookup {
        case value([UInt8])
        case negative
        /// A load failed since the caller began waiting (its message), with the stale value if any.
        case failed(String, stale: [UInt8]?)
        /// Absent, with the value if it expired at most `staleIfError` ago.
        case miss(stale: [UInt8]?)
    }

    /// One look under the data lock: the live value (used, as a `get`), a
    /// remembered miss, or a miss with the stale value if any. Reclaims nothing.
    func _lookupForLoad(_ key: String, failedSince: UInt64? = nil, _ operation: String) throws(ShmError) -> _LoadLookup {
        let window = _staleIfErrorNanoseconds
        let remembersFailures = failedSince != nil && configuration.loadFailureTTL != nil
        return try _withKey(key) { (keyBuffer, base) throws(ShmError) -> _LoadLookup in
            try _withKey(remembersFailures ? _failureKey(key) : "") { (failureBytesBuffer, failureBase) throws(ShmError) -> _LoadLookup in
            let failureBuffer: UnsafeRawBufferPointer? = remembersFailures ? failureBytesBuffer : nil
            return try _withKey(_negativeKey(key)) { (negativeBuffer, negativeBase) throws(ShmError) -> _LoadLookup in
                try cache._withLockedHandle(operation) { (lru) throws(ShmError) -> _LoadLookup in
                    let now = _monotonicNanoseconds()
                    var stale: [UInt8]? = nil
                    if let found = try _findAnyLocked(lru, keyBuffer, base: base) {
                        if !found.header.isExpired(now: now) {
                            let value = try _valueBytesLocked(lru, found.header, found.payload)
                            try lru.promote(found.slot)
                            if configuration.renewsAgeOnGet, found.header.maxAge != 0 {
                                _setExpiryLocked(lru, found.slot, _saturatingAdd(now, found.header.maxAge))
                            }
                            return .value(value)
                        }
                        if window != 0, _saturatingAdd(found.header.expiresAt, window) > now {
                            stale = try _valueBytesLocked(lru, found.header, found.payload)
                        }
                    }
                    if _negativeTTLNanoseconds != 0, let negative = try _findAnyLocked(lru, negativeBuffer, base: negativeBase),
                        !negative.header.isExpired(now: now)
                    {
                        return .negative
                    }
                    if let failureBuffer, let failedSince, let failure = try _findAnyLocked(lru, failureBuffer, base: failureBase),
                        !failure.header.isExpired(now: now)
                    {
                        let bytes = try _valueBytesLocked(lru, failure.header, failure.payload)
                        if bytes.count >= 8, bytes.withUnsafeBytes({ UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }) >= failedSince {
                            return .failed(String(decoding: bytes[8...], as: UTF8.self), stale: stale)
                        }
                    }
                    return .miss(stale: stale)
                }
            }
            }
        }
    }

    /// The record of `key` under its probe hashes, expired or not (under the data lock).
    func _findAnyLocked(_ lru: ShmLRU._LockedHandle, _ key: UnsafeRawBufferPointer, base: UInt32) throws(ShmError) -> _Located? {
        try _recoverHeapIfNeeded(lru)
        for probe in 0..<configuration.probeLimit {
            let hash = base &+ UInt32(probe)
            guard let slot = lru.find(hash) else { continue }
            let payload = try lru.value(slot)
            guard let header = _PayloadHeader.read(payload), header.key(in: payload).elementsEqual(key) else { continue }
            return _Located(hash: hash, slot: slot, header: header, payload: payload)
        }
        return nil
    }

    func _negativeKey(_ key: String) -> String { "\u{0}neg\u{0}" + key }

    func _fitsRecord(_ key: String) -> Bool {
        _StoreLayout.payloadHeaderSize + key.utf8.count + (_heap == nil ? 0 : _ValueHeap.descriptorSize) <= cache.recordSize
    }

    var _negativeTTLNanoseconds: UInt64 { configuration.negativeTTL.map { UInt64(max(1, _nanoseconds($0))) } ?? 0 }
    var _staleIfErrorNanoseconds: UInt64 { configuration.staleIfError.map { UInt64(max(1, _nanoseconds($0))) } ?? 0 }
}

/// The outcome of a load raced against its timeout: the first `finish` resumes
/// the caller; later ones are ignored.
final class _LoadRace<T: Sendable>: @unchecked Sendable {
    private let lock = Mutex<(continuation: CheckedContinuation<T, any Error>?, pending: Result<T, any Error>?, done: Bool, onFinish: (@Sendable () -> Void)?)>(
        (nil, nil, false, nil))

    func start(_ continuation: CheckedContinuation<T, any Error>) {
        let early: Result<T, any Error>? = lock.withLock { state in
            if let pending = state.pending { return pending }
            state.continuation = continuation
            return nil
        }
        if let early { continuation.resume(with: early) }
    }

    /// True if this call decided the outcome.
    @discardableResult
    func finish(_ result: Result<T, any Error>) -> Bool {
        let (won, continuation, onFinish) = lock.withLock { state -> (Bool, CheckedContinuation<T, any Error>?, (@Sendable () -> Void)?) in
            guard !state.done else { return (false, nil, nil) }
            state.done = true
            let continuation = state.continuation
            state.continuation = nil
            if continuation == nil { state.pending = result }
            let onFinish = state.onFinish
            state.onFinish = nil
            return (true, continuation, onFinish)
        }
        continuation?.resume(with: result)
        onFinish?()
        return won
    }

    func onFinish(_ action: @escaping @Sendable () -> Void) {
        let now = lock.withLock { state -> Bool in
            if state.done { return true }
            state.onFinish = action
            return false
        }
        if now { action() }
    }
}
