#if Redis
import Synchronization

// The connections a near cache's commands (loads and writes) use: idle ones are
// reused, a broken one is dropped, and a failed connect delays the next attempt
// (exponential backoff), so while Redis is down calls fail at once with
// `.redisUnavailable` instead of each waiting out a connect timeout.

final class _ConnectionPool: Sendable {
    struct Settings: Sendable {
        var host: String
        var port: Int
        var connectTimeout: Duration
        var commandTimeout: Duration
        var initialBackoff: Duration
        var maxBackoff: Duration
    }

    private struct State {
        var idle: [_RedisConnection] = []
        /// No connect attempt before this instant (monotonic ns); 0: none pending.
        var retryAt: UInt64 = 0
        var backoffNanoseconds: UInt64
    }

    let settings: Settings
    private let state: Mutex<State>
    /// Idle connections kept at most (the rest are closed when given back).
    private let maxIdle = 16

    init(_ settings: Settings) {
        self.settings = settings
        state = Mutex(State(backoffNanoseconds: _nanoseconds(settings.initialBackoff)))
    }

    /// Runs `body` on a connection. A reused connection that turns out broken
    /// (Redis restarted since it was last used) is replaced and `body` retried
    /// once: the commands sent here are safe to repeat.
    func withConnection<R>(
        _ operation: @autoclosure () -> String, _ body: (_RedisConnection) throws(RedisNearCacheError) -> R
    ) throws(RedisNearCacheError) -> R {
        var (connection, reused) = try checkOut(operation())
        while true {
            do {
                let result = try body(connection)
                checkIn(connection)
                return result
            } catch {
                if !connection.isBroken {
                    checkIn(connection)  // Redis answered with an error: the connection is fine
                    throw error
                }
                guard reused else { throw error }
                (connection, reused) = try checkOut(operation(), fresh: true)
            }
        }
    }

    private func checkOut(_ operation: @autoclosure () -> String, fresh: Bool = false) throws(RedisNearCacheError) -> (_RedisConnection, Bool) {
        let now = _now()
        if !fresh, let connection = state.withLock({ $0.idle.popLast() }) { return (connection, true) }
        if let retryAt = state.withLock({ $0.retryAt > now ? $0.retryAt : nil }) {
            throw RedisNearCacheError(
                .redisUnavailable, operation(),
                detail: "\(settings.host):\(settings.port) is down; next connection attempt in \((retryAt - now) / 1_000_000) ms")
        }
        do {
            let connection = try _RedisConnection.connect(
                host: settings.host, port: settings.port, connectTimeout: settings.connectTimeout,
                commandTimeout: settings.commandTimeout, operation())
            state.withLock { state in
                state.retryAt = 0
                state.backoffNanoseconds = _nanoseconds(settings.initialBackoff)
            }
            return (connection, false)
        } catch {
            state.withLock { state in
                let after = _now()
                state.retryAt = after &+ state.backoffNanoseconds
                state.backoffNanoseconds = min(state.backoffNanoseconds &* 2, _nanoseconds(settings.maxBackoff))
                state.idle.removeAll()  // they point at the same dead server
            }
            throw error
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
