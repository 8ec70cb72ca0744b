#if Redis
import ShmLRU

// The machine's invalidation state, shared by its processes through one entry
// of the store (key "\0shmlru-redis/<name>/state", never expiring):
//
//   offset  size  field
//   0       8     epoch      random, renewed at every (re)subscription and disconnection
//   8       4     pid        the subscriber's process (0: none)
//   12      1     connected  1 while subscribed to the channel
//
// A value is cached locally only while the subscriber is connected and alive,
// and kept only if the epoch did not change between the loader's read of Redis
// and its store (see RedisNearCache.swift, "Caching is allowed only while …").
// An entry that is missing or malformed (evicted, or written by a peer of
// another layout) means "not connected": nothing new is cached.

struct _MachineState: Hashable {
    static let size = 13
    var epoch: UInt64
    var pid: Int32
    var connected: Bool

    var bytes: [UInt8] {
        var result = [UInt8](repeating: 0, count: Self.size)
        for i in 0..<8 { result[i] = UInt8(truncatingIfNeeded: epoch >> (8 * UInt64(i))) }
        let p = UInt32(bitPattern: pid)
        for i in 0..<4 { result[8 + i] = UInt8(truncatingIfNeeded: p >> (8 * UInt32(i))) }
        result[12] = connected ? 1 : 0
        return result
    }

    init(epoch: UInt64, pid: Int32, connected: Bool) {
        self.epoch = epoch
        self.pid = pid
        self.connected = connected
    }

    /// Nil unless `bytes` is exactly an entry of this layout.
    init?(_ bytes: [UInt8]) {
        guard bytes.count == Self.size, bytes[12] <= 1 else { return nil }
        var e: UInt64 = 0
        for i in 0..<8 { e |= UInt64(bytes[i]) << (8 * UInt64(i)) }
        var p: UInt32 = 0
        for i in 0..<4 { p |= UInt32(bytes[8 + i]) << (8 * UInt32(i)) }
        epoch = e
        pid = Int32(bitPattern: p)
        connected = bytes[12] == 1
    }
}

extension RedisNearCache {
    func _readState() throws(RedisNearCacheError) -> _MachineState? {
        let bytes = try _local("RedisNearCache.state", { () throws(ShmError) in try store.bytes(_stateKey) })
        return bytes.flatMap { _MachineState($0) }
    }

    /// The epoch to cache under now, or nil when nothing may be cached: no
    /// connected subscriber, or its process is dead (the state would then be stale).
    func _cachingEpoch() -> UInt64? {
        guard let state = try? _readState(), state.connected, state.pid != 0,
            let holder = try? store.lockState(_electionLock).holder, holder == state.pid
        else { return nil }
        return state.epoch
    }

    /// Stores what was read from Redis, if `epoch` allows, with the time Redis
    /// has left for it (capped by the store's max age); removes the local copy
    /// otherwise. Store failures (a value too large for a record, a full store
    /// that refuses) leave the key uncached: the value is still served.
    func _cacheLocally(_ key: String, _ value: [UInt8], redisMilliseconds: Int64?, epoch: UInt64?) {
        let localKey = key
        guard let epoch, redisMilliseconds.map({ $0 > 0 }) ?? true else {
            _ = try? store.remove(localKey)
            return
        }
        var expiry = ShmStore.Expiry.storeDefault
        if let ms = redisMilliseconds {
            var duration = Duration.milliseconds(ms)
            if let maxAge = store.configuration.maxAge, maxAge < duration { duration = maxAge }
            expiry = .after(duration)
        }
        do { try store.set(localKey, bytes: value, expiry: expiry) } catch {
            _ = try? store.remove(localKey)
            return
        }
        // Invalidations may have stopped (or restarted) while Redis was being read:
        // the subscriber's next invalidate-all may have run before this set.
        guard let now = try? _readState(), now.connected, now.epoch == epoch else {
            _ = try? store.remove(localKey)
            return
        }
    }

    /// Records the subscriber's state under `epoch`, by default a new one
    /// (subscriber only); returns the epoch.
    @discardableResult
    func _writeState(pid: Int32, connected: Bool, epoch: UInt64? = nil) throws(RedisNearCacheError) -> UInt64 {
        let state = _MachineState(epoch: epoch ?? UInt64.random(in: 1...UInt64.max), pid: pid, connected: connected)
        try _local("RedisNearCache.state", { () throws(ShmError) in try store.set(_stateKey, bytes: state.bytes, expiry: .never) })
        return state.epoch
    }

    /// Removes every key of this cache from the machine's store (all but the
    /// reserved entries, whose names start with NUL); returns how many.
    @discardableResult
    func _invalidateAll() throws(RedisNearCacheError) -> Int {
        try _local("RedisNearCache.invalidateAll") { () throws(ShmError) -> Int in
            var removed = 0
            for key in try store.keys() where key.utf8.first != 0 {
                if try store.remove(key) { removed += 1 }
            }
            return removed
        }
    }
}
#endif  // Redis
