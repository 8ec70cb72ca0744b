#if Redis
import Glibc
import ServiceLifecycle
import ShmLRU
import Synchronization

// The machine's invalidation subscriber. Every process may run one; exactly one
// per machine is active:
//
//   standby ──tryLock("subscriber") every pollInterval──▶ active
//   active: connect ─▶ SUBSCRIBE shmlru:<name> ─▶ new epoch, connected ─▶ invalidate all
//           ─▶ for each message of another origin: bump k's invalidation sequence, remove "k"
//           connection lost / no PONG: state "not connected" (new epoch), reconnect
//           with backoff (initialBackoff doubling to maxBackoff); each reconnection
//           invalidates the machine's near cache again.
//   stop(): unsubscribes (closes), records "not connected", unlocks.
//
// The active one writes a heartbeat into the state entry at least every 250 ms
// whatever it waits for (its waits are sliced; a connection attempt is the
// longest silence): readers stop serving local copies once it is older than
// `heartbeatTimeout` (RedisNearCache+MachineState.swift).
//
// As a ServiceLifecycle `Service`, `run()` starts it and returns on graceful
// shutdown or cancellation, after the thread stopped (waited for without
// blocking a thread of Swift's pool).
//
// A process that dies holding the lock is found dead by the store's lock liveness
// check at the next standby's tryLock, which then takes over. The active one also
// checks once a second that the lock is still its own (a repair may have judged
// it dead) and steps down if not.

/// Runs the machine's invalidation subscriber for a `RedisNearCache` on a thread
/// of its own (blocking Redis reads never run on Swift's cooperative pool):
/// `start()` / `stop()`, or `run()` as a ServiceLifecycle `Service` (it stops
/// on graceful shutdown or when its task is cancelled).
///
///     let group = ServiceGroup(services: [RedisInvalidationSubscriber(cache: cache), httpServer],
///                              gracefulShutdownSignals: [.sigterm], logger: logger)
///     try await group.run()
public final class RedisInvalidationSubscriber: Service, Sendable {
    /// What this process's subscriber is doing.
    public enum Role: Sendable, Hashable {
        /// Not started, or stopped.
        case stopped
        /// Another process is the machine's subscriber; this one polls to take over.
        case standby
        /// This process is the machine's subscriber; `connected` while subscribed.
        case active(connected: Bool)
    }

    /// The near cache whose machine this subscriber keeps up to date.
    public let cache: RedisNearCache
    /// How often a standby tries to take over.
    public let pollInterval: Duration

    private struct Control {
        var thread: pthread_t?
        /// The thread has returned (join does not block).
        var finished = false
        var role: Role = .stopped
        /// Invalidations applied by this process's subscriber.
        var invalidations = 0
    }

    private let control = Mutex(Control())
    private let stopRequested = Atomic<Bool>(false)

    /// A subscriber for `cache` (not started).
    public init(cache: RedisNearCache, pollInterval: Duration = .milliseconds(100)) {
        self.cache = cache
        self.pollInterval = pollInterval
    }

    /// What this process's subscriber is doing now.
    public var role: Role { control.withLock { $0.role } }
    /// How many keys this process's subscriber removed for other machines' writes.
    public var invalidationCount: Int { control.withLock { $0.invalidations } }

    /// Starts the subscriber's thread (no effect if it runs already).
    public func start() throws(RedisNearCacheError) {
        let started: Bool = control.withLock { control in
            if control.thread != nil { return true }
            stopRequested.store(false, ordering: .releasing)
            // The state the thread starts from is written before it starts (its
            // first role change may come before this lock is released).
            control.finished = false
            control.role = .standby
            guard let thread = _startThread({ [self] in
                _loop()
                self.control.withLock { $0.finished = true }
            }) else {
                control.role = .stopped
                return false
            }
            control.thread = thread
            return true
        }
        guard started else {
            throw RedisNearCacheError(.invalidArgument, "RedisInvalidationSubscriber.start", detail: "pthread_create failed")
        }
    }

    /// Stops the subscriber and waits for its thread (at most about `pollInterval`
    /// plus the connect timeout). If it was active, a standby takes over.
    /// Blocking: from async code, cancel `run()` instead.
    @available(*, noasync, message: "blocks while the thread stops: cancel run(), or trigger a graceful shutdown")
    public func stop() {
        stopRequested.store(true, ordering: .releasing)
        let thread: pthread_t? = control.withLock { control in
            defer { control.thread = nil }
            return control.thread
        }
        if let thread { pthread_join(thread, nil) }
        control.withLock { $0.role = .stopped }
    }

    /// Runs the subscriber until graceful shutdown (ServiceLifecycle) or until
    /// the calling task is cancelled, then stops it and returns once its thread
    /// has ended; waits without blocking a thread of Swift's pool.
    ///
    /// - Throws: `RedisNearCacheError.invalidArgument` if its thread cannot start.
    public func run() async throws {
        try start()
        await withGracefulShutdownHandler {
            while !Task.isCancelled, !stopping { try? await Task.sleep(for: .milliseconds(50)) }
        } onGracefulShutdown: { [self] in
            stopRequested.store(true, ordering: .releasing)
        }
        stopRequested.store(true, ordering: .releasing)
        // The thread notices within a slice of its waits (≤ 100 ms, or a connect).
        while control.withLock({ $0.thread != nil && !$0.finished }) { try? await Task.sleep(for: .milliseconds(10)) }
        let thread: pthread_t? = control.withLock { control in
            defer { control.thread = nil }
            return control.thread
        }
        if let thread { pthread_join(thread, nil) }  // it has returned: no wait
        control.withLock { $0.role = .stopped }
    }

    // MARK: The thread

    private var stopping: Bool { stopRequested.load(ordering: .acquiring) }

    private func setRole(_ role: Role) { control.withLock { $0.role = role } }

    /// The state this (active) subscriber last wrote; the heartbeat's schedule.
    private final class Beat: @unchecked Sendable {
        var state = _MachineState(epoch: 0, pid: 0, connected: false, heartbeat: 0)
        var active = false
        var lastWrite: UInt64 = 0
    }

    /// Writes the state with a new heartbeat if 200 ms passed since the last write
    /// (or `force`). Failures are ignored: the next beat retries.
    private func _beat(_ beat: Beat, force: Bool = false) {
        guard beat.active else { return }
        let now = _now()
        guard force || now &- beat.lastWrite >= 200_000_000 else { return }
        beat.state.heartbeat = now
        beat.lastWrite = now
        try? cache._writeState(beat.state)
    }

    /// Records a new state (and heartbeat) at once.
    private func _record(_ beat: Beat, connected: Bool, newEpoch: Bool) {
        if newEpoch { beat.state.epoch = UInt64.random(in: 1...UInt64.max) }
        beat.state.pid = getpid()
        beat.state.connected = connected
        _beat(beat, force: true)
    }

    /// Sleeps `duration` in slices, returning early when stopped; beats.
    private func pause(_ duration: Duration, _ beat: Beat) {
        let deadline = _now() &+ _nanoseconds(duration)
        while !stopping, _now() < deadline {
            _beat(beat)
            _sleep(min(.milliseconds(20), duration))
        }
    }

    private func _loop() {
        let store = cache.store
        let lockKey = cache._electionLock
        var token: ShmStore.LockToken? = nil
        var backoff = cache.configuration.initialBackoff
        let beat = Beat()
        while !stopping {
            if token == nil {
                token = try? store.tryLock(lockKey)
                if token == nil {
                    setRole(.standby)
                    pause(pollInterval, beat)
                    continue
                }
                beat.active = true
                _record(beat, connected: false, newEpoch: true)
            }
            setRole(.active(connected: false))
            do {
                try _session(beat, onSubscribed: { backoff = cache.configuration.initialBackoff })
            } catch {
                // Connection failed or lost: record "not connected" below, and retry.
            }
            if let held = token, !_stillHolds(held) {
                token = nil  // judged dead and taken over: the state entry is the new holder's
                beat.active = false
                continue
            }
            _record(beat, connected: false, newEpoch: true)
            setRole(.active(connected: false))
            if stopping { break }
            pause(backoff, beat)
            backoff = min(backoff * 2, cache.configuration.maxBackoff)
        }
        if let token {
            beat.state.pid = 0
            beat.state.connected = false
            beat.state.heartbeat = 0
            try? cache._writeState(beat.state)
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
    private func _session(_ beat: Beat, onSubscribed: () -> Void) throws(RedisNearCacheError) {
        let c = cache.configuration
        let operation = "RedisInvalidationSubscriber(\(cache.channel))"
        _beat(beat, force: true)
        let connection = try _RedisConnection.connect(
            host: c.host, port: c.port, connectTimeout: c.connectTimeout, commandTimeout: c.commandTimeout, user: c.user,
            password: c.password, database: c.database, operation)
        _beat(beat, force: true)
        try connection.append([Array("SUBSCRIBE".utf8), Array(cache.channel.utf8)], operation)
        try connection.flush(operation)
        // Wait for the confirmation: from then on no message is missed.
        let deadline = _now() &+ _nanoseconds(c.commandTimeout)
        var confirmed = false
        while !confirmed {
            if stopping { return }
            _beat(beat)
            guard _now() < deadline else { throw RedisNearCacheError(.redisUnavailable, operation, detail: "no SUBSCRIBE confirmation") }
            if let reply = try connection.nextReply(waitingUpTo: .milliseconds(100), operation), _kind(reply) == "subscribe" {
                confirmed = true
            }
        }
        // A new epoch first (loads in flight drop their copies), not yet connected
        // (nothing new is cached while the old copies go), then connected: whoever
        // sees "connected" sees a machine with no copy older than the subscription.
        _record(beat, connected: false, newEpoch: true)
        try cache._invalidateAll()
        _record(beat, connected: true, newEpoch: false)
        setRole(.active(connected: true))
        onSubscribed()

        let me = getpid()
        var lastTraffic = _now()
        var lastCheck = _now()
        var pingSent = false
        let second: UInt64 = 1_000_000_000
        while !stopping {
            _beat(beat)
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
                // (The heartbeat rewrites the state entry, should a full store have evicted it.)
            }
        }
    }

    /// Applies one message (origin, NUL, key): invalidates the key locally
    /// (its sequence, then its value) unless this machine wrote it. Takes no
    /// lock: no loader, however stalled, makes it give up. Malformed messages
    /// are ignored.
    private func _apply(_ payload: [UInt8]) throws(RedisNearCacheError) {
        guard let nul = payload.firstIndex(of: 0) else { return }
        let origin = String(decoding: payload[..<nul], as: UTF8.self)
        if origin == cache.origin { return }
        let key = String(decoding: payload[(nul + 1)...], as: UTF8.self)
        cache._invalidate(key)
        control.withLock { $0.invalidations += 1 }
    }

    private func _kind(_ reply: _RedisReply) -> String? {
        guard case .array(let parts) = reply, let first = parts.first, case .string(let kind) = first else { return nil }
        return String(decoding: kind, as: UTF8.self)
    }
}
#endif  // Redis
