import FoundationEssentials
import Glibc
@testable import ShmLRU
import Testing

/// What a new user meets in the first hour (issue 23, "no traps"): each test is
/// one trap that was there, and fails if it comes back.
@Suite struct FirstHourTests {
    /// `stats.misses` counts the store's misses on every read path: lock-free
    /// bytes, bytes(into:), the Codable get, and gets that take the lock
    /// (exact promotion).
    @Test(arguments: [ShmLRU.Promotion.atMostEvery(.milliseconds(100)), .onEveryRead])
    func storeMissesAreCounted(promotion: ShmLRU.Promotion) throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 16, recordSize: 128, promotion: promotion))
            defer { try? store.remove() }
            try store.set("present", 1)
            let before = store.cache.stats
            var buffer = [UInt8](repeating: 0, count: 64)
            for i in 0..<3 {
                #expect(try store.bytes("absent-\(i)") == nil)
                #expect(try buffer.withUnsafeMutableBytes { try store.bytes("absent-\(i)", into: $0) } == nil)
                #expect(try store.get("absent-\(i)", as: Int.self) == nil)
            }
            #expect(try store.get("present", as: Int.self) == 1)
            let after = store.cache.stats
            #expect(after.misses - before.misses == 9)
            #expect(after.hits - before.hits >= 1)
        }
    }

    /// `ShmStore.create()` picks a free key, as `ShmLRU.create` does.
    @Test func storeCreateWithoutAKeyPicksAFreeOne() throws {
        let store = try ShmStore.create(configuration: .init(capacity: 8, recordSize: 64))
        defer { removeStore(store.key) }
        try store.set("k", 7)
        let peer = try ShmStore.attach(key: store.key)
        #expect(try peer.get("k", as: Int.self) == 7)
        try peer.detach()
        let other = try ShmStore.create(configuration: .init(capacity: 8, recordSize: 64))
        defer { removeStore(other.key) }
        #expect(other.key != store.key)
    }

    /// A byte array or `Data` given to the Codable `set` is stored as its bytes
    /// (not as a JSON array three times its size), and read back as either.
    @Test func bytesGivenToTheCodableSetAreStoredAsBytes() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 4096))
            defer { try? store.remove() }
            let bytes = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            try store.set("array", bytes)
            #expect(try store.bytes("array") == bytes)
            #expect(try store.get("array", as: [UInt8].self) == bytes)
            #expect(try store.get("array", as: Data.self) == Data(bytes))
            try store.set("data", Data(bytes))
            #expect(try store.bytes("data") == bytes)
            #expect(try store.get("data", as: [UInt8].self) == bytes)
            // Through a generic caller too (an adapter that knows only `Codable`).
            func viaGeneric<V: Codable>(_ value: V) throws -> V? {
                try store.set("generic", value)
                return try store.get("generic", as: V.self)
            }
            #expect(try viaGeneric(bytes) == bytes)
            #expect(try store.bytes("generic") == bytes)
            // Other arrays still go through the codec.
            try store.set("ints", [1, 2, 3])
            #expect(try store.bytes("ints") == Array("[1,2,3]".utf8))
        }
    }

    /// `create` on a taken key says which call works; `open` with another
    /// configuration names the difference without `Optional(…)`; neither leaves
    /// a segment behind.
    @Test func errorsNameTheCallThatWorksAndNoOptional() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64, maxAge: .seconds(300)))
            defer { try? store.remove() }
            let segmentsBefore = ShmRegion.list().count
            let created = thrownError { _ = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64)) }
            #expect(created?.code == .exists)
            #expect(created?.description.contains("ShmStore.open") == true, "\(String(describing: created))")
            #expect(created?.description.contains("ShmStore.attach") == true, "\(String(describing: created))")
            let opened = thrownError { _ = try ShmStore.open(key: key, configuration: .init(capacity: 8, recordSize: 64)) }
            #expect(opened?.code == .incompatibleSegment)
            let text = opened?.description ?? ""
            #expect(!text.contains("Optional(") && text.contains("maxAge") && text.contains("ShmStore.attach"), "\(text)")
            #expect(ShmRegion.list().count == segmentsBefore)
        }
        let cache = try ShmLRU.create(recordSize: 32, capacity: 4)
        defer { try? cache.region.remove() }
        let created = thrownError { _ = try ShmLRU.create(key: cache.key, recordSize: 32, capacity: 4) }
        #expect(created?.code == .exists)
        #expect(created?.description.contains("ShmLRU.attach") == true, "\(String(describing: created))")
    }

    /// In async code `lock` and `withLock` are the async ones (the blocking ones
    /// have names of their own): this test would not compile otherwise, and the
    /// lock is taken without blocking the test's thread.
    @Test func asyncLockNamesResolveToTheAsyncOnes() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64))
            defer { try? store.remove() }
            let token = try await store.lock("k")
            // Held: a second async lock with a short timeout fails rather than blocking.
            await expectError(.lockTimeout) { _ = try await store.lock("k", timeout: .milliseconds(50)) }
            try store.unlock("k", token)
            let value = try await store.withLock("k") { _ in 42 }
            #expect(value == 42)
        }
    }
}

/// The `ShmError` that `body` throws; nil when it throws nothing (or another error).
private func thrownError(_ body: () throws -> Void) -> ShmError? {
    do {
        try body()
        return nil
    } catch {
        return error as? ShmError
    }
}
