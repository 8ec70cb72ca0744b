#if Vapor
import ShmLRU
import Vapor

// ShmCache: Vapor 4's `Cache` on a `ShmStore`, so that `req.cache` is shared by
// every process of the machine that attaches the store (Vapor's memory cache is
// per process), with `app.caches.use(.shm(store))`.
//
// Design
// ------
// * Cheap handle. Vapor calls the cache factory on every `app.cache` and
//   `req.cache`, then `for(request)`. The factory captures one shared box (the
//   store handle and the key prefix) made when the provider is used, and a
//   `ShmCache` is that box plus an event loop: three words, which fit an
//   existential's inline buffer, so neither the factory nor `for(request)`
//   allocates, attaches or opens anything.
// * Futures. The store's calls are synchronous and short (a lock-free read, or a
//   write under the data segment's lock held for a copy; no per-key lock), so each
//   runs on the caller's thread and returns a future already completed on the
//   cache's event loop (the request's, after `for(request)`).
// * Semantics: those of Vapor's memory cache. `set(key, to: nil)` removes the key;
//   `set` without an expiry stores a value with the store's `maxAge` (none unless
//   the store was created with one); an expiry that is not positive stores a
//   value that has expired by the next read; an expired value reads as nil. A
//   stored value that does not decode as the type asked for fails the future with
//   `ShmError.codingFailed` (Vapor's memory cache, which keeps Swift values,
//   answers nil: a JSON store cannot tell a type apart from one that decodes the same).
// * The application owns the store: it creates or opens it before `use` and
//   removes it (or lets the creating process's exit do so) after shutdown.

/// A Vapor `Cache` whose values live in a `ShmStore`, shared by every process
/// that attaches the store. Install it with `app.caches.use(.shm(store))`.
///
///     let store = try ShmStore.open(key: 0x5EC4, configuration: .init(capacity: 10_000, recordSize: 512))
///     app.caches.use(.shm(store))
///     app.get("visits") { req async throws -> String in
///         let visits = (try await req.cache.get("visits", as: Int.self) ?? 0) + 1
///         try await req.cache.set("visits", to: visits, expiresIn: .minutes(5))
///         return "\(visits)"
///     }
public struct ShmCache: Cache, Sendable {
    /// What every handle of one application shares.
    final class _Shared: Sendable {
        let store: ShmStore
        let keyPrefix: String
        init(store: ShmStore, keyPrefix: String) {
            self.store = store
            self.keyPrefix = keyPrefix
        }
    }

    let _shared: _Shared
    /// The event loop the cache's futures complete on (the request's, after `for(_:)`).
    public let eventLoop: any EventLoop

    /// The store holding the values.
    public var store: ShmStore { _shared.store }
    /// Put before every key in the store (empty: the keys are used as they are).
    public var keyPrefix: String { _shared.keyPrefix }

    /// A cache on `store` whose futures complete on `eventLoop`.
    /// - Parameters:
    ///   - store: the store holding the values; each process passes its own handle.
    ///   - eventLoop: where the returned futures complete.
    ///   - keyPrefix: put before every key in the store, keeping the cache's keys
    ///     apart from the store's other keys (every process must use the same).
    public init(store: ShmStore, on eventLoop: any EventLoop, keyPrefix: String = "") {
        self.init(_Shared(store: store, keyPrefix: keyPrefix), on: eventLoop)
    }

    init(_ shared: _Shared, on eventLoop: any EventLoop) {
        _shared = shared
        self.eventLoop = eventLoop
    }

    /// The value under `key`; nil if it is absent or expired. The future fails with
    /// `ShmError.codingFailed` if the stored value does not decode as `T`.
    public func get<T: Decodable>(_ key: String, as type: T.Type) -> EventLoopFuture<T?> {
        do {
            let value = try store.get(keyPrefix + key, as: T.self)
            return eventLoop.makeSucceededFuture(_Handoff(value: value)).map(\.value)
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
    }

    /// Stores `value` under `key` (the store's `maxAge`, if any, limits its life);
    /// nil removes the key.
    public func set<T: Encodable>(_ key: String, to value: T?) -> EventLoopFuture<Void> {
        set(key, to: value, expiresIn: nil)
    }

    /// Stores `value` under `key` for `expirationTime` (nil: the store's `maxAge`,
    /// if any); nil removes the key. The future fails with the store's error
    /// (`ShmError.valueTooLarge`, …), and nothing is changed then.
    public func set<T: Encodable>(_ key: String, to value: T?, expiresIn expirationTime: CacheExpirationTime?) -> EventLoopFuture<Void> {
        do {
            if let value {
                try store.set(keyPrefix + key, value, expiry: expirationTime.map(Self.expiry) ?? .storeDefault)
            } else {
                try store.remove(keyPrefix + key)
            }
            return eventLoop.makeSucceededVoidFuture()
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
    }

    /// The same cache, its futures completing on the request's event loop (no
    /// allocation: the store handle is shared).
    public func `for`(_ request: Request) -> ShmCache {
        ShmCache(_shared, on: request.eventLoop)
    }

    /// The store's expiry for a Vapor expiration time: one that is not positive
    /// expires at once (the store refuses a zero or negative duration).
    static func expiry(_ time: CacheExpirationTime) -> ShmStore.Expiry {
        time.seconds > 0 ? .after(.seconds(time.seconds)) : .after(.nanoseconds(1))
    }
}

/// A value decoded by one `get`, handed to the future that returns it. `Cache`
/// asks for values that need not be `Sendable`; this one was decoded for this
/// call (or copied from the handle's decoded cache, as every `get` returns it).
struct _Handoff<Value>: @unchecked Sendable {
    let value: Value
}

extension Application.Caches {
    /// A cache on `store` for this application (`app.caches.shm(store)`); prefer
    /// installing it with `use(.shm(store))`, which shares one handle.
    /// - Parameters:
    ///   - store: the store holding the values.
    ///   - keyPrefix: put before every key in the store.
    public func shm(_ store: ShmStore, keyPrefix: String = "") -> ShmCache {
        ShmCache(store: store, on: application.eventLoopGroup.any(), keyPrefix: keyPrefix)
    }
}

extension Application.Caches.Provider {
    /// Makes `app.cache` and `req.cache` a `ShmCache` on `store`:
    /// `app.caches.use(.shm(store))`. Every call of the factory hands out the same
    /// store handle; nothing is attached per request.
    /// - Parameters:
    ///   - store: the store holding the values (the application creates or opens
    ///     it before, and removes it after shutdown).
    ///   - keyPrefix: put before every key in the store.
    public static func shm(_ store: ShmStore, keyPrefix: String = "") -> Self {
        let shared = ShmCache._Shared(store: store, keyPrefix: keyPrefix)
        return .init { application in
            application.caches.use { application in ShmCache(shared, on: application.eventLoopGroup.any()) }
        }
    }
}
#endif
