#if Redis
import Glibc
import ShmLRU

// RedisNearCache: a ShmStore as each machine's near cache in front of Redis.
//
// Design
// ------
// * Keys. A cache has a `name`, the same on every machine. Its key "k" is the
//   Redis key "name:k", and the key "k" of the machine's store: the store is the
//   cache's own (one store per cache name; invalidating the near cache removes
//   every key of the store but the reserved entries, whose names start with NUL).
//   A hit therefore builds no string. Invalidations go to the channel "shmlru:name".
// * Reads (RedisNearCache+ReadThrough.swift). A local hit is one store lookup,
//   no Redis. A miss loads from Redis once per machine: the loader takes the
//   store's per-key lock "load:k", looks again (a peer may have loaded it), sends
//   GET and PTTL in one round trip, and stores the value locally with the time
//   Redis has left for it.
// * Writes. `set` and `remove` run MULTI / SET or DEL / PUBLISH / EXEC (one round
//   trip, applied together or not at all), then change the local store, under the
//   same per-key lock as loads (so a machine's own writes and loads of a key are
//   ordered). The message carries the writing machine's origin and the key.
// * Invalidation (RedisInvalidationSubscriber.swift). On every machine exactly
//   one process's subscriber is active: it holds the store lock "subscriber"
//   (standbys poll `tryLock`; the store's lock liveness check frees a dead
//   holder's lock, so a standby takes over). It subscribes to the channel and
//   removes each key another machine changed, under the key's "load:" lock (so a
//   load that read the old value before the write cannot store it after the
//   removal).
// * Caching is allowed only while the machine's subscriber is connected
//   (RedisNearCache+MachineState.swift): the subscriber keeps a state entry in
//   the store (its PID, connected or not, and an epoch). Each (re)subscription
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
//   when invalidations stopped); loads and writes throw `.redisUnavailable`; the
//   pool reconnects with exponential backoff, the subscriber too, and its
//   reconnection invalidates the machine's near cache.

/// A per-machine near cache in front of Redis: every process of a machine shares
/// one `ShmStore` of cached values, and one invalidation subscriber.
///
///     let store = try ShmStore.create(key: 0x5EED)          // once per machine
///     let cache = RedisNearCache(store: store, configuration: .init(name: "users"))
///     let subscriber = RedisInvalidationSubscriber(cache: cache)
///     try subscriber.start()                                // in every process; one is active
///     try cache.set("42", bytes: Array("Tom".utf8), timeToLive: .seconds(60))
///     let tom = try cache.get("42")                         // local hit, or one load per machine
public final class RedisNearCache: Sendable {
    public struct Configuration: Sendable, Hashable {
        /// The cache's name, the same on every machine: Redis keys are "name:key",
        /// invalidations go to the channel "shmlru:name".
        public var name: String
        public var host: String
        public var port: Int
        public var connectTimeout: Duration
        /// The longest a command (or a pipeline of them) waits for its reply.
        public var commandTimeout: Duration
        /// The first delay after a failed connection; doubled at each failure up to `maxBackoff`.
        public var initialBackoff: Duration
        public var maxBackoff: Duration
        /// The longest a load, write or invalidation waits for the key's "load:" lock.
        public var lockTimeout: Duration
        /// Names this machine in the messages it publishes (its own writes are not
        /// invalidated by its subscriber): unique to the machine's store. Default:
        /// the host name, the kernel's boot id and the store's key.
        public var origin: String?

        public init(
            name: String, host: String = "127.0.0.1", port: Int = 6379, connectTimeout: Duration = .seconds(1),
            commandTimeout: Duration = .seconds(1), initialBackoff: Duration = .milliseconds(50), maxBackoff: Duration = .seconds(1),
            lockTimeout: Duration = .seconds(5), origin: String? = nil
        ) {
            self.name = name
            self.host = host
            self.port = port
            self.connectTimeout = connectTimeout
            self.commandTimeout = commandTimeout
            self.initialBackoff = initialBackoff
            self.maxBackoff = maxBackoff
            self.lockTimeout = lockTimeout
            self.origin = origin
        }
    }

    /// The machine's store holding the cached values, under the cache's keys. It
    /// belongs to this cache: give each cache name a store of its own.
    public let store: ShmStore
    public let configuration: Configuration
    /// This machine's name in published messages.
    public let origin: String
    /// The pub/sub channel of invalidations: "shmlru:" + name.
    public var channel: String { "shmlru:\(configuration.name)" }

    let _pool: _ConnectionPool
    /// "name:" — the prefix of every key of this cache in Redis.
    let _prefix: String
    /// The store lock electing the machine's subscriber, and the state entry's key.
    let _electionLock: String
    let _stateKey: String

    public init(store: ShmStore, configuration: Configuration) {
        self.store = store
        self.configuration = configuration
        origin = configuration.origin ?? "\(_hostName())/\(_bootID())/\(store.key)"
        _prefix = configuration.name + ":"
        // A leading NUL keeps the reserved names apart from any key of the cache.
        _electionLock = "\u{0}shmlru-redis/\(configuration.name)/subscriber"
        _stateKey = "\u{0}shmlru-redis/\(configuration.name)/state"
        _pool = _ConnectionPool(
            .init(
                host: configuration.host, port: configuration.port, connectTimeout: configuration.connectTimeout,
                commandTimeout: configuration.commandTimeout, initialBackoff: configuration.initialBackoff,
                maxBackoff: configuration.maxBackoff))
    }

    // MARK: Reads

    /// The value of `key`: from the machine's store if it holds it, otherwise
    /// loaded from Redis (once for the whole machine, however many processes miss
    /// at once) and kept locally for the time Redis has left for it. Nil when
    /// Redis has no such key.
    ///
    /// - Throws: `.redisUnavailable` on a miss while Redis cannot be reached
    ///   (hits are still served); `.redisError`; `.store`.
    public func get(_ key: String) throws(RedisNearCacheError) -> [UInt8]? {
        let localKey = key
        if let hit = try _local("RedisNearCache.get(\"\(key)\")", { () throws(ShmError) in try store.bytes(localKey) }) {
            return hit
        }
        return try _readThrough(key)
    }

    /// The value of `key` in the machine's store only (no Redis); nil on a miss.
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
    public func set(_ key: String, bytes value: [UInt8], timeToLive: Duration? = nil) throws(RedisNearCacheError) {
        let operation = "RedisNearCache.set(\"\(key)\")"
        try _checkKey(key, operation)
        var command: [[UInt8]] = [Array("SET".utf8), _redisKey(key), value]
        if let timeToLive {
            let ms = _milliseconds(timeToLive)
            guard ms > 0 else { throw RedisNearCacheError(.invalidArgument, operation, detail: "a time to live must be at least 1 ms") }
            command += [Array("PX".utf8), Array(String(ms).utf8)]
        }
        try _write(key, command, operation) { (epoch) throws(RedisNearCacheError) in
            let ms = timeToLive.map { _milliseconds($0) }
            _cacheLocally(key, value, redisMilliseconds: ms, epoch: epoch)
        }
    }

    /// Removes `key` from Redis, publishes the change, and removes it locally.
    public func remove(_ key: String) throws(RedisNearCacheError) {
        let operation = "RedisNearCache.remove(\"\(key)\")"
        try _checkKey(key, operation)
        let localKey = key
        try _write(key, [Array("DEL".utf8), _redisKey(key)], operation) { (_) throws(RedisNearCacheError) in
            _ = try _local(operation, { () throws(ShmError) in try store.remove(localKey) })
        }
    }

    /// MULTI / `command` / PUBLISH / EXEC under the key's load lock, then `local`
    /// with the caching epoch (nil: caching is off). On a Redis failure the local
    /// copy is removed: whether Redis applied the write is then unknown.
    func _write(
        _ key: String, _ command: [[UInt8]], _ operation: String, local: (UInt64?) throws(RedisNearCacheError) -> Void
    ) throws(RedisNearCacheError) {
        let localKey = key
        try _withLoadLock(key, operation) { () throws(RedisNearCacheError) in
            let epoch = _cachingEpoch()
            do throws(RedisNearCacheError) {
                let replies = try _pool.withConnection(operation) { (connection) throws(RedisNearCacheError) in
                    try connection.pipeline(
                        [[Array("MULTI".utf8)], command, [Array("PUBLISH".utf8), Array(channel.utf8), _message(key)], [Array("EXEC".utf8)]],
                        operation)
                }
                guard case .array(let results)? = replies.last, results.count == 2 else {
                    throw RedisNearCacheError(.redisError, operation, detail: "the transaction was not applied: \(replies)")
                }
                if case .error(let message) = results[0] { throw RedisNearCacheError(.redisError, operation, detail: message) }
            } catch {
                _ = try? store.remove(localKey)
                throw error
            }
            try local(epoch)
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

    /// The machine's active subscriber; nil when no live process runs one (the
    /// near cache then caches nothing new).
    public func subscriberStatus() throws(RedisNearCacheError) -> SubscriberStatus? {
        guard let state = try _readState(), state.pid != 0 else { return nil }
        let holder = try _local("RedisNearCache.subscriberStatus", { () throws(ShmError) in try store.lockState(_electionLock).holder })
        guard holder == state.pid else { return nil }
        return SubscriberStatus(pid: state.pid, isConnected: state.connected)
    }

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

    /// The store lock serializing a machine's loads and writes of `key`.
    func _loadLock(_ key: String) -> String { "\u{0}shmlru-redis/\(configuration.name)/load:\(key)" }

    func _withLoadLock<R>(_ key: String, _ operation: String, _ body: () throws(RedisNearCacheError) -> R) throws(RedisNearCacheError) -> R {
        let lockKey = _loadLock(key)
        let token = try _local(operation, { () throws(ShmError) in try store.blockingLock(lockKey, timeout: configuration.lockTimeout) })
        defer { try? store.unlock(lockKey, token) }
        return try body()
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
