#if Redis
import Glibc
import ShmLRU
import Synchronization

// RedisNearCache: a ShmStore as each machine's near cache in front of Redis.
//
// Design
// ------
// * Keys. A cache has a `name`, the same on every machine. Its key "k" is the
//   Redis key "name:k", and the key "k" of the machine's store: the store is the
//   cache's own (one store per cache name; invalidating the near cache removes
//   every key of the store but the reserved entries, whose names start with NUL).
//   A hit therefore builds no string. Invalidations go to the channel "shmlru:name".
// * Async. Every call that may touch Redis is async: Redis commands run on the
//   near cache's own threads (_RedisExecutor.swift), lock waits go through the
//   store's async locks; no call blocks a thread of Swift's cooperative pool.
// * Reads (RedisNearCache+ReadThrough.swift, bytes; RedisNearCache+Codable.swift,
//   Codable values through the store's get-or-load). A local hit is one store
//   lookup, no Redis. A miss loads from Redis once per machine, sends GET and
//   PTTL in one round trip, and stores the value locally with the time Redis has
//   left for it. `get(_:as:timeToLive:orLoad:)` adds the caller's loader behind
//   Redis, under a Redis lock (one loader at a time across machines).
// * Writes. `set` and `remove` run MULTI / SET or DEL / PUBLISH / EXEC (one round
//   trip, applied together or not at all), then change the local store, under the
//   same per-key lock as loads (so a machine's own writes and loads of a key are
//   ordered). The message carries the writing machine's origin and the key.
// * Invalidation (RedisInvalidationSubscriber.swift). On every machine exactly
//   one process's subscriber is active: it holds the store lock "subscriber"
//   (standbys poll `tryLock`; the store's lock liveness check frees a dead
//   holder's lock, so a standby takes over). It subscribes to the channel and
//   removes each key another machine changed, after bumping the key's
//   invalidation sequence (RedisNearCache+MachineState.swift): a load that read
//   the old value before the write drops its copy, however long it stalled. It
//   takes no lock, so nothing can make it give up an invalidation.
// * Caching is allowed only while the machine's subscriber is connected
//   (RedisNearCache+MachineState.swift): the subscriber keeps a state entry in
//   the store (its PID, connected or not, an epoch, and a heartbeat; hits are
//   served only while the heartbeat is at most `heartbeatTimeout` old). Each (re)subscription
//   writes a new epoch (not connected yet), removes every cached key (it cannot
//   know what was published while nobody listened), then marks it connected. A loader reads the state before its GET;
//   it caches only if the subscriber is connected and alive, and, after storing,
//   reads the epoch again and removes what it stored if the epoch changed. So no
//   value read from Redis before a gap in the invalidations outlives the gap.
// * Why pub/sub and not Redis 6 client tracking (redirect mode): tracking
//   reports the keys a *connection* read, so every loading connection of every
//   process would have to enable tracking redirected to the subscriber's client
//   id, and redo it whenever that id changes (reconnection, takeover: another
//   process). A channel needs no coordination between a machine's processes,
//   works with any Redis, and the origin in each message lets a machine skip its
//   own writes. The cost: writes that bypass RedisNearCache (another client
//   writing the Redis keys) are not seen; such keys need a time to live.
// * Redis down: local hits are still served (the near cache keeps what it had
//   when invalidations stopped, while its subscriber lives); loads and writes
//   throw `.redisUnavailable` within the command timeout; the pool's circuit
//   breaker (_ConnectionPool.swift) then fails further calls at once until a
//   probe succeeds; the subscriber reconnects with backoff, and its reconnection
//   invalidates the machine's near cache.

/// A per-machine near cache in front of Redis: every process of a machine shares
/// one `ShmStore` of cached values, and one invalidation subscriber.
///
///     let store = try ShmStore.create(key: 0x5EED)          // once per machine
///     let cache = try RedisNearCache(store: store, configuration: .init(name: "users", url: "redis://cache:6379/0"))
///     let subscriber = RedisInvalidationSubscriber(cache: cache)
///     try subscriber.start()                                // in every process; one is active
///     try await cache.set("42", User(name: "Tom"), timeToLive: .seconds(60))
///     let tom = try await cache.get("42", as: User.self)    // local hit, or one load per machine
///     let ann = try await cache.get("7", as: User.self, timeToLive: .seconds(60)) { try await db.user(7) }
public final class RedisNearCache: Sendable {
    /// The machine's store holding the cached values, under the cache's keys. It
    /// belongs to this cache: give each cache name a store of its own. Its
    /// `negativeTTL` and `staleIfError` settings are the near cache's.
    public let store: ShmStore
    /// The settings it was created with.
    public let configuration: Configuration
    /// This machine's name in published messages.
    public let origin: String
    /// The pub/sub channel of invalidations: "shmlru:" + name.
    public var channel: String { "shmlru:\(configuration.name)" }

    let _pool: _ConnectionPool
    let _executor: _RedisExecutor
    /// "name:" — the prefix of every key of this cache in Redis.
    let _prefix: String
    /// The store lock electing the machine's subscriber, and the state entry's key.
    let _electionLock: String
    let _stateKey: String
    /// Local hits may be served until this instant (monotonic ns): the
    /// subscriber's last heartbeat seen by this process + heartbeatTimeout.
    let _trustedUntil = Atomic<UInt64>(0)
    /// Test hook: runs after a load read Redis, before it stores (nil: none).
    let _afterFetch = Mutex<(@Sendable (String) async -> Void)?>(nil)

    /// A near cache over `store` (one per machine and cache name).
    ///
    /// - Throws: `.invalidConfiguration` naming the bad setting (see
    ///   `Configuration.validate()`). Nothing connects yet: a wrong password
    ///   or database shows at the first call that reaches Redis.
    public init(store: ShmStore, configuration: Configuration) throws(RedisNearCacheError) {
        try configuration.validate()
        self.store = store
        self.configuration = configuration
        origin = configuration.origin ?? "\(_hostName())/\(_bootID())/\(store.key)"
        _prefix = configuration.name + ":"
        // A leading NUL keeps the reserved names apart from any key of the cache.
        _electionLock = "\u{0}shmlru-redis/\(configuration.name)/subscriber"
        _stateKey = "\u{0}shmlru-redis/\(configuration.name)/state"
        _pool = _ConnectionPool(
            .init(
                host: configuration.host, port: configuration.port, user: configuration.user, password: configuration.password,
                database: configuration.database, connectTimeout: configuration.connectTimeout,
                commandTimeout: configuration.commandTimeout, initialBackoff: configuration.initialBackoff,
                maxBackoff: configuration.maxBackoff))
        _executor = _RedisExecutor(threads: configuration.ioThreads)
    }

    // MARK: Reads

    /// The value of `key`: from the machine's store if it holds it (and the
    /// machine's subscriber is alive), otherwise loaded from Redis (once for the
    /// whole machine, however many processes miss at once) and kept locally for
    /// the time Redis has left for it. Nil when Redis has no such key.
    ///
    /// - Throws: `.redisUnavailable` on a miss while Redis cannot be reached
    ///   (hits are still served); `.authenticationFailed` / `.invalidConfiguration`
    ///   for a wrong password or database; `.lockTimeout`; `.redisError`; `.store`.
    public func get(_ key: String) async throws(RedisNearCacheError) -> [UInt8]? {
        let localKey = key
        if _trusted(), let hit = try _local("RedisNearCache.get(\"\(key)\")", { () throws(ShmError) in try store.bytes(localKey) }) {
            return hit
        }
        return try await _readThrough(key)
    }

    /// The value of `key` in the machine's store only (no Redis, no liveness
    /// check); nil on a miss.
    public func cachedValue(_ key: String) throws(RedisNearCacheError) -> [UInt8]? {
        let localKey = key
        return try _local("RedisNearCache.cachedValue(\"\(key)\")", { () throws(ShmError) in try store.bytes(localKey) })
    }

    // MARK: Writes

    /// Writes `value` to Redis (with `timeToLive`, or none), publishes the change
    /// to the other machines, then stores it in this machine's store.
    ///
    /// - Throws: `.redisUnavailable` (nothing was written, or it is unknown
    ///   whether Redis applied it: the local copy is dropped either way);
    ///   `.invalidArgument` for a non-positive time to live.
    public func set(_ key: String, bytes value: [UInt8], timeToLive: Duration? = nil) async throws(RedisNearCacheError) {
        let operation = "RedisNearCache.set(\"\(key)\")"
        try _checkKey(key, operation)
        var command: [[UInt8]] = [Array("SET".utf8), _redisKey(key), value]
        var ms: Int64? = nil
        if let timeToLive {
            ms = _milliseconds(timeToLive)
            guard ms! > 0 else { throw RedisNearCacheError(.invalidArgument, operation, detail: "a time to live must be at least 1 ms") }
            command += [Array("PX".utf8), Array(String(ms!).utf8)]
        }
        let milliseconds = ms ?? -1
        try await _write(key, command, operation) { (token) in
            self._settle(key, value, redisMilliseconds: milliseconds, token: token)
        }
    }

    /// Removes `key` from Redis, publishes the change, and removes it locally.
    public func remove(_ key: String) async throws(RedisNearCacheError) {
        let operation = "RedisNearCache.remove(\"\(key)\")"
        try _checkKey(key, operation)
        try await _write(key, [Array("DEL".utf8), _redisKey(key)], operation) { (_) in }
    }

    /// Under the key's load lock (async): MULTI / `command` / PUBLISH / EXEC,
    /// then the key's invalidation on this machine (loads in flight drop their
    /// copies), then `local` with a token taken after it (nil: caching is off).
    /// On a Redis failure the local copy is removed: whether Redis applied the
    /// write is then unknown.
    func _write(
        _ key: String, _ command: [[UInt8]], _ operation: String, local: (_CacheToken?) -> Void
    ) async throws(RedisNearCacheError) {
        try await _withLoadLock(key, operation) { () async throws(RedisNearCacheError) in
            let message = _message(key)
            let channel = channel
            do throws(RedisNearCacheError) {
                let replies = try await _command(operation) { (connection) throws(RedisNearCacheError) in
                    try connection.pipeline(
                        [[Array("MULTI".utf8)], command, [Array("PUBLISH".utf8), Array(channel.utf8), message], [Array("EXEC".utf8)]],
                        operation)
                }
                guard case .array(let results)? = replies.last, results.count == 2 else {
                    if case .error(let text)? = replies.first, let denied = _authenticationError(text, operation, _pool.settings.host) { throw denied }
                    throw RedisNearCacheError(.redisError, operation, detail: "the transaction was not applied: \(replies)")
                }
                if case .error(let text) = results[0] { throw RedisNearCacheError(.redisError, operation, detail: text) }
            } catch {
                _invalidate(key)
                throw error
            }
            _invalidate(key)
            local(_beginLoad(key))
        }
    }

    // MARK: Status

    /// The machine's active subscriber, as the machine's processes see it.
    public struct SubscriberStatus: Sendable, Hashable {
        /// The process running it.
        public var pid: Int32
        /// Subscribed to the channel now: the near cache is kept up to date (and
        /// loads are cached). False while it reconnects: hits may then be stale.
        public var isConnected: Bool
    }

    /// The machine's active subscriber; nil when no live process runs one (no
    /// heartbeat within `heartbeatTimeout`: the near cache then serves and
    /// caches nothing).
    public func subscriberStatus() throws(RedisNearCacheError) -> SubscriberStatus? {
        guard let state = try _readState(), state.isAlive(now: _now(), timeout: _heartbeatTimeoutNanoseconds) else { return nil }
        return SubscriberStatus(pid: state.pid, isConnected: state.connected)
    }

    /// How many times this process's circuit breaker opened (a connection
    /// failed, or a command timed out).
    public var circuitBreakerTrips: Int { _pool.trips }

    // MARK: Internals

    func _redisKey(_ key: String) -> [UInt8] { Array((_prefix + key).utf8) }

    /// Keys starting with NUL are the store's reserved entries (state, locks).
    func _checkKey(_ key: String, _ operation: String) throws(RedisNearCacheError) {
        guard key.utf8.first != 0 else {
            throw RedisNearCacheError(.invalidArgument, operation, detail: "a key may not start with a NUL character")
        }
    }

    /// The published message: the origin, a NUL byte, the key.
    func _message(_ key: String) -> [UInt8] { Array(origin.utf8) + [0] + Array(key.utf8) }

    /// The store lock serializing a machine's byte loads and writes of `key`.
    func _loadLock(_ key: String) -> String { "\u{0}shmlru-redis/\(configuration.name)/load:\(key)" }

    /// Runs `body` holding the key's load lock, waited for asynchronously.
    func _withLoadLock<R>(
        _ key: String, _ operation: String, _ body: () async throws(RedisNearCacheError) -> R
    ) async throws(RedisNearCacheError) -> R {
        let lockKey = _loadLock(key)
        let token: ShmStore.LockToken
        do throws(ShmError) { token = try await store.lock(lockKey, timeout: configuration.lockTimeout) } catch {
            if error.code == .lockTimeout {
                throw RedisNearCacheError(.lockTimeout, operation, detail: "the key's load lock: \(error)", storeError: error)
            }
            throw RedisNearCacheError(.store, operation, detail: "\(error)", storeError: error)
        }
        defer { try? store.unlock(lockKey, token) }
        return try await body()
    }

    /// Runs `body` on a pooled connection, on one of the near cache's threads.
    func _command<R: Sendable>(
        _ operation: String, _ body: @escaping @Sendable (_RedisConnection) throws(RedisNearCacheError) -> R
    ) async throws(RedisNearCacheError) -> R {
        let pool = _pool
        return try await _executor.run { () throws(RedisNearCacheError) -> R in
            try pool.withConnection(operation, body)
        }
    }
}

/// The kernel's boot id (random at each boot; "" if unreadable).
func _bootID() -> String {
    guard let file = fopen("/proc/sys/kernel/random/boot_id", "r") else { return "" }
    defer { fclose(file) }
    var buffer = [CChar](repeating: 0, count: 64)
    guard fgets(&buffer, Int32(buffer.count), file) != nil else { return "" }
    return String(decoding: buffer.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// This machine's host name ("localhost" if it has none).
func _hostName() -> String {
    var buffer = [CChar](repeating: 0, count: 256)
    guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
#endif  // Redis
