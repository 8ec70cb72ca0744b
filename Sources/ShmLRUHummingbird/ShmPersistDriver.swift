#if Hummingbird
import Hummingbird
import ShmLRU

// ShmPersistDriver: Hummingbird 2's `PersistDriver` on a `ShmStore`, so that the
// persisted key/value pairs are shared by every worker process of the machine
// (Hummingbird's MemoryPersistDriver is per process).
//
// Design
// ------
// * Semantics: those of Hummingbird's MemoryPersistDriver and its persist tests.
//   `create` is the store's `add` (insert if absent, under the data lock: two
//   processes creating the same key at once, one gets `PersistError.duplicate`);
//   `set(expires: nil)` is a set with `Expiry.keepCurrent` (an existing entry
//   keeps its expiry); `get` of a type the stored value does not decode as throws
//   `PersistError.invalidConversion`; an expired entry reads as nil; `getWithTTL`
//   reads the value and its time left from the same version of the entry
//   (`ShmStore.getWithTimeToLive`); `remove`.
// * Where it differs from MemoryPersistDriver, on purpose (as Hummingbird's
//   Valkey driver does): an expired entry is absent for `create` too (the memory
//   driver says `duplicate` until its tidy task runs), and a `set(expires: nil)`
//   over an expired entry stores a value that does not expire (the memory driver
//   keeps the past expiry: the new value is expired at once). Expired entries are
//   reclaimed by the store when met, so no tidy task runs: `run()` is the
//   protocol's (it waits for graceful shutdown).
// * Values are JSON (the store's codec). "Converts" means "decodes as": an Int
//   read as a Double succeeds, a String read as an Int throws.
// * A duration that is not positive stores a value that has expired by the next
//   read (the memory driver's `expires: .zero`); the store itself refuses one.
// * Blocking: every call is one store operation, a lock-free read or a write
//   under the data segment's lock held for a copy; no per-key lock is taken, so
//   nothing waits on another process's request. The driver does not own the
//   store: `shutdown()` does nothing, and whoever created the store removes it.

/// A Hummingbird `PersistDriver` whose values live in a `ShmStore`: every process
/// that attaches the store sees the same key/value pairs and expiries.
///
///     let store = try ShmStore.open(key: 0x5E55, configuration: .init(capacity: 10_000, recordSize: 512))
///     let persist = ShmPersistDriver(store: store, keyPrefix: "session:")
///     router.put("/session/:id") { request, context -> HTTPResponse.Status in
///         let body = try await request.body.collect(upTo: 4096)
///         try await persist.set(key: try context.parameters.require("id"), value: String(buffer: body), expires: .seconds(3600))
///         return .ok
///     }
public struct ShmPersistDriver: PersistDriver {
    /// The store holding the values (shared with other processes and other uses).
    public let store: ShmStore
    /// Put before every key in the store: keeps the driver's keys apart from the
    /// store's other keys (empty: the keys are used as they are).
    public let keyPrefix: String

    /// A driver on `store`. It neither creates nor removes the store.
    /// - Parameters:
    ///   - store: the store holding the values; each process passes its own handle.
    ///   - keyPrefix: put before every key in the store (every process of an
    ///     application must use the same).
    public init(store: ShmStore, keyPrefix: String = "") {
        self.store = store
        self.keyPrefix = keyPrefix
    }

    /// Stores `value` under `key` if the key holds no live value.
    /// - Parameters:
    ///   - key: the key (after the driver's `keyPrefix`).
    ///   - value: the value, encoded with the store's codec.
    ///   - expires: the value's time to live; nil: the store's `maxAge`
    ///     (none unless the store was created with one).
    /// - Throws: `PersistError.duplicate` if the key holds a live value (it is not
    ///   changed); `ShmError` for what the store refuses (`.valueTooLarge`, …).
    public func create<Object: Codable & Sendable>(key: String, value: Object, expires: Duration?) async throws {
        guard try store.add(keyPrefix + key, value, expiry: expires.map(Self.expiry) ?? .storeDefault) else {
            throw PersistError.duplicate
        }
    }

    /// Stores `value` under `key`, replacing any value.
    /// - Parameters:
    ///   - key: the key (after the driver's `keyPrefix`).
    ///   - value: the value, encoded with the store's codec.
    ///   - expires: the value's time to live; nil: an existing live entry
    ///     keeps its expiry, and a new one gets the store's `maxAge`.
    /// - Throws: `ShmError` for what the store refuses (`.valueTooLarge`, …).
    public func set<Object: Codable & Sendable>(key: String, value: Object, expires: Duration?) async throws {
        try store.set(keyPrefix + key, value, expiry: expires.map(Self.expiry) ?? .keepCurrent)
    }

    /// The value under `key`; nil if it is absent or expired.
    /// - Throws: `PersistError.invalidConversion` if the stored value does not
    ///   decode as `Object`.
    public func get<Object: Codable & Sendable>(key: String, as: Object.Type) async throws -> Object? {
        do {
            return try store.get(keyPrefix + key, as: Object.self)
        } catch where error.code == .codingFailed {
            throw PersistError.invalidConversion
        }
    }

    /// The value under `key` and the time it has left (nil: it does not expire),
    /// read from the same version of the entry; nil if it is absent or expired.
    /// - Throws: `PersistError.invalidConversion` if the stored value does not
    ///   decode as `Object`.
    public func getWithTTL<Object: Codable & Sendable>(key: String, as: Object.Type) async throws -> (object: Object, ttl: Duration?)? {
        let read: (value: Object, timeToLive: ShmStore.TimeToLive)?
        do {
            read = try store.getWithTimeToLive(keyPrefix + key, as: Object.self)
        } catch where error.code == .codingFailed {
            throw PersistError.invalidConversion
        }
        guard let read else { return nil }
        switch read.timeToLive {
        case .forever: return (read.value, nil)
        case .remaining(let left): return (read.value, left)
        }
    }

    /// Removes `key` (nothing happens if it is absent).
    public func remove(key: String) async throws {
        try store.remove(keyPrefix + key)
    }

    /// The store's expiry for a driver's time to live: one that is not positive
    /// expires at once (the store refuses a zero or negative duration).
    static func expiry(_ duration: Duration) -> ShmStore.Expiry {
        .after(duration > .zero ? duration : .nanoseconds(1))
    }
}
#endif
