#if Redis
import Glibc
import ShmLRU
import Synchronization

// The machine's invalidation subscriber. Every process may run one; exactly one
// per machine is active:
//
//   standby ──tryLock("subscriber") every pollInterval──▶ active
//   active: connect ─▶ SUBSCRIBE shmlru:<name> ─▶ new epoch, connected ─▶ invalidate all
//           ─▶ for each message of another origin: lock "load:k", remove "k"
//           connection lost / no PONG: state "not connected" (new epoch), reconnect
//           with backoff (initialBackoff doubling to maxBackoff); each reconnection
//           invalidates the machine's near cache again.
//   stop(): unsubscribes (closes), records "not connected", unlocks.
//
// A process that dies holding the lock is found dead by the store's lock liveness
// check at the next standby's tryLock, which then takes over. The active one also
// checks once a second that the lock is still its own (a repair may have judged
// it dead) and steps down if not.

/// Runs the machine's invalidation subscriber for a `RedisNearCache` on a thread
/// of its own (blocking Redis reads never run on Swift's cooperative pool):
/// `start()` / `stop()`, or `run()` from a task until it is cancelled.
public final class RedisInvalidationSubscriber: Sendable {
    /// What this process's subscriber is doing.
    public enum Role: Sendable, Hashable {
        case stopped
        /// Another process is the machine's subscriber; this one polls to take over.
        case standby
        /// This process is the machine's subscriber; `connected` while subscribed.
        case active(connected: Bool)
    }

    public let cache: RedisNearCache
    /// How often a standby tries to take over.
    public let pollInterval: Duration

    private struct Control {
        var thread: pthread_t?
        var role: Role = .stopped
        /// Invalidations applied by this process's subscriber.
        var invalidations = 0
    }

    private let control = Mutex(Control())
    private let stopRequested = Atomic<Bool>(false)

    public init(cache: RedisNearCache, pollInterval: Duration = .milliseconds(100)) {
        self.cache = cache
        self.pollInterval = pollInterval
    }

    public var role: Role { control.withLock { $0.role } }
    /// How many keys this process's subscriber removed for other machines' writes.
    public var invalidationCount: Int { control.withLock { $0.invalidations } }

    /// Starts the subscriber's thread (no effect if it runs already).
    public func start() throws(RedisNearCacheError) {
        let started: Bool = control.withLock { control in
            if control.thread != nil { return true }
            stopRequested.store(false, ordering: .releasing)
            guard let thread = _startThread({ [self] in _loop() }) else { return false }
            control.thread = thread
            control.role = .standby
            return true
        }
        guard started else {
            throw RedisNearCacheError(.invalidArgument, "RedisInvalidationSubscriber.start", detail: "pthread_create failed")
        }
    }

    /// Stops the subscriber and waits for its thread (at most about `pollInterval`
    /// plus the connect timeout). If it was active, a standby takes over.
    public func stop() {
        stopRequested.store(true, ordering: .releasing)
        let thread: pthread_t? = control.withLock { control in
            defer { control.thread = nil }
            return control.thread
        }
        if let thread { pthread_join(thread, nil) }
        control.withLock { $0.role = .stopped }
    }

    /// Runs the subscriber until the calling task is cancelled (for a service
    /// group or a task of its own).
    public func run() async throws(RedisNearCacheError) {
        try start()
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(3600))
        }
        stop()
    }

    // MARK: The thread

    private var stopping: Bool { stopRequested.load(ordering: .acquiring) }

    private func setRole(_ role: Role) { control.withLock { $0.role = role } }

    /// Sleeps `duration` in slices, returning early when stopped.
    private func pause(_ duration: Duration) {
        let deadline = _now() &+ _nanoseconds(duration)
        while !stopping, _now() < deadline { _sleep(min(.milliseconds(20), duration)) }
    }

    private func _loop() {
        let store = cache.store
        let lockKey = cache._electionLock
        var token: ShmStore.LockToken? = nil
        var backoff = cache.configuration.initialBackoff
        while !stopping {
            if token == nil {
                token = try? store.tryLock(lockKey)
                if token == nil {
                    setRole(.standby)
                    pause(pollInterval)
                    continue
                }
            }
            setRole(.active(connected: false))
            do {
                try _session(onSubscribed: { backoff = cache.configuration.initialBackoff })
            } catch {
                // Connection failed or lost: record "not connected" below, and retry.
            }
            if let held = token, !_stillHolds(held) {
                token = nil  // judged dead and taken over: the state entry is the new holder's
                continue
            }
            _ = try? cache._writeState(pid: getpid(), connected: false)
            setRole(.active(connected: false))
            if stopping { break }
            pause(backoff)
            backoff = min(backoff * 2, cache.configuration.maxBackoff)
        }
        if let token {
            _ = try? cache._writeState(pid: 0, connected: false)
            try? store.unlock(lockKey, token)
        }
        setRole(.stopped)
    }

    /// The lock is still this process's (not judged dead and taken over).
    private func _stillHolds(_ token: ShmStore.LockToken) -> Bool {
        guard let holder = try? cache.store.lockState(token.key).holder else { return true }  // unknown: keep going
        return holder == getpid()
    }

    /// One connection: subscribe, invalidate all, then apply messages until the
    /// connection is lost (throws), the lock is lost or stop is requested (returns).
    private func _session(onSubscribed: () -> Void) throws(RedisNearCacheError) {
        let c = cache.configuration
        let operation = "RedisInvalidationSubscriber(\(cache.channel))"
        let connection = try _RedisConnection.connect(
            host: c.host, port: c.port, connectTimeout: c.connectTimeout, commandTimeout: c.commandTimeout, operation)
        try connection.append([Array("SUBSCRIBE".utf8), Array(cache.channel.utf8)], operation)
        try connection.flush(operation)
        // Wait for the confirmation: from then on no message is missed.
        let deadline = _now() &+ _nanoseconds(c.commandTimeout)
        var confirmed = false
        while !confirmed {
            if stopping { return }
            guard _now() < deadline else { throw RedisNearCacheError(.redisUnavailable, operation, detail: "no SUBSCRIBE confirmation") }
            if let reply = try connection.nextReply(waitingUpTo: .milliseconds(100), operation), _kind(reply) == "subscribe" {
                confirmed = true
            }
        }
        // A new epoch first (loads in flight drop their copies), not yet connected
        // (nothing new is cached while the old copies go), then connected: whoever
        // sees "connected" sees a machine with no copy older than the subscription.
        let epoch = try cache._writeState(pid: getpid(), connected: false)
        try cache._invalidateAll()
        try cache._writeState(pid: getpid(), connected: true, epoch: epoch)
        setRole(.active(connected: true))
        onSubscribed()

        let me = getpid()
        var lastTraffic = _now()
        var lastCheck = _now()
        var pingSent = false
        let second: UInt64 = 1_000_000_000
        while !stopping {
            if let reply = try connection.nextReply(waitingUpTo: .milliseconds(100), operation) {
                lastTraffic = _now()
                pingSent = false
                if _kind(reply) == "message", case .array(let parts) = reply, parts.count == 3, case .string(let payload) = parts[2] {
                    try _apply(payload)
                }
                continue
            }
            let now = _now()
            if !pingSent, now &- lastTraffic >= second {
                try connection.append([Array("PING".utf8)], operation)
                try connection.flush(operation)
                pingSent = true
            } else if pingSent, now &- lastTraffic >= second &+ _nanoseconds(c.commandTimeout) {
                throw RedisNearCacheError(.redisUnavailable, operation, detail: "no reply to PING")
            }
            if now &- lastCheck >= second {
                lastCheck = now
                if let holder = try? cache.store.lockState(cache._electionLock).holder, holder != me { return }
                // The state entry may have been evicted from a full store: put it back.
                if (try? cache._readState()).flatMap({ $0 })?.connected != true { try cache._writeState(pid: me, connected: true) }
            }
        }
    }

    /// Applies one message (origin, NUL, key): removes the key locally, under its
    /// load lock, unless this machine wrote it. Malformed messages are ignored.
    private func _apply(_ payload: [UInt8]) throws(RedisNearCacheError) {
        guard let nul = payload.firstIndex(of: 0) else { return }
        let origin = String(decoding: payload[..<nul], as: UTF8.self)
        if origin == cache.origin { return }
        let key = String(decoding: payload[(nul + 1)...], as: UTF8.self)
        let store = cache.store
        let localKey = key
        let lockKey = cache._loadLock(key)
        let token = try? store.blockingLock(lockKey, timeout: cache.configuration.lockTimeout)
        defer { if let token { try? store.unlock(lockKey, token) } }
        _ = try _local("RedisInvalidationSubscriber.invalidate(\"\(key)\")", { () throws(ShmError) in try store.remove(localKey) })
        control.withLock { $0.invalidations += 1 }
    }

    private func _kind(_ reply: _RedisReply) -> String? {
        guard case .array(let parts) = reply, let first = parts.first, case .string(let kind) = first else { return nil }
        return String(decoding: kind, as: UTF8.self)
    }
}
#endif  // Redis
