import Glibc
@testable import ShmLRU
import Testing

@Suite struct StoreTTLTests {
    /// An entry set by another process with a short max age becomes invisible
    /// here, stays counted until it is reclaimed, and `purgeExpired` reclaims it.
    @Test func entriesExpireAndAreReclaimed() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 16, recordSize: 128))
            let changes = store.listen("short")
            try store.set("forever", "kept", expiry: .never)
            let set = try runHelper(["store-set", key.description, "short", "int", "1", "150"])
            #expect(set.status == 0, "\(set.errorOutput)")
            #expect(try await eventually { try !store.contains("short") })
            #expect(store.count == 2)  // invisible, not yet reclaimed
            #expect(try store.timeToLive("short") == nil)
            #expect(try runHelper(["store-get", key.description, "short", "int"]).values["miss"] == "1")  // reclaims it
            #expect(store.count == 1)
            #expect(try store.get("short", as: Int.self) == nil)
            #expect(try store.purgeExpired() == 0)
            #expect(try store.get("forever", as: String.self) == "kept")
            #expect(try store.timeToLive("forever") == .forever)
            #expect(await collect(changes, count: 2).map(describe) == ["set:1", "expired"])
            #expect(try store.cache.verify().isClean)
        }
    }

    /// A full store reclaims an expired entry before it evicts a live one, even
    /// when the live one is the least recently used.
    @Test func aFullStoreReclaimsExpiredEntriesBeforeEvicting() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 2, recordSize: 64))
            let changes = store.listenAll()
            try store.set("live", 1, expiry: .never)  // the least recently used
            try store.set("brief", 2, expiry: .after(.milliseconds(100)))
            #expect(try await eventually { try !store.contains("brief") })
            #expect(store.count == 2)
            try store.set("new", 3)
            #expect(try store.get("live", as: Int.self) == 1)
            #expect(try store.get("new", as: Int.self) == 3)
            #expect(store.cache.stats.evictions == 0)
            let seen = await collect(changes, count: 4)
            #expect(seen.map { "\($0.key) \(describe($0))" } == ["live set:1", "brief set:2", "brief expired", "new set:3"])
        }
    }

    @Test func perEntryExpiryOverridesTheStoreDefault() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64, maxAge: .milliseconds(100)))
            #expect(try ShmStore.attach(key: key).configuration.maxAge == .milliseconds(100))
            try store.set("default", 1)
            try store.set("never", 2, expiry: .never)
            try store.set("hour", 3, expiry: .after(.seconds(3600)))
            #expect(try await eventually { try !store.contains("default") })
            #expect(try store.get("never", as: Int.self) == 2)
            #expect(try store.get("hour", as: Int.self) == 3)
            #expect(try store.timeToLive("never") == .forever)
            guard case .remaining(let left) = try store.timeToLive("hour") else {
                Issue.record("no time to live for an entry set to live an hour")
                return
            }
            #expect(left > .zero && left <= .seconds(3600))
            expectError(.invalidArgument) { try store.set("bad", 1, expiry: .after(.zero)) }
            #expect(try !store.contains("bad"))
        }
    }

    /// By default (as in the seed) a get does not renew the age; with
    /// `renewsAgeOnGet` it restarts it.
    @Test func getRenewsTheAgeOnlyWhenAsked() throws {
        for renews in [false, true] {
            try withStoreKey { key in
                let store = try ShmStore.create(
                    key: key, configuration: .init(capacity: 8, recordSize: 64, maxAge: .seconds(3600), renewsAgeOnGet: renews))
                try store.set("k", 1)
                let before = try #require(try store._expiresAt("k"))
                #expect(try store.get("k", as: Int.self) == 1)
                let after = try #require(try store._expiresAt("k"))
                if renews { #expect(after > before) } else { #expect(after == before) }
                #expect(try ShmStore.attach(key: key).configuration.renewsAgeOnGet == renews)
            }
        }
    }
}

extension StoreTTLTests {
    @Test func purgeExpiredReclaimsEveryExpiredEntry() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 16, recordSize: 64))
            for index in 0..<5 { try store.set("brief\(index)", index, expiry: .after(.milliseconds(50))) }
            try store.set("kept", 1)
            #expect(try await eventually { try store.keys() == ["kept"] })
            #expect(store.count == 6)
            #expect(try store.purgeExpired() == 5)
            #expect(store.count == 1)
            #expect(try store.cache.verify().isClean)
        }
    }
}
