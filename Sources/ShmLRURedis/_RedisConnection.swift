#if Redis
import CHiredis
import Glibc

// A thin wrapper over one hiredis context (blocking, with timeouts): commands
// as byte arguments (binary safe, through the argv entry points), replies
// copied out of hiredis's reply tree at once. RESP itself is hiredis's job.

/// A Redis reply, copied out of hiredis.
enum _RedisReply: Sendable, Hashable {
    case string([UInt8])
    case status(String)
    case integer(Int64)
    case null
    case error(String)
    case array([_RedisReply])

    /// Copies `reply` (and its elements). Depth is bounded: Redis's replies to
    /// the commands sent here nest at most twice.
    init(_ reply: UnsafePointer<redisReply>, depth: Int = 0) {
        let r = reply.pointee
        func text() -> [UInt8] {
            guard let str = r.str, r.len > 0 else { return [] }
            return Array(UnsafeRawBufferPointer(start: str, count: r.len))
        }
        switch r.type {
        case REDIS_REPLY_STRING: self = .string(text())
        case REDIS_REPLY_STATUS: self = .status(String(decoding: text(), as: UTF8.self))
        case REDIS_REPLY_INTEGER: self = .integer(Int64(r.integer))
        case REDIS_REPLY_ERROR: self = .error(String(decoding: text(), as: UTF8.self))
        case REDIS_REPLY_ARRAY:
            guard depth < 8, let elements = r.element else {
                self = .array([])
                return
            }
            var result: [_RedisReply] = []
            result.reserveCapacity(r.elements)
            for index in 0..<r.elements {
                if let element = elements[index] { result.append(_RedisReply(element, depth: depth + 1)) } else { result.append(.null) }
            }
            self = .array(result)
        default: self = .null
        }
    }
}

/// One connection. Not thread-safe: one thread uses it at a time (the pool, or
/// the subscriber's thread).
final class _RedisConnection: @unchecked Sendable {
    private let context: UnsafeMutablePointer<redisContext>
    let endpoint: String

    private init(context: UnsafeMutablePointer<redisContext>, endpoint: String) {
        self.context = context
        self.endpoint = endpoint
    }

    deinit { redisFree(context) }

    /// Connects, sets `commandTimeout` on every later read and write, then logs
    /// in (AUTH, if a password is given) and SELECTs `database` (if not 0), both
    /// in one round trip.
    static func connect(
        host: String, port: Int, connectTimeout: Duration, commandTimeout: Duration, user: String? = nil, password: String? = nil,
        database: Int = 0, _ operation: @autoclosure () -> String
    ) throws(RedisNearCacheError) -> _RedisConnection {
        let endpoint = "\(host):\(port)"
        guard let context = redisConnectWithTimeout(host, Int32(clamping: port), chiredis_timeval(_milliseconds(connectTimeout))) else {
            throw RedisNearCacheError(.redisUnavailable, operation(), detail: "\(endpoint): hiredis could not allocate a context")
        }
        if chiredis_error(context) != 0 {
            let message = String(cString: chiredis_error_string(context))
            redisFree(context)
            throw RedisNearCacheError(.redisUnavailable, operation(), detail: "\(endpoint): \(message)")
        }
        guard redisSetTimeout(context, chiredis_timeval(_milliseconds(commandTimeout))) == REDIS_OK else {
            redisFree(context)
            throw RedisNearCacheError(.redisUnavailable, operation(), detail: "\(endpoint): cannot set the socket timeout")
        }
        let connection = _RedisConnection(context: context, endpoint: endpoint)
        var login: [[[UInt8]]] = []
        if let password { login.append([Array("AUTH".utf8)] + (user.map { [Array($0.utf8)] } ?? []) + [Array(password.utf8)]) }
        if database != 0 { login.append([Array("SELECT".utf8), Array(String(database).utf8)]) }
        if !login.isEmpty {
            let replies = try connection.pipeline(login, operation())
            var index = 0
            if password != nil {
                if case .error(let message) = replies[index] {
                    throw RedisNearCacheError(
                        .authenticationFailed, operation(), detail: "\(endpoint): AUTH: \(message)", setting: user == nil ? "password" : "user/password")
                }
                index += 1
            }
            if database != 0, case .error(let message) = replies[index] {
                if let denied = _authenticationError(message, operation(), endpoint) { throw denied }
                throw RedisNearCacheError(.invalidConfiguration, operation(), detail: "\(endpoint): SELECT \(database): \(message)", setting: "database")
            }
        }
        return connection
    }

    /// True once an I/O or protocol error made the connection unusable.
    var isBroken: Bool { chiredis_error(context) != 0 }

    /// True once a read or write timed out (`commandTimeout`): the server
    /// accepted the connection but does not answer (hung, or SIGSTOPped).
    private(set) var timedOut = false

    private func failure(_ operation: @autoclosure () -> String) -> RedisNearCacheError {
        let savedErrno = errno
        let message = isBroken ? String(cString: chiredis_error_string(context)) : "no reply"
        if chiredis_error(context) == REDIS_ERR_IO,
            savedErrno == EAGAIN || savedErrno == EWOULDBLOCK || message.contains("temporarily unavailable")
        {
            timedOut = true
        }
        return RedisNearCacheError(.redisUnavailable, operation(), detail: "\(endpoint): \(timedOut ? "no reply within the command timeout" : message)")
    }

    /// Queues `command` in the output buffer (nothing is sent yet).
    func append(_ command: [[UInt8]], _ operation: @autoclosure () -> String) throws(RedisNearCacheError) {
        // One contiguous buffer holds every argument; argv points into it.
        var joined: [UInt8] = []
        joined.reserveCapacity(command.reduce(0) { $0 + $1.count } + 1)
        for argument in command { joined += argument }
        joined.append(0)  // a valid pointer even when every argument is empty
        var lengths = command.map { $0.count }
        let rc = joined.withUnsafeBufferPointer { buffer -> Int32 in
            var offset = 0
            var argv: [UnsafePointer<CChar>?] = []
            argv.reserveCapacity(command.count)
            let base = UnsafeRawPointer(buffer.baseAddress!)
            for argument in command {
                argv.append((base + offset).assumingMemoryBound(to: CChar.self))
                offset += argument.count
            }
            return argv.withUnsafeMutableBufferPointer { pointers in
                lengths.withUnsafeMutableBufferPointer { sizes in
                    redisAppendCommandArgv(context, Int32(command.count), pointers.baseAddress, sizes.baseAddress)
                }
            }
        }
        guard rc == REDIS_OK else { throw failure(operation()) }
    }

    /// Sends the queued commands and reads one reply per command (one round trip).
    func pipeline(_ commands: [[[UInt8]]], _ operation: @autoclosure () -> String) throws(RedisNearCacheError) -> [_RedisReply] {
        for command in commands { try append(command, operation()) }
        var replies: [_RedisReply] = []
        replies.reserveCapacity(commands.count)
        for _ in commands {
            var raw: UnsafeMutableRawPointer? = nil
            guard redisGetReply(context, &raw) == REDIS_OK, let raw else { throw failure(operation()) }
            replies.append(_RedisReply(raw.assumingMemoryBound(to: redisReply.self)))
            freeReplyObject(raw)
        }
        return replies
    }

    /// Writes the output buffer out (blocking, within the command timeout).
    func flush(_ operation: @autoclosure () -> String) throws(RedisNearCacheError) {
        var done: Int32 = 0
        while done == 0 {
            guard redisBufferWrite(context, &done) == REDIS_OK else { throw failure(operation()) }
        }
    }

    /// The next reply the server pushed (pub/sub), waiting at most `wait` for it;
    /// nil if none arrived in time. Throws when the connection is lost.
    func nextReply(waitingUpTo wait: Duration, _ operation: @autoclosure () -> String) throws(RedisNearCacheError) -> _RedisReply? {
        if let reply = try bufferedReply(operation()) { return reply }
        let ready = chiredis_wait_readable(context, Int32(clamping: _milliseconds(wait)))
        if ready < 0 {
            if errno == EINTR { return nil }
            throw RedisNearCacheError(.redisUnavailable, operation(), detail: "\(endpoint): poll failed (errno \(errno))")
        }
        if ready == 0 { return nil }
        guard redisBufferRead(context) == REDIS_OK else { throw failure(operation()) }
        return try bufferedReply(operation())
    }

    private func bufferedReply(_ operation: @autoclosure () -> String) throws(RedisNearCacheError) -> _RedisReply? {
        var raw: UnsafeMutableRawPointer? = nil
        guard redisGetReplyFromReader(context, &raw) == REDIS_OK else { throw failure(operation()) }
        guard let raw else { return nil }
        defer { freeReplyObject(raw) }
        return _RedisReply(raw.assumingMemoryBound(to: redisReply.self))
    }
}

/// The typed error for a Redis error reply that means "log in first" or
/// "wrong credentials"; nil for any other error.
func _authenticationError(_ message: String, _ operation: String, _ endpoint: String) -> RedisNearCacheError? {
    guard message.hasPrefix("NOAUTH") || message.hasPrefix("WRONGPASS") || message.hasPrefix("NOPERM") else { return nil }
    return RedisNearCacheError(.authenticationFailed, operation, detail: "\(endpoint): \(message)", setting: "password")
}

/// Whole milliseconds in `duration` (negative: 0), saturating.
func _milliseconds(_ duration: Duration) -> Int64 {
    let (seconds, attoseconds) = duration.components
    if seconds < 0 { return 0 }
    let (ms, overflow) = seconds.multipliedReportingOverflow(by: 1000)
    if overflow { return Int64.max }
    return ms.addingReportingOverflow(attoseconds / 1_000_000_000_000_000).overflow ? Int64.max : ms + attoseconds / 1_000_000_000_000_000
}

/// CLOCK_MONOTONIC now, in nanoseconds (the store's clock).
func _now() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// Sleeps `duration` (for backoff and polling).
func _sleep(_ duration: Duration) {
    let ms = _milliseconds(duration)
    var request = timespec(tv_sec: Int(ms / 1000), tv_nsec: Int(ms % 1000) * 1_000_000)
    var remaining = timespec()
    while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
}
#endif  // Redis
