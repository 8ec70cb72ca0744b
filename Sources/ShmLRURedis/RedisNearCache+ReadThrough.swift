#if Redis
import ShmLRU
import Synchronization

// A byte miss becomes one Redis load per machine: the store's per-key lock
// "load:k" (taken asynchronously) makes the loads of a key by all the machine's
// processes take turns; whoever gets it first loads and stores, and the others
// find the value on their second look. (Codable values go through the store's
// own get-or-load instead: RedisNearCache+Codable.swift.)
//
// A load takes its token (epoch, the key's invalidation sequence) before it
// reads Redis and settles after (RedisNearCache+MachineState.swift): a value
// read before an invalidation never stays.
//
// While the machine's subscriber is dead (no heartbeat within heartbeatTimeout)
// local copies are not served: every get reads Redis, and nothing is cached.
// If Redis fails then, the local copy is served as the store's `staleIfError`
// allows, counted from the moment hits stopped (last heartbeat + heartbeatTimeout).

extension RedisNearCache {
    /// Loads `key` after a local miss (or while local copies may not be served).
    func _readThrough(_ key: String) async throws(RedisNearCacheError) -> [UInt8]? {
        let operation = "RedisNearCache.get(\"\(key)\")"
        let localKey = key
        try _checkKey(key, operation)
        guard _trusted() else {
            do throws(RedisNearCacheError) { return try await _fetch(key, operation).value } catch {
                if let stale = _staleAfterDeadSubscriber(key, error) { return stale }
                throw error
            }
        }
        return try await _withLoadLock(key, operation) { () async throws(RedisNearCacheError) -> [UInt8]? in
            if let hit = try _local(operation, { () throws(ShmError) in try store.bytes(localKey) }) { return hit }
            let token = _beginLoad(key)
            let (value, milliseconds) = try await _fetch(key, operation)
            await _runAfterFetchHook(key)
            guard let value else { return nil }
            // PTTL -2: the key expired between the two commands (serve, do not keep);
            // -1: Redis keeps it for ever.
            if milliseconds != -2 { _settle(key, value, redisMilliseconds: milliseconds, token: token) }
            return value
        }
    }

    /// The local copy of `key` when Redis failed with `error` while the
    /// subscriber is dead, if the store's `staleIfError` still allows it.
    func _staleAfterDeadSubscriber(_ key: String, _ error: RedisNearCacheError) -> [UInt8]? {
        guard error.code == .redisUnavailable || error.code == .lockTimeout, let window = store.configuration.staleIfError else { return nil }
        let heartbeat = _lastHeartbeat()
        guard heartbeat != 0 else { return nil }
        let until = heartbeat &+ _heartbeatTimeoutNanoseconds &+ _nanoseconds(window)
        guard _now() < until else { return nil }
        return (try? store.bytes(key)) ?? nil
    }

    func _runAfterFetchHook(_ key: String) async {
        if let hook = _afterFetch.withLock({ $0 }) { await hook(key) }
    }

    /// GET and PTTL of `key`, pipelined on one of the near cache's threads: the
    /// value (nil: no such key) and its remaining time in ms (-1: none, -2: gone).
    func _fetch(_ key: String, _ operation: String) async throws(RedisNearCacheError) -> (value: [UInt8]?, milliseconds: Int64) {
        let redisKey = _redisKey(key)
        let endpoint = "\(configuration.host):\(configuration.port)"
        let replies = try await _command(operation) { (connection) throws(RedisNearCacheError) in
            try connection.pipeline([[Array("GET".utf8), redisKey], [Array("PTTL".utf8), redisKey]], operation)
        }
        guard replies.count == 2 else { throw RedisNearCacheError(.redisError, operation, detail: "expected 2 replies, got \(replies.count)") }
        let value: [UInt8]?
        switch replies[0] {
        case .string(let bytes): value = bytes
        case .null: value = nil
        case .error(let message):
            if let denied = _authenticationError(message, operation, endpoint) { throw denied }
            throw RedisNearCacheError(.redisError, operation, detail: "GET: \(message)")
        case let other: throw RedisNearCacheError(.redisError, operation, detail: "GET replied \(other)")
        }
        guard case .integer(let milliseconds) = replies[1] else {
            throw RedisNearCacheError(.redisError, operation, detail: "PTTL replied \(replies[1])")
        }
        return (value, milliseconds)
    }
}
#endif  // Redis
