#if Redis
// The near cache's settings: where Redis is (host and port, or a redis:// URL),
// how to log in (AUTH with an optional user, SELECT of a database), its
// timeouts, and the freshness bounds of the machine's copies. `validate()` is
// what `RedisNearCache.init` checks: a bad setting is a typed error naming it,
// before anything connects.
//
// TLS (rediss://) is not supported: Debian 12's hiredis 0.14 has no TLS (that
// came with hiredis 1.0's hiredis_ssl); a rediss:// URL is refused, typed.

extension RedisNearCache {
    /// Where Redis is, how to log in, and the near cache's timeouts and bounds.
    public struct Configuration: Sendable, Hashable {
        /// The cache's name, the same on every machine: Redis keys are "name:key",
        /// invalidations go to the channel "shmlru:name".
        public var name: String
        /// Redis's host name or IP address.
        public var host: String
        /// Redis's TCP port (1–65535).
        public var port: Int
        /// The ACL user for AUTH (Redis 6 and later); nil: the default user.
        public var user: String?
        /// The password for AUTH; nil: no AUTH.
        public var password: String?
        /// The database number SELECTed on every connection (0: the default).
        public var database: Int
        /// The longest a connection attempt waits.
        public var connectTimeout: Duration
        /// The longest a command (or a pipeline of them) waits for its reply. A
        /// command that times out opens the circuit breaker: later calls fail at
        /// once with `.redisUnavailable` until a probe succeeds.
        public var commandTimeout: Duration
        /// The first delay after a failed connection or a timed-out command,
        /// before one call probes Redis again; doubled at each failure up to `maxBackoff`.
        public var initialBackoff: Duration
        /// The longest delay between two probes of an unavailable Redis.
        public var maxBackoff: Duration
        /// The longest a byte load or a write waits for the key's load lock on
        /// this machine, and the longest `get(_:as:timeToLive:orLoad:)` waits for
        /// another machine's loader (its Redis lock); then `.lockTimeout`, or the
        /// store's stale value. (Codable loads wait for one another on this
        /// machine through the store's get-or-load, bounded by the store's own
        /// `lockTimeout`, also reported as `.lockTimeout`.)
        public var lockTimeout: Duration
        /// The expiry of the Redis lock a loader holds while it runs: a loader
        /// that crashed blocks the others' loads of the key at most this long.
        public var loadLockTimeToLive: Duration
        /// How long after the machine's subscriber's last heartbeat its
        /// processes still serve cached values: a subscriber that dies (or
        /// stalls) stops local hits within this bound. At least
        /// `connectTimeout + commandTimeout + 500 ms` (the longest a live
        /// subscriber may go without a heartbeat while it reconnects).
        public var heartbeatTimeout: Duration
        /// Refresh ahead: a value that `get(_:as:timeToLive:orLoad:)` reads with
        /// at most this much of its life left is reloaded once per machine in
        /// the background while the old one is served. Nil: off.
        public var refreshAhead: Duration?
        /// The threads of this process that run its Redis commands (a call's
        /// task waits for them without holding a thread of Swift's pool).
        public var ioThreads: Int
        /// Names this machine in the messages it publishes (its own writes are not
        /// invalidated by its subscriber): unique to the machine's store. Default:
        /// the host name, the kernel's boot id and the store's key.
        public var origin: String?

        /// The settings, field by field.
        public init(
            name: String, host: String = "127.0.0.1", port: Int = 6379, user: String? = nil, password: String? = nil,
            database: Int = 0, connectTimeout: Duration = .seconds(1), commandTimeout: Duration = .seconds(1),
            initialBackoff: Duration = .milliseconds(50), maxBackoff: Duration = .seconds(1), lockTimeout: Duration = .seconds(5),
            loadLockTimeToLive: Duration = .seconds(5), heartbeatTimeout: Duration = .seconds(3), refreshAhead: Duration? = nil,
            ioThreads: Int = 4, origin: String? = nil
        ) {
            self.name = name
            self.host = host
            self.port = port
            self.user = user
            self.password = password
            self.database = database
            self.connectTimeout = connectTimeout
            self.commandTimeout = commandTimeout
            self.initialBackoff = initialBackoff
            self.maxBackoff = maxBackoff
            self.lockTimeout = lockTimeout
            self.loadLockTimeToLive = loadLockTimeToLive
            self.heartbeatTimeout = heartbeatTimeout
            self.refreshAhead = refreshAhead
            self.ioThreads = ioThreads
            self.origin = origin
        }

        /// The settings of a `redis://[user:password@]host[:port][/db]` URL (user
        /// and password percent-decoded; port 6379 and database 0 by default;
        /// an IPv6 host in brackets), the others at their defaults.
        ///
        ///     let c = try RedisNearCache.Configuration(name: "users", url: "redis://app:s3cret@cache.internal:6380/2")
        ///
        /// - Throws: `.invalidConfiguration` with `setting` "url" for anything else
        ///   (another scheme, rediss:// included: TLS is unsupported; an empty host;
        ///   a port or database that is not a number in range; a query or fragment).
        public init(name: String, url: String) throws(RedisNearCacheError) {
            let parsed = try _RedisURL(url)
            self.init(name: name, host: parsed.host, port: parsed.port, user: parsed.user, password: parsed.password, database: parsed.database)
        }

        /// Checks every setting: the first bad one is thrown as
        /// `.invalidConfiguration` naming it. `RedisNearCache.init` calls this.
        public func validate() throws(RedisNearCacheError) {
            func bad(_ setting: String, _ detail: String) -> RedisNearCacheError {
                RedisNearCacheError(.invalidConfiguration, "RedisNearCache.Configuration", detail: detail, setting: setting)
            }
            if name.isEmpty || name.utf8.contains(0) { throw bad("name", "the cache name must be non-empty, without NUL") }
            if host.isEmpty || host.utf8.contains(0) { throw bad("host", "the host must be non-empty, without NUL") }
            if !(1...65535).contains(port) { throw bad("port", "\(port) is not a TCP port (1–65535)") }
            if database < 0 { throw bad("database", "\(database) is negative") }
            if let user, user.isEmpty { throw bad("user", "an empty user name (leave it nil for the default user)") }
            if user != nil, password == nil { throw bad("password", "a user needs a password") }
            let positive: [(String, Duration)] = [
                ("connectTimeout", connectTimeout), ("commandTimeout", commandTimeout), ("initialBackoff", initialBackoff),
                ("maxBackoff", maxBackoff), ("lockTimeout", lockTimeout), ("loadLockTimeToLive", loadLockTimeToLive),
                ("heartbeatTimeout", heartbeatTimeout),
            ]
            for (setting, value) in positive where _milliseconds(value) < 1 { throw bad(setting, "must be at least 1 ms") }
            if let refreshAhead, _milliseconds(refreshAhead) < 1 { throw bad("refreshAhead", "must be at least 1 ms (or nil: off)") }
            if maxBackoff < initialBackoff { throw bad("maxBackoff", "is less than initialBackoff") }
            if heartbeatTimeout < connectTimeout + commandTimeout + .milliseconds(500) {
                throw bad("heartbeatTimeout", "must be at least connectTimeout + commandTimeout + 500 ms (a reconnecting subscriber's longest silence)")
            }
            if !(1...64).contains(ioThreads) { throw bad("ioThreads", "\(ioThreads) is not in 1…64") }
        }
    }
}

/// A parsed redis:// URL.
struct _RedisURL: Hashable {
    var host: String
    var port = 6379
    var user: String?
    var password: String?
    var database = 0

    init(_ url: String) throws(RedisNearCacheError) {
        func bad(_ detail: String) -> RedisNearCacheError {
            RedisNearCacheError(.invalidConfiguration, "RedisNearCache.Configuration(url:)", detail: detail, setting: "url")
        }
        let lower = url.lowercased()
        if lower.hasPrefix("rediss://") { throw bad("rediss:// (TLS) is not supported: Debian 12's hiredis 0.14 has no TLS") }
        guard lower.hasPrefix("redis://") else { throw bad("\"\(url)\" does not start with redis://") }
        var rest = Substring(url.dropFirst("redis://".count))
        if rest.contains("?") || rest.contains("#") { throw bad("a query or fragment is not supported") }
        // Path: /db
        var path: Substring? = nil
        if let slash = rest.firstIndex(of: "/") {
            path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
        }
        // Userinfo: the last "@" (a password may hold "@" only percent-encoded, but be lenient).
        if let at = rest.lastIndex(of: "@") {
            let userinfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            let userPart: Substring
            let passwordPart: Substring?
            if let colon = userinfo.firstIndex(of: ":") {
                userPart = userinfo[..<colon]
                passwordPart = userinfo[userinfo.index(after: colon)...]
            } else {
                userPart = userinfo  // redis://password@host is ambiguous: take it as a user, which needs a password
                passwordPart = nil
            }
            guard let decodedUser = _percentDecoded(userPart) else { throw bad("the user has a bad %-escape") }
            user = decodedUser.isEmpty ? nil : decodedUser
            if let passwordPart {
                guard let decoded = _percentDecoded(passwordPart) else { throw bad("the password has a bad %-escape") }
                guard !decoded.isEmpty else { throw bad("an empty password after ':'") }
                password = decoded
            }
            if user != nil, password == nil { throw bad("a user without a password (write redis://user:password@host)") }
        }
        // Host and port: [v6]:port, host:port, host.
        var hostPart = rest
        var portPart: Substring? = nil
        if hostPart.hasPrefix("[") {
            guard let close = hostPart.firstIndex(of: "]") else { throw bad("an IPv6 host without ']'") }
            let after = hostPart[hostPart.index(after: close)...]
            hostPart = hostPart[hostPart.index(after: hostPart.startIndex)..<close]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw bad("junk after the IPv6 host: \"\(after)\"") }
                portPart = after.dropFirst()
            }
        } else if let colon = hostPart.lastIndex(of: ":") {
            portPart = hostPart[hostPart.index(after: colon)...]
            hostPart = hostPart[..<colon]
            if hostPart.contains(":") { throw bad("an IPv6 host must be in brackets") }
        }
        guard !hostPart.isEmpty else { throw bad("no host") }
        host = String(hostPart)
        if let portPart {
            guard !portPart.isEmpty, portPart.allSatisfy(\.isASCII), portPart.allSatisfy(\.isNumber), portPart.count <= 5,
                let number = Int(portPart), (1...65535).contains(number)
            else { throw bad("the port \"\(portPart)\" is not a number in 1–65535") }
            port = number
        }
        if let path, !path.isEmpty {
            guard path.allSatisfy(\.isASCII), path.allSatisfy(\.isNumber), path.count <= 9, let number = Int(path) else {
                throw bad("the database \"\(path)\" is not a number")
            }
            database = number
        }
    }
}

/// `text` with its %XX escapes decoded; nil for a malformed escape or invalid UTF-8.
func _percentDecoded(_ text: Substring) -> String? {
    var bytes: [UInt8] = []
    var iterator = Array(text.utf8).makeIterator()
    func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
    while let c = iterator.next() {
        if c == UInt8(ascii: "%") {
            guard let h = iterator.next().flatMap(hex), let l = iterator.next().flatMap(hex) else { return nil }
            bytes.append(h << 4 | l)
        } else {
            bytes.append(c)
        }
    }
    return String(validating: bytes, as: UTF8.self)
}
#endif  // Redis
