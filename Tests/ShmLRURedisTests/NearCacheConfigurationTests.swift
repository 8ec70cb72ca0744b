#if Redis
import Glibc
import ServiceLifecycle
import ServiceLifecycleTestKit
import ShmLRU
import Testing

@testable import ShmLRURedis

// Connection settings: the redis:// URL parser (good and bad input), the
// settings' validation, AUTH against a redis-server started with
// --requirepass, a database number, and the subscriber as a Service.

@Suite("Redis near cache: configuration")
struct RedisNearCacheConfigurationTests {
    @Test("redis:// URLs: host, port, user, password (percent-decoded), database")
    func urlsAreParsed() throws {
        let full = try RedisNearCache.Configuration(name: "c", url: "redis://app:s%40cret@cache.internal:6380/2")
        #expect(full.host == "cache.internal" && full.port == 6380 && full.user == "app" && full.password == "s@cret" && full.database == 2)
        let passwordOnly = try RedisNearCache.Configuration(name: "c", url: "redis://:pw@10.0.0.1")
        #expect(passwordOnly.host == "10.0.0.1" && passwordOnly.port == 6379 && passwordOnly.user == nil && passwordOnly.password == "pw")
        #expect(passwordOnly.database == 0)
        let v6 = try RedisNearCache.Configuration(name: "c", url: "redis://[::1]:7000/0")
        #expect(v6.host == "::1" && v6.port == 7000)
        let plain = try RedisNearCache.Configuration(name: "c", url: "REDIS://localhost/")
        #expect(plain.host == "localhost" && plain.port == 6379 && plain.database == 0)
    }

    @Test(
        "bad URLs are typed errors naming the setting",
        arguments: [
            "", "http://host", "redis:/host", "redis://", "redis://:6379", "redis://host:", "redis://host:port", "redis://host:0",
            "redis://host:65536", "redis://host:-1", "redis://host:99999999999999999999", "redis://host/db", "redis://host/-1",
            "redis://host/1/2", "redis://host?x=1", "redis://host#f", "redis://user@host", "redis://user:@host", "redis://:%zz@host",
            "redis://[::1", "redis://[::1]x", "redis://::1:6379", "rediss://host:6380", "redis://host/99999999999",
        ])
    func badURLsAreTypedErrors(url: String) {
        do throws(RedisNearCacheError) {
            let parsed = try RedisNearCache.Configuration(name: "c", url: url)
            Issue.record("\"\(url)\" parsed as \(parsed.host):\(parsed.port)/\(parsed.database)")
        } catch {
            #expect(error.code == .invalidConfiguration)
            #expect(error.setting == "url")
        }
    }

    @Test("bad settings are typed errors naming the setting, before anything connects")
    func badSettingsAreTypedErrors() throws {
        let store = try ShmStore.create(key: uniqueKey(), configuration: .init(capacity: 10, recordSize: 128))
        defer {
            try? store.remove()
            try? store.detach()
        }
        let cases: [(RedisNearCache.Configuration, String)] = [
            (.init(name: ""), "name"),
            (.init(name: "c", host: ""), "host"),
            (.init(name: "c", port: 0), "port"),
            (.init(name: "c", port: 70000), "port"),
            (.init(name: "c", database: -1), "database"),
            (.init(name: "c", user: "app"), "password"),
            (.init(name: "c", commandTimeout: .zero), "commandTimeout"),
            (.init(name: "c", heartbeatTimeout: .milliseconds(500)), "heartbeatTimeout"),
            (.init(name: "c", refreshAhead: .zero), "refreshAhead"),
            (.init(name: "c", ioThreads: 0), "ioThreads"),
        ]
        for (configuration, setting) in cases {
            do throws(RedisNearCacheError) {
                _ = try RedisNearCache(store: store, configuration: configuration)
                Issue.record("accepted a bad \(setting)")
            } catch {
                #expect(error.code == .invalidConfiguration && error.setting == setting, "\(error)")
            }
        }
        #expect(try store.keys().isEmpty, "nothing was written")
    }

    @Test("AUTH: the right password works; a wrong or missing one is a typed error naming the setting, and nothing is cached",
        .enabled(if: hasRedis, noRedisMessage))
    func authenticationWithRightAndWrongPasswords() async throws {
        let port = freePort()
        let server = try startRedisServer(port: port, ["--requirepass", "s3cret"], password: "s3cret")
        defer { server.kill() }
        try await onMachine { store in
            let name = uniqueName("auth")
            let right = try RedisNearCache(store: store, configuration: .init(name: name, url: "redis://:s3cret@127.0.0.1:\(port)/3"))
            try await withSubscriber(right) {
                try await right.set("k", "v", timeToLive: .seconds(60))
                #expect(try await right.get("k", as: String.self) == "v")
                _ = try store.remove("k")
                #expect(try await right.get("k", as: String.self) == "v", "loaded from Redis (database 3) with the password")
            }
            for (label, configuration) in [
                ("wrong", RedisNearCache.Configuration(name: name, port: port, password: "wrong")),
                ("missing", RedisNearCache.Configuration(name: name, port: port)),
            ] {
                let cache = try RedisNearCache(store: store, configuration: configuration)
                _ = try store.remove("k")
                do throws(RedisNearCacheError) {
                    _ = try await cache.get("k")
                    Issue.record("\(label) password: a get succeeded")
                } catch {
                    #expect(error.code == .authenticationFailed, "\(label): \(error)")
                    #expect(error.setting == "password", "\(label): \(error)")
                }
                do throws(RedisNearCacheError) {
                    try await cache.set("k", bytes: [1])
                    Issue.record("\(label) password: a set succeeded")
                } catch {
                    #expect(error.code == .authenticationFailed, "\(label): \(error)")
                }
                #expect(try cache.cachedValue("k") == nil, "\(label) password: nothing cached")
            }
        }
    }

    @Test("a database the server does not have is a typed error naming it", .enabled(if: hasRedis, noRedisMessage))
    func aBadDatabaseIsATypedError() async throws {
        let port = redisPort!
        try await onMachine { store in
            let cache = try RedisNearCache(store: store, configuration: .init(name: uniqueName("db"), port: port, database: 4096))
            do throws(RedisNearCacheError) {
                _ = try await cache.get("k")
                Issue.record("SELECT 4096 succeeded")
            } catch {
                #expect(error.code == .invalidConfiguration && error.setting == "database", "\(error)")
            }
            #expect(try cache.cachedValue("k") == nil)
        }
    }

    @Test("the subscriber as a Service stops cleanly on graceful shutdown", .enabled(if: hasRedis, noRedisMessage))
    func theSubscriberStopsOnGracefulShutdown() async throws {
        let port = redisPort!
        try await onMachine { store in
            let cache = try RedisNearCache(store: store, configuration: .init(name: uniqueName("service"), port: port))
            let subscriber = RedisInvalidationSubscriber(cache: cache)
            try await testGracefulShutdown { trigger in
                let running = Task { try await subscriber.run() }
                #expect(await eventually(.seconds(10)) { subscriber.role == .active(connected: true) } != nil)
                #expect(try cache.subscriberStatus()?.isConnected == true)
                trigger.triggerGracefulShutdown()
                try await running.value
                #expect(subscriber.role == .stopped)
                #expect(try cache.subscriberStatus() == nil, "the machine knows it has no subscriber now")
            }
        }
    }
}
#endif  // Redis
