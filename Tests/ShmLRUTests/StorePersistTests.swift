import Glibc
@testable import ShmLRU
import Testing

/// `getWithTimeToLive` (ShmStore+Persist.swift): the read the framework drivers'
/// `getWithTTL` is built on.
@Suite struct StorePersistTests {
    @Test func aValueComesWithTheTimeItHasLeft() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 16, recordSize: 128))
            try store.set("hour", "h", expiry: .after(.seconds(3600)))
            try store.set("never", 7, expiry: .never)
            let hour = try #require(try store.getWithTimeToLive("hour", as: String.self))
            #expect(hour.value == "h")
            guard case .remaining(let left) = hour.timeToLive else {
                Issue.record("an entry set to live an hour has no time left: \(hour.timeToLive)")
                return
            }
            #expect(left > .seconds(3000) && left <= .seconds(3600))
            let never = try #require(try store.getWithTimeToLive("never", as: Int.self))
            #expect(never.value == 7 && never.timeToLive == .forever)
            #expect(try store.getWithTimeToLive("absent", as: Int.self) == nil)
            // `.keepCurrent` keeps the expiry the read reports.
            try store.set("hour", "h2", expiry: .keepCurrent)
            let kept = try #require(try store.getWithTimeToLive("hour", as: String.self))
            guard case .remaining(let keptLeft) = kept.timeToLive else {
                Issue.record("a set keeping the expiry lost it: \(kept.timeToLive)")
                return
            }
            #expect(kept.value == "h2" && keptLeft <= left)
        }
    }

    @Test func anExpiredValueReadsAsAbsent() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 16, recordSize: 128))
            try store.set("brief", 1, expiry: .after(.milliseconds(50)))
            #expect(try await eventually { try store.getWithTimeToLive("brief", as: Int.self) == nil })
            #expect(try store.get("brief", as: Int.self) == nil)
        }
    }

    @Test func aValueOfAnotherTypeIsACodingError() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 16, recordSize: 128))
            try store.set("text", "not a number")
            expectError(.codingFailed) { _ = try store.getWithTimeToLive("text", as: Int.self) }
            #expect(try store.get("text", as: String.self) == "not a number")  // unchanged
        }
    }

    /// Renewed on read (`renewsAgeOnGet`, the locked path): the time left is the renewed one.
    @Test func aRenewingReadReportsTheRenewedTime() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(
                key: key, configuration: .init(capacity: 16, recordSize: 128, maxAge: .seconds(20), renewsAgeOnGet: true))
            try store.set("k", 1)
            try await Task.sleep(for: .seconds(1))  // at least: unrenewed, at most 19 s would be left
            let read = try #require(try store.getWithTimeToLive("k", as: Int.self))
            guard case .remaining(let left) = read.timeToLive else {
                Issue.record("no time left: \(read.timeToLive)")
                return
            }
            #expect(left > .seconds(19) && left <= .seconds(20))
        }
    }

    /// Another process sets the value with a time to live; this one reads both.
    @Test func aValueSetByAnotherProcessComesWithItsTimeToLive() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 16, recordSize: 128))
            let set = try runHelper(["store-set", key.description, "shared", "string", "from the helper", "60000"])
            #expect(set.status == 0, "\(set.errorOutput)")
            let read = try #require(try store.getWithTimeToLive("shared", as: String.self))
            #expect(read.value == "from the helper")
            guard case .remaining(let left) = read.timeToLive else {
                Issue.record("no time left: \(read.timeToLive)")
                return
            }
            #expect(left > .zero && left <= .seconds(60))
        }
    }
}
