#if Redis
import Synchronization

// The connections a near cache's commands (loads and writes) use, and the
// circuit breaker in front of them.
//
// * Idle connections are reused; a broken one is dropped. A reused connection
//   that turns out closed (Redis restarted since it was last used: EOF, reset)
//   is replaced and the command retried once (the commands sent here are safe
//   to repeat). A timed-out one is not retried.
// * The breaker. A failed connect or a command that times out opens it: for the
//   backoff (initialBackoff, doubled at each failure up to maxBackoff) every call
//   fails at once with `.redisUnavailable`, without touching the network. Then
//   the first call is the probe: the others keep failing at once while it runs
//   (at most connectTimeout + commandTimeout); its success closes the breaker,
//   its failure opens it again for the next, doubled backoff.
//   So a Redis that accepts connections and never answers costs one command
//   timeout (per probe), not one per call. Calls already waiting on a connection
//   when Redis hangs each wait out their one timeout (they are in flight).

final class _ConnectionPool: Sendable {
    struct Settings: Sendable {
        var host: String
        var port: Int
        var user: String?
        var password: String?
        var database: Int
        var connectTimeout: Duration
        var commandTimeout: Duration
        var initialBackoff: Duration
        var maxBackoff: Duration
    }

    private struct State {
        var idle: [_RedisConnection] = []
        /// The breaker is open until this instant (monotonic ns); 0: closed.
        var openUntil: UInt64 = 0
        /// A probe is running (the breaker was open and its time came).
        var probing = false
        var backoffNanoseconds: UInt64
        /// Times the breaker opened (for tests and stats).
        var trips = 0
    }

    let settings: Settings
    private let state: Mutex<State>
    /// Idle connections kept at most (the rest are closed when given back).
    private let maxIdle = 16

    init(_ settings: Settings) {
        self.settings = settings
        state = Mutex(State(backoffNanoseconds: _nanoseconds(settings.initialBackoff)))
    }

    /// How many times the breaker has opened.
    var trips: Int { state.withLock { $0.trips } }

    /// Runs `body` on a connection (blocking: call it on a thread of the
    /// near cache's executor, never on Swift's cooperative pool).
    func withConnection<R>(
        _ operation: @autoclosure () -> String, _ body: (_RedisConnection) throws(RedisNearCacheError) -> R
    ) throws(RedisNearCacheError) -> R {
        var (connection, reused) = try checkOut(operation())
        while true {
            do {
                let result = try body(connection)
                checkIn(connection)
                close()
                return result
            } catch {
                if !connection.isBroken {
                    checkIn(connection)  // Redis answered with an error: the connection is fine
                    close()
                    throw error
                }
                if connection.timedOut || !reused {
                    trip()  // a hung Redis, or a fresh connection that broke at once
                    throw error
                }
                do throws(RedisNearCacheError) {
                    (connection, reused) = try checkOut(operation(), fresh: true)
                } catch {
                    throw error
                }
            }
        }
    }

    private func checkOut(_ operation: @autoclosure () -> String, fresh: Bool = false) throws(RedisNearCacheError) -> (_RedisConnection, Bool) {
        let now = _now()
        let claimed: Result<_RedisConnection?, RedisNearCacheError> = state.withLock { state in
            if state.openUntil != 0 {
                if now < state.openUntil || state.probing {
                    let wait = state.openUntil > now ? (state.openUntil - now) / 1_000_000 : 0
                    return .failure(
                        RedisNearCacheError(
                            .redisUnavailable, operation(),
                            detail: "\(settings.host):\(settings.port) is unavailable (circuit breaker open: "
                                + (state.probing ? "a probe is running" : "next probe in \(wait) ms") + ")"))
                }
                state.probing = true  // this call is the probe
                return .success(nil)
            }
            if !fresh, let connection = state.idle.popLast() { return .success(connection) }
            return .success(nil)
        }
        if let connection = try claimed.get() { return (connection, true) }
        do {
            let connection = try _RedisConnection.connect(
                host: settings.host, port: settings.port, connectTimeout: settings.connectTimeout,
                commandTimeout: settings.commandTimeout, user: settings.user, password: settings.password,
                database: settings.database, operation())
            return (connection, false)
        } catch {
            if error.code == .redisUnavailable { trip() } else { state.withLock { $0.probing = false } }
            throw error
        }
    }

    /// Opens the breaker for the current backoff, and doubles the backoff.
    private func trip() {
        state.withLock { state in
            state.openUntil = max(1, _now() &+ state.backoffNanoseconds)
            state.backoffNanoseconds = min(state.backoffNanoseconds &* 2, _nanoseconds(settings.maxBackoff))
            state.probing = false
            state.idle.removeAll()  // they point at the same server
            state.trips += 1
        }
    }

    /// A command succeeded: the breaker closes and the backoff restarts.
    private func close() {
        state.withLock { state in
            guard state.openUntil != 0 || state.probing else { return }
            state.openUntil = 0
            state.probing = false
            state.backoffNanoseconds = _nanoseconds(settings.initialBackoff)
        }
    }

    private func checkIn(_ connection: _RedisConnection) {
        guard !connection.isBroken else { return }
        state.withLock { state in
            if state.idle.count < maxIdle { state.idle.append(connection) }
        }
    }
}

/// Nanoseconds in `duration` (negative: 0), saturating.
func _nanoseconds(_ duration: Duration) -> UInt64 {
    let (seconds, attoseconds) = duration.components
    if seconds < 0 { return 0 }
    let (ns, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
    if overflow { return UInt64.max }
    let (total, overflow2) = ns.addingReportingOverflow(UInt64(attoseconds / 1_000_000_000))
    return overflow2 ? UInt64.max : total
}
#endif  // Redis
