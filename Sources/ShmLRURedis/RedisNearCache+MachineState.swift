#if Redis
import ShmLRU
import Synchronization

// What decides whether a machine's copy may be cached and served.
//
// The machine's invalidation state, shared by its processes through one entry
// of the store (key "\0shmlru-redis/<name>/state", never expiring), written by
// the active subscriber alone:
//
//   offset  size  field
//   0       8     epoch      random, renewed at every (re)subscription and disconnection
//   8       4     pid        the subscriber's process (0: none)
//   12      1     connected  1 while subscribed to the channel
//   13      8     heartbeat  CLOCK_MONOTONIC ns of the subscriber's last sign of life
//
// Heartbeat (a dead or stalled subscriber). The active subscriber rewrites the
// entry at least every 250 ms, whatever Redis does (its waits are sliced; the
// longest silence is a reconnection's connect + one command, which
// `heartbeatTimeout` must exceed). A process serves a local hit only while the
// last heartbeat is at most `heartbeatTimeout` old: a SIGKILLed subscriber with
// no standby stops every hit of the machine within `heartbeatTimeout`. Each
// process remembers "trusted until heartbeat + heartbeatTimeout" in an atomic,
// so a hit reads the state entry only when that instant has passed.
//
// Invalidation sequence (a load that read before an invalidation). 64 entries
// "\0shmlru-redis/<name>/seq/<i>" hold 8 random bytes each; key k maps to one
// of them by a stable hash. Every invalidation of k (the subscriber's, for
// another machine's write; a local write's) first rewrites k's entry with new
// random bytes, then removes k. A load reads the entry (and the epoch) before
// it reads Redis, stores its value, then reads them again: if either changed
// (or the heartbeat went stale), it removes what it stored. Whichever order
// the two interleave in, the old value does not stay: either the invalidation's
// remove comes after the store, or the load's second look sees the new bytes.
// No lock is taken: a loader stalled for any time cannot make the subscriber
// give up, and cannot leave its value behind. (What remains: a process killed
// between its store and its second look, two consecutive store calls, leaves
// its copy until the key's next invalidation or expiry.)
//
// An entry that is missing or malformed (evicted, or written by a peer of
// another layout) means "not connected": nothing new is cached.

struct _MachineState: Hashable {
    static let size = 21
    var epoch: UInt64
    var pid: Int32
    var connected: Bool
    var heartbeat: UInt64

    var bytes: [UInt8] {
        var result = [UInt8](repeating: 0, count: Self.size)
        for i in 0..<8 { result[i] = UInt8(truncatingIfNeeded: epoch >> (8 * UInt64(i))) }
        let p = UInt32(bitPattern: pid)
        for i in 0..<4 { result[8 + i] = UInt8(truncatingIfNeeded: p >> (8 * UInt32(i))) }
        result[12] = connected ? 1 : 0
        for i in 0..<8 { result[13 + i] = UInt8(truncatingIfNeeded: heartbeat >> (8 * UInt64(i))) }
        return result
    }

    init(epoch: UInt64, pid: Int32, connected: Bool, heartbeat: UInt64) {
        self.epoch = epoch
        self.pid = pid
        self.connected = connected
        self.heartbeat = heartbeat
    }

    /// Nil unless `bytes` is exactly an entry of this layout.
    init?(_ bytes: [UInt8]) {
        guard bytes.count == Self.size, bytes[12] <= 1 else { return nil }
        var e: UInt64 = 0
        for i in 0..<8 { e |= UInt64(bytes[i]) << (8 * UInt64(i)) }
        var p: UInt32 = 0
        for i in 0..<4 { p |= UInt32(bytes[8 + i]) << (8 * UInt32(i)) }
        var h: UInt64 = 0
        for i in 0..<8 { h |= UInt64(bytes[13 + i]) << (8 * UInt64(i)) }
        epoch = e
        pid = Int32(bitPattern: p)
        connected = bytes[12] == 1
        heartbeat = h
    }

    /// The subscriber showed a sign of life at most `timeout` ns before `now`.
    func isAlive(now: UInt64, timeout: UInt64) -> Bool {
        pid != 0 && heartbeat != 0 && (now <= heartbeat || now - heartbeat < timeout)
    }
}

/// What a load saw before it read Redis: compared again after it stores.
struct _CacheToken: Sendable, Hashable {
    var epoch: UInt64
    var sequence: [UInt8]
}

extension RedisNearCache {
    static let _sequenceBuckets: UInt32 = 64

    func _readState() throws(RedisNearCacheError) -> _MachineState? {
        let bytes = try _local("RedisNearCache.state", { () throws(ShmError) in try store.bytes(_stateKey) })
        return bytes.flatMap { _MachineState($0) }
    }

    var _heartbeatTimeoutNanoseconds: UInt64 { _nanoseconds(configuration.heartbeatTimeout) }

    /// Local copies may be served now: the machine's subscriber beat within
    /// `heartbeatTimeout`. Reads the state entry only when this process's
    /// remembered bound has passed.
    func _trusted(now: UInt64 = _now()) -> Bool {
        if now < _trustedUntil.load(ordering: .relaxed) { return true }
        guard let state = try? _readState(), state.isAlive(now: now, timeout: _heartbeatTimeoutNanoseconds) else { return false }
        _trustedUntil.store(state.heartbeat &+ _heartbeatTimeoutNanoseconds, ordering: .relaxed)
        return true
    }

    /// The last heartbeat (0: none), for stale-if-error when the subscriber died.
    func _lastHeartbeat() -> UInt64 { (try? _readState())?.heartbeat ?? 0 }

    /// The sequence entry of `key`'s bucket.
    func _sequenceKey(_ key: String) -> String {
        // FNV-1a: stable across processes (unlike Hasher).
        var hash: UInt32 = 2_166_136_261
        for byte in key.utf8 { hash = (hash ^ UInt32(byte)) &* 16_777_619 }
        return "\u{0}shmlru-redis/\(configuration.name)/seq/\(hash % Self._sequenceBuckets)"
    }

    /// The token a load takes before reading Redis; nil when nothing may be
    /// cached (no connected, live subscriber).
    func _beginLoad(_ key: String) -> _CacheToken? {
        guard let state = try? _readState(), state.connected,
            state.isAlive(now: _now(), timeout: _heartbeatTimeoutNanoseconds)
        else { return nil }
        let sequenceKey = _sequenceKey(key)
        guard var sequence = (try? store.bytes(sequenceKey)) ?? nil else {
            // Missing (first use, or evicted): create it. A concurrent bump is still seen.
            _ = try? store.add(sequenceKey, bytes: _randomBytes(), expiry: .never)
            guard let created = (try? store.bytes(sequenceKey)) ?? nil else { return nil }
            return _CacheToken(epoch: state.epoch, sequence: created)
        }
        if sequence.isEmpty { sequence = [0] }
        return _CacheToken(epoch: state.epoch, sequence: sequence)
    }

    /// The token still holds: same epoch, connected and alive, the key's sequence unchanged.
    func _stillValid(_ key: String, _ token: _CacheToken) -> Bool {
        guard let state = try? _readState(), state.connected, state.epoch == token.epoch,
            state.isAlive(now: _now(), timeout: _heartbeatTimeoutNanoseconds),
            let sequence = (try? store.bytes(_sequenceKey(key))) ?? nil
        else { return false }
        return sequence == token.sequence
    }

    /// Invalidates `key` on this machine: its sequence first (loads in flight
    /// drop their copies), then its value and its remembered miss.
    func _invalidate(_ key: String) {
        let sequenceKey = _sequenceKey(key)
        // Retried: the bump is what makes a loader in flight drop its copy.
        for _ in 0..<3 { if (try? store.set(sequenceKey, bytes: _randomBytes(), expiry: .never)) != nil { break } }
        _ = try? store.remove(key)
        _ = try? store.remove(_negativeKey(key))
    }

    /// The store's reserved key of a remembered miss (ShmStore+Load.swift).
    func _negativeKey(_ key: String) -> String { "\u{0}neg\u{0}" + key }

    /// Stores what was read from Redis or written there (nil: a remembered miss,
    /// already in the store), with the time Redis has left for it (capped by
    /// the store's max age), if `token` still holds afterwards; otherwise
    /// removes it. Store failures (a value too large for a record, a full store
    /// that refuses) leave the key uncached: the value is still served.
    func _settle(_ key: String, _ value: [UInt8]?, redisMilliseconds: Int64?, token: _CacheToken?) {
        let localKey = key
        guard let token, redisMilliseconds.map({ $0 > 0 || $0 == -1 }) ?? true else {
            _ = try? store.remove(localKey)
            _ = try? store.remove(_negativeKey(key))
            return
        }
        if let value {
            var expiry = ShmStore.Expiry.storeDefault
            if let ms = redisMilliseconds, ms > 0 {
                var duration = Duration.milliseconds(ms)
                if let maxAge = store.configuration.maxAge, maxAge < duration { duration = maxAge }
                expiry = .after(duration)
            }
            do { try store.set(localKey, bytes: value, expiry: expiry) } catch {
                _ = try? store.remove(localKey)
                return
            }
        }
        // An invalidation, a disconnection or a dead subscriber since the token: drop it.
        if !_stillValid(key, token) {
            _ = try? store.remove(localKey)
            _ = try? store.remove(_negativeKey(key))
        }
    }

    /// Records the subscriber's state (subscriber only).
    func _writeState(_ state: _MachineState) throws(RedisNearCacheError) {
        try _local("RedisNearCache.state", { () throws(ShmError) in try store.set(_stateKey, bytes: state.bytes, expiry: .never) })
    }

    /// Removes every key of this cache from the machine's store, remembered
    /// misses included (all entries but the other reserved ones); returns how many.
    @discardableResult
    func _invalidateAll() throws(RedisNearCacheError) -> Int {
        try _local("RedisNearCache.invalidateAll") { () throws(ShmError) -> Int in
            var removed = 0
            for key in try store.keys() where key.utf8.first != 0 || key.hasPrefix("\u{0}neg\u{0}") {
                if try store.remove(key) { removed += 1 }
            }
            return removed
        }
    }
}

func _randomBytes() -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: 8)
    var random = UInt64.random(in: 1...UInt64.max)
    for i in 0..<8 {
        bytes[i] = UInt8(truncatingIfNeeded: random)
        random >>= 8
    }
    return bytes
}
#endif  // Redis
