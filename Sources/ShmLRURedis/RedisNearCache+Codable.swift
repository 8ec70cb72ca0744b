#if Redis
import ShmLRU
import Synchronization

// Codable values, and the three-level get-or-load: the machine's store, then
// Redis, then the caller's loader.
//
// The machine level is the store's own get-or-load (ShmStore+Load.swift): one
// load per key per machine (its single-flight across processes), remembered
// misses (the store's `negativeTTL`), stale-if-error (the store's
// `staleIfError`: an expired value is served when Redis or the loader fails).
// What it runs on a miss is `_loadThrough`: GET + PTTL from Redis; on a Redis
// miss, the Redis lock "name\0lock:key" (SET NX PX loadLockTimeToLive, released
// by a compare-and-delete script) so that across machines one loader runs at a
// time; the lock holder looks again (another machine may have just stored it),
// runs the loader, and writes its value with SET NX (a write that came in
// meanwhile wins over the loader's older read) and PUBLISH, in one MULTI. The
// others poll Redis every 25 ms until the value is there or `lockTimeout`
// passed (then `.lockTimeout`, or the stale value). A loader that crashed holds
// the Redis lock at most `loadLockTimeToLive`.
//
// The store stores the value with its default expiry; the near cache then
// settles it (RedisNearCache+MachineState.swift): the time Redis has left for
// it, or removed if an invalidation, a disconnection or a dead subscriber came
// since the load began.
//
// Refresh ahead: a hit with at most `refreshAhead` of its life left starts one
// background reload per machine (the store lock "refresh:key", tried, never
// waited for): Redis first (another machine may have refreshed it), else the
// loader under the Redis lock, written with a plain SET; the old value is
// served meanwhile.

/// What a load brought, kept for the settle after the store's get-or-load:
/// the token taken before Redis was read, and the bytes it found or wrote.
final class _LoadRecord: Sendable {
    struct Loaded: Sendable {
        var bytes: [UInt8]?
        var milliseconds: Int64?
        var token: _CacheToken?
    }

    private let state = Mutex<(token: _CacheToken?, loaded: Loaded?)>((nil, nil))

    init(token: _CacheToken?) { state.withLock { $0.token = token } }

    /// The token of the load about to read Redis.
    func begin(_ token: _CacheToken?) { state.withLock { $0.token = token } }

    func put(_ bytes: [UInt8]?, _ milliseconds: Int64?) {
        state.withLock { $0.loaded = Loaded(bytes: bytes, milliseconds: milliseconds, token: $0.token) }
    }

    func take() -> Loaded? { state.withLock { $0.loaded.take() } }
}

extension RedisNearCache {
    // MARK: Codable

    /// Encodes `value` with the store's codec, writes it to Redis (with
    /// `timeToLive`, or none), publishes the change, and stores it locally (as
    /// `set(_:bytes:timeToLive:)`).
    ///
    /// - Throws: `.invalidArgument` if the value cannot be encoded; what
    ///   `set(_:bytes:timeToLive:)` throws.
    public func set<V: Encodable>(_ key: String, _ value: V, timeToLive: Duration? = nil) async throws(RedisNearCacheError) {
        let bytes: [UInt8]
        do { bytes = try store.codec.encode(value) } catch {
            throw RedisNearCacheError(.invalidArgument, "RedisNearCache.set(\"\(key)\")", detail: "cannot encode the value: \(error)")
        }
        try await set(key, bytes: bytes, timeToLive: timeToLive)
    }

    /// The value of `key` decoded as `V` with the store's codec: a local hit (the
    /// store's decoded cache serves repeated reads without decoding), else one
    /// load from Redis per machine. Nil when Redis has no such key (remembered
    /// for the store's `negativeTTL`, if it has one).
    ///
    /// - Throws: `.redisUnavailable` on a miss while Redis cannot be reached,
    ///   unless the store's `staleIfError` lets an expired copy be served;
    ///   `.store` (with `storeError` `.codingFailed`) when the bytes are not a `V`;
    ///   what `get(_:)` throws.
    public func get<V: Codable & Sendable>(_ key: String, as type: V.Type = V.self) async throws(RedisNearCacheError) -> V? {
        let operation = "RedisNearCache.get(\"\(key)\", as: \(V.self))"
        do { return try await _getOrLoad(key, V.self, timeToLive: nil, loader: nil, operation) } catch {
            throw _wrap(error, operation)
        }
    }

    /// Three levels, one call: the value of `key` from the machine's store, else
    /// from Redis, else from `load` (say, a database query), whose value is then
    /// written to Redis (for `timeToLive`) and to the machine's store.
    ///
    /// `load` runs once per key per machine however many processes miss at once
    /// (the store's get-or-load), and, across machines, one at a time per key (a
    /// Redis lock with the expiry `loadLockTimeToLive`, so a crashed loader
    /// blocks the others at most that long). A nil from `load` is remembered for
    /// the store's `negativeTTL`. When Redis or `load` fails, a value expired at
    /// most the store's `staleIfError` ago is returned instead. With
    /// `refreshAhead` set, a hit with at most that much life left is reloaded
    /// once per machine in the background while the old value is served.
    ///
    ///     let user = try await cache.get("42", as: User.self, timeToLive: .seconds(60)) {
    ///         try await database.user(id: 42)
    ///     }
    ///
    /// - Parameters:
    ///   - key: the cache's key (not starting with NUL).
    ///   - type: the value's type (encoded and decoded with the store's codec).
    ///   - timeToLive: the life of a loaded value in Redis and locally (nil: none).
    ///   - load: returns the value, or nil for "there is none".
    /// - Returns: the value, or nil when there is none.
    /// - Throws: what `load` throws (unless a stale value is served);
    ///   `RedisNearCacheError`: `.lockTimeout` when another process or machine
    ///   held the key's load longer than `lockTimeout`, `.redisUnavailable`,
    ///   `.authenticationFailed`, `.store`, `.invalidArgument`.
    public func get<V: Codable & Sendable>(
        _ key: String, as type: V.Type = V.self, timeToLive: Duration? = nil, orLoad load: @escaping @Sendable () async throws -> V?
    ) async throws -> V? {
        let operation = "RedisNearCache.get(\"\(key)\", as: \(V.self), orLoad:)"
        do { return try await _getOrLoad(key, V.self, timeToLive: timeToLive, loader: load, operation) } catch let error as ShmError {
            throw _wrap(error, operation)
        }
    }

    // MARK: The levels

    func _getOrLoad<V: Codable & Sendable>(
        _ key: String, _ type: V.Type, timeToLive: Duration?, loader: (@Sendable () async throws -> V?)?, _ operation: String
    ) async throws -> V? {
        try _checkKey(key, operation)
        if let timeToLive, _milliseconds(timeToLive) < 1 {
            throw RedisNearCacheError(.invalidArgument, operation, detail: "a time to live must be at least 1 ms")
        }
        guard _trusted() else {
            // The subscriber is dead: local copies are neither served nor made.
            do { return try await _loadThrough(key, V.self, timeToLive, loader, record: nil, refresh: false, operation) } catch {
                if let error = error as? RedisNearCacheError, let stale = _staleAfterDeadSubscriber(key, error) {
                    return try _decodeValue(V.self, stale, operation)
                }
                throw error
            }
        }
        // A plain get reclaims an expired entry: with stale-if-error (or refresh
        // ahead) look at the entry's life first, and leave an expired one to the
        // store's get-or-load, which serves it if the load fails.
        var left: ShmStore.TimeToLive?? = .none
        if store.configuration.staleIfError != nil || (loader != nil && configuration.refreshAhead != nil) {
            left = .some(try store.timeToLive(key))
        }
        if left != .some(nil), let hit = try store.get(key, as: V.self) {
            if let loader, let ahead = configuration.refreshAhead, case .remaining(let remaining)?? = left, remaining <= ahead {
                _refreshAhead(key, V.self, timeToLive, loader, operation)
            }
            return hit
        }
        let record = _LoadRecord(token: nil)
        let value = try await store.get(key, as: V.self) { () async throws -> V? in
            // The token is taken here, before Redis is read, by the one loader.
            record.begin(self._beginLoad(key))
            return try await self._loadThrough(key, V.self, timeToLive, loader, record: record, refresh: false, operation)
        }
        if let loaded = record.take() {
            _settle(key, loaded.bytes, redisMilliseconds: loaded.milliseconds, token: loaded.token)
        }
        return value
    }

    /// Redis, then the loader (under the Redis lock). Records what it brought
    /// in `record` (nil: the caller caches nothing). `refresh`: a Redis value
    /// with at most `refreshAhead` left counts as a miss.
    func _loadThrough<V: Codable & Sendable>(
        _ key: String, _ type: V.Type, _ timeToLive: Duration?, _ loader: (@Sendable () async throws -> V?)?, record: _LoadRecord?,
        refresh: Bool, _ operation: String
    ) async throws -> V? {
        let aheadMilliseconds = refresh ? (configuration.refreshAhead.map { _milliseconds($0) } ?? 0) : 0
        func usable(_ bytes: [UInt8]?, _ ms: Int64) -> [UInt8]? {
            guard let bytes, ms != -2 else { return nil }
            return refresh && ms >= 0 && ms <= aheadMilliseconds ? nil : bytes
        }
        let deadline = _now() &+ _nanoseconds(configuration.lockTimeout)
        while true {
            let (bytes, ms) = try await _fetch(key, operation)
            await _runAfterFetchHook(key)
            if let found = usable(bytes, ms) {
                record?.put(found, ms)
                return try _decodeValue(V.self, found, operation)
            }
            guard let loader else {
                if bytes == nil { record?.put(nil, nil) }
                return nil
            }
            let lockValue = _randomBytes()
            if try await _redisLock(key, lockValue, operation) {
                do {
                    let (again, againMs) = try await _fetch(key, operation)
                    if let found = usable(again, againMs) {
                        await _redisUnlock(key, lockValue, operation)
                        record?.put(found, againMs)
                        return try _decodeValue(V.self, found, operation)
                    }
                    guard let value = try await loader() else {
                        await _redisUnlock(key, lockValue, operation)
                        record?.put(nil, nil)
                        return nil
                    }
                    let encoded: [UInt8]
                    do { encoded = try store.codec.encode(value) } catch {
                        throw RedisNearCacheError(.invalidArgument, operation, detail: "cannot encode the loaded value: \(error)")
                    }
                    let stored = try await _writeLoaded(key, encoded, timeToLive, onlyIfAbsent: !refresh, operation)
                    await _redisUnlock(key, lockValue, operation)
                    if let stored {
                        // Another write came in meanwhile: it wins over the loader's read.
                        record?.put(stored.bytes, stored.milliseconds)
                        return try _decodeValue(V.self, stored.bytes, operation)
                    }
                    record?.put(encoded, timeToLive.map { _milliseconds($0) } ?? -1)
                    return value
                } catch {
                    await _redisUnlock(key, lockValue, operation)
                    throw error
                }
            }
            // Another machine's loader holds it: wait for its value.
            if _now() >= deadline {
                throw RedisNearCacheError(
                    .lockTimeout, operation, detail: "another loader held the Redis lock of \"\(key)\" longer than lockTimeout (\(configuration.lockTimeout))")
            }
            try await Task.sleep(for: .milliseconds(25))
        }
    }

    /// Writes a loaded value (SET, NX unless refreshing, PX) and publishes it,
    /// in one MULTI. Nil: written; otherwise the value Redis already had (NX
    /// refused), with its remaining time.
    func _writeLoaded(
        _ key: String, _ value: [UInt8], _ timeToLive: Duration?, onlyIfAbsent: Bool, _ operation: String
    ) async throws(RedisNearCacheError) -> (bytes: [UInt8], milliseconds: Int64)? {
        var command: [[UInt8]] = [Array("SET".utf8), _redisKey(key), value]
        if let timeToLive { command += [Array("PX".utf8), Array(String(_milliseconds(timeToLive)).utf8)] }
        if onlyIfAbsent { command.append(Array("NX".utf8)) }
        let set = command
        let publish: [[UInt8]] = [Array("PUBLISH".utf8), Array(channel.utf8), _message(key)]
        let replies = try await _command(operation) { (connection) throws(RedisNearCacheError) in
            try connection.pipeline([[Array("MULTI".utf8)], set, publish, [Array("EXEC".utf8)]], operation)
        }
        guard case .array(let results)? = replies.last, results.count == 2 else {
            throw RedisNearCacheError(.redisError, operation, detail: "the transaction was not applied: \(replies)")
        }
        switch results[0] {
        case .status: return nil
        case .null:
            let (current, ms) = try await _fetch(key, operation)
            guard let current else { return nil }  // gone again: serve the loaded value, uncached below
            return (current, ms)
        case .error(let message): throw RedisNearCacheError(.redisError, operation, detail: "SET: \(message)")
        case let other: throw RedisNearCacheError(.redisError, operation, detail: "SET replied \(other)")
        }
    }

    /// The Redis lock of `key`'s loader, across machines: SET NX PX.
    func _redisLock(_ key: String, _ value: [UInt8], _ operation: String) async throws(RedisNearCacheError) -> Bool {
        let command: [[UInt8]] = [
            Array("SET".utf8), _redisLockKey(key), value, Array("NX".utf8), Array("PX".utf8),
            Array(String(_milliseconds(configuration.loadLockTimeToLive)).utf8),
        ]
        let reply = try await _command(operation) { (connection) throws(RedisNearCacheError) in try connection.pipeline([command], operation)[0] }
        switch reply {
        case .status: return true
        case .null: return false
        case .error(let message): throw RedisNearCacheError(.redisError, operation, detail: "SET NX (lock): \(message)")
        case let other: throw RedisNearCacheError(.redisError, operation, detail: "SET NX (lock) replied \(other)")
        }
    }

    /// Releases the Redis lock if it is still ours (its expiry may have passed
    /// and another loader taken it). Failures are ignored: the expiry frees it.
    func _redisUnlock(_ key: String, _ value: [UInt8], _ operation: String) async {
        let script = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
        let command: [[UInt8]] = [Array("EVAL".utf8), Array(script.utf8), Array("1".utf8), _redisLockKey(key), value]
        _ = try? await _command(operation) { (connection) throws(RedisNearCacheError) in try connection.pipeline([command], operation) }
    }

    func _redisLockKey(_ key: String) -> [UInt8] { Array((configuration.name + "\u{0}lock:" + key).utf8) }

    func _decodeValue<V: Decodable>(_ type: V.Type, _ bytes: [UInt8], _ operation: String) throws(RedisNearCacheError) -> V {
        do { return try bytes.withUnsafeBytes { try store.codec.decode(V.self, from: $0) } } catch {
            throw RedisNearCacheError(
                .store, operation, detail: "the value is not a \(V.self): \(error)", storeError: ShmError(.codingFailed, operation))
        }
    }

    // MARK: Refresh ahead

    /// Starts the background reload of `key`, unless one runs already on this machine.
    func _refreshAhead<V: Codable & Sendable>(
        _ key: String, _ type: V.Type, _ timeToLive: Duration?, _ loader: @escaping @Sendable () async throws -> V?, _ operation: String
    ) {
        let lockKey = "\u{0}shmlru-redis/\(configuration.name)/refresh:\(key)"
        guard let token = (try? store.tryLock(lockKey)) ?? nil else { return }  // a refresh of it runs already
        Task.detached { [self] in
            defer { try? store.unlock(lockKey, token) }
            let record = _LoadRecord(token: _beginLoad(key))
            _ = try? await _loadThrough(key, V.self, timeToLive, loader, record: record, refresh: true, operation + " (refresh ahead)")
            if let loaded = record.take() { _settle(key, loaded.bytes, redisMilliseconds: loaded.milliseconds, token: loaded.token) }
        }
    }
}
#endif  // Redis
