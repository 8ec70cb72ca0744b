#if Redis
import ShmLRU

/// Every failure of the Redis near cache: what went wrong (`code`), what was
/// being attempted (`operation`), and, for the machine's store, its `ShmError`.
///
///     do { value = try cache.get("user:42") }
///     catch let error where error.code == .redisUnavailable { … }  // local hits still work
public struct RedisNearCacheError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Code: String, Hashable, Sendable {
        /// Redis cannot be reached: the connection failed, broke, timed out, or is
        /// waiting for its next reconnection attempt (backoff). Local hits are still
        /// served; loads and writes fail with this code until Redis answers again.
        case redisUnavailable
        /// Redis answered with an error, or with a reply of an unexpected shape.
        case redisError
        /// The machine's store failed (see `storeError`): a lock not free in time, a
        /// corrupted segment, a detached store.
        case store
        /// A bad argument (an empty cache name, a non-positive time to live).
        case invalidArgument
    }

    public var code: Code
    public var operation: String
    public var detail: String
    /// The store's error, for `.store`.
    public var storeError: ShmError?

    public init(_ code: Code, _ operation: String, detail: String, storeError: ShmError? = nil) {
        self.code = code
        self.operation = operation
        self.detail = detail
        self.storeError = storeError
    }

    public var description: String { "\(operation): \(code.rawValue): \(detail)" }
}

/// Runs a store operation, wrapping its `ShmError` as `.store`.
@inline(__always)
func _local<R>(_ operation: @autoclosure () -> String, _ body: () throws(ShmError) -> R) throws(RedisNearCacheError) -> R {
    do { return try body() } catch {
        throw RedisNearCacheError(.store, operation(), detail: "\(error)", storeError: error)
    }
}
#endif  // Redis
