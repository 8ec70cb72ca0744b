#if Redis
import ShmLRU

// A miss becomes one Redis load per machine. This is the only place that knows
// how: the store's per-key lock "load:k" (its public lock API) makes the loads of
// a key by all the machine's processes take turns; whoever gets it first loads
// and stores, and the others find the value on their second look. When the
// store gains a cross-process get-or-load, `_readThrough` is what switches to it.

extension RedisNearCache {
    /// Loads `key` after a local miss: under the key's load lock, look again,
    /// then GET and PTTL in one round trip, and store the value locally (if the
    /// machine's subscriber is connected, see `_cachingEpoch`).
    func _readThrough(_ key: String) throws(RedisNearCacheError) -> [UInt8]? {
        let operation = "RedisNearCache.get(\"\(key)\")"
        let localKey = key
        try _checkKey(key, operation)
        return try _withLoadLock(key, operation) { () throws(RedisNearCacheError) -> [UInt8]? in
            if let hit = try _local(operation, { () throws(ShmError) in try store.bytes(localKey) }) { return hit }
            let epoch = _cachingEpoch()
            let (value, milliseconds) = try _fetch(key, operation)
            guard let value else { return nil }
            // PTTL -2: the key expired between the two commands (serve, do not keep);
            // -1: Redis keeps it for ever.
            if milliseconds != -2 { _cacheLocally(key, value, redisMilliseconds: milliseconds == -1 ? nil : milliseconds, epoch: epoch) }
            return value
        }
    }

    /// GET and PTTL of `key`, pipelined: the value (nil: no such key) and its
    /// remaining time in ms (-1: none, -2: gone).
    func _fetch(_ key: String, _ operation: String) throws(RedisNearCacheError) -> ([UInt8]?, Int64) {
        let redisKey = _redisKey(key)
        let replies = try _pool.withConnection(operation) { (connection) throws(RedisNearCacheError) in
            try connection.pipeline([[Array("GET".utf8), redisKey], [Array("PTTL".utf8), redisKey]], operation)
        }
        guard replies.count == 2 else { throw RedisNearCacheError(.redisError, operation, detail: "expected 2 replies, got \(replies.count)") }
        let value: [UInt8]?
        switch replies[0] {
        case .string(let bytes): value = bytes
        case .null: value = nil
        case .error(let message): throw RedisNearCacheError(.redisError, operation, detail: "GET: \(message)")
        case let other: throw RedisNearCacheError(.redisError, operation, detail: "GET replied \(other)")
        }
        guard case .integer(let milliseconds) = replies[1] else {
            throw RedisNearCacheError(.redisError, operation, detail: "PTTL replied \(replies[1])")
        }
        return (value, milliseconds)
    }
}
#endif  // Redis
