#if Hummingbird
import Glibc
import ShmLRU
import ShmLRUTestSupport

/// A store key no other test (or earlier run) uses: random, and checked free.
func uniqueStoreKey() -> ShmKey {
    while true {
        let key = ShmKey(UInt32.random(in: 0x5000_0000...0x5FFF_FFFF))
        if !ShmRegion.exists(key: key) { return key }
    }
}

/// Runs `body` with a new store under a fresh key, then removes the store (its
/// store segment and its data segment), also when `body` throws or an expectation fails.
func withStore<R>(
    _ configuration: ShmStore.Configuration = .init(capacity: 64, recordSize: 256), _ body: (ShmStore) async throws -> R
) async throws -> R {
    let key = uniqueStoreKey()
    defer {
        try? ShmStore.remove(key: key)
        try? ShmRegion.remove(key: key)
    }
    let store = try ShmStore.create(key: key, configuration: configuration)
    defer { try? store.detach() }
    return try await body(store)
}
#endif
