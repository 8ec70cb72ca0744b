#if Redis
import ShmLRU

/// Every failure of the Redis near cache: what went wrong (`code`), what was
/// being attempted (`operation`), the configuration setting at fault (`setting`,
/// for a bad password, database or URL), and, for the machine's store, its `ShmError`.
///
///     do { value = try await cache.get("user:42") }
///     catch let error where error.code == .redisUnavailable { … }  // local hits still work
public struct RedisNearCacheError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The kind of failure.
    public enum Code: String, Hashable, Sendable {
        /// Redis cannot be reached: the connection failed, broke, or timed out, or
        /// the circuit breaker is open after such a failure (calls then fail at
        /// once until the next probe, see `RedisNearCache.Configuration.initialBackoff`).
        /// Local hits are still served; loads and writes fail with this code until
        /// Redis answers again.
        case redisUnavailable
        /// Redis answered with an error, or with a reply of an unexpected shape.
        case redisError
        /// Redis refused the credentials (`setting` is "password" or "user"):
        /// a wrong password, an unknown user, or a password the server requires
        /// and the configuration does not give.
        case authenticationFailed
        /// A setting is invalid (`setting` names it): a malformed URL, a port out
        /// of range, a database the server does not have, a non-positive timeout.
        case invalidConfiguration
        /// Another process (on this machine or another) held the key's load lock
        /// longer than `lockTimeout`: its loader is slow, hung, or died.
        case lockTimeout
        /// The machine's store failed (see `storeError`): a corrupted segment, a
        /// detached store, a value that cannot be decoded.
        case store
        /// A bad argument (a key starting with NUL, a non-positive time to live).
        case invalidArgument
    }

    /// What went wrong.
    public var code: Code
    /// The call that failed, with its key.
    public var operation: String
    /// Details: Redis's own message, the endpoint, the bad input.
    public var detail: String
    /// The configuration setting at fault, for `.authenticationFailed` and
    /// `.invalidConfiguration` ("password", "user", "database", "url", "port", …).
    public var setting: String?
    /// The store's error, for `.store`.
    public var storeError: ShmError?

    /// An error of `code`, raised by `operation`.
    public init(_ code: Code, _ operation: String, detail: String, setting: String? = nil, storeError: ShmError? = nil) {
        self.code = code
        self.operation = operation
        self.detail = detail
        self.setting = setting
        self.storeError = storeError
    }

    /// "operation: code (setting): detail".
    public var description: String {
        "\(operation): \(code.rawValue)\(setting.map { " (setting \($0))" } ?? ""): \(detail)"
    }
}

/// Runs a store operation, wrapping its `ShmError` as `.store`.
@inline(__always)
func _local<R>(_ operation: @autoclosure () -> String, _ body: () throws(ShmError) -> R) throws(RedisNearCacheError) -> R {
    do { return try body() } catch {
        throw RedisNearCacheError(.store, operation(), detail: "\(error)", storeError: error)
    }
}

/// Wraps any error of the store's get-or-load as a `RedisNearCacheError`
/// (a `RedisNearCacheError` passes through; a `ShmError` becomes `.store`;
/// `.lockTimeout` of the store becomes `.lockTimeout`).
func _wrap(_ error: any Error, _ operation: String) -> RedisNearCacheError {
    if let error = error as? RedisNearCacheError { return error }
    if let error = error as? ShmError {
        if error.code == .lockTimeout { return RedisNearCacheError(.lockTimeout, operation, detail: "\(error)", storeError: error) }
        return RedisNearCacheError(.store, operation, detail: "\(error)", storeError: error)
    }
    return RedisNearCacheError(.store, operation, detail: "\(error)")
}
#endif  // Redis
