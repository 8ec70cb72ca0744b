#if Vapor
import Glibc
import NIOPosix
import ShmLRU
import ShmLRUTestSupport
import ShmLRUVapor
import Testing
import Vapor
import VaporTesting

// ShmCache through real Vapor applications (VaporTesting): Vapor's own cache
// tests (CacheTests, AsyncCacheTests) on `.shm`, request handlers using
// `req.cache`, the cost of `req.cache`, and another process sharing the values.

/// A store key no other test (or earlier run) uses: random, and checked free.
func uniqueStoreKey() -> ShmKey {
    while true {
        let key = ShmKey(UInt32.random(in: 0x5000_0000...0x5FFF_FFFF))
        if !ShmRegion.exists(key: key) { return key }
    }
}

/// Runs `body` with a new store and an application whose cache is `.shm(store)`,
/// then shuts the application down and removes the store, also when `body`
/// throws or an expectation fails.
func withCachedApp<R>(keyPrefix: String = "", _ body: (Application, ShmStore) async throws -> R) async throws -> R {
    let key = uniqueStoreKey()
    defer {
        try? ShmStore.remove(key: key)
        try? ShmRegion.remove(key: key)
    }
    let store = try ShmStore.create(key: key, configuration: .init(capacity: 64, recordSize: 256))
    defer { try? store.detach() }
    return try await withApp { app in
        app.caches.use(.shm(store, keyPrefix: keyPrefix))
        return try await body(app, store)
    }
}

/// Routes that use `req.cache`: PUT stores the body (`?ttl=SECONDS`), GET answers
/// it (404 when absent), DELETE removes it.
func addCacheRoutes(_ app: Application) {
    app.put("cache", ":key") { req async throws -> HTTPStatus in
        let key = try req.parameters.require("key")
        let ttl = req.query[Int.self, at: "ttl"]
        try await req.cache.set(key, to: req.body.string ?? "", expiresIn: ttl.map { .seconds($0) })
        return .ok
    }
    app.get("cache", ":key") { req async throws -> String in
        guard let value = try await req.cache.get(try req.parameters.require("key"), as: String.self) else { throw Abort(.notFound) }
        return value
    }
    app.delete("cache", ":key") { req async throws -> HTTPStatus in
        try await req.cache.delete(try req.parameters.require("key"))
        return .noContent
    }
}

@Suite struct VaporCacheTests {
    /// Vapor's `CacheTests.testInMemoryCache`, on `.shm` through the future API.
    @Test func vaporsCacheTestOnTheFutureAPI() async throws {
        try await withCachedApp { app, store in
            #expect(try await app.cache.get("foo", as: String.self).get() == nil)
            try await app.cache.set("foo", to: "bar").get()
            #expect(try await app.cache.get("foo", as: String.self).get() == "bar")
            #expect(try store.get("foo", as: String.self) == "bar")  // in the shared store

            try await app.cache.set("foo2", to: "bar2", expiresIn: .seconds(1)).get()
            let setAt = ContinuousClock.now
            #expect(try await app.cache.get("foo2", as: String.self).get() == "bar2")
            try await Task.sleep(until: setAt + .milliseconds(1100), clock: .continuous)  // at least: its second has passed
            #expect(try await app.cache.get("foo2", as: String.self).get() == nil)

            try await app.cache.set("foo3", to: "bar3").get()
            #expect(try await app.cache.get("foo3", as: String.self).get() == "bar3")
            try await app.cache.delete("foo3").get()
            #expect(try await app.cache.get("foo3", as: String.self).get() == nil)
        }
    }

    /// Vapor's `AsyncCacheTests`, on `.shm` through the async API: also a
    /// Codable struct, `set(_, to: nil)` removing, and an expiry of 0 s.
    @Test func vaporsCacheTestOnTheAsyncAPI() async throws {
        struct Visit: Codable, Equatable, Sendable {
            var path: String
            var count: Int
        }
        try await withCachedApp { app, store in
            #expect(try await app.cache.get("foo", as: String.self) == nil)
            try await app.cache.set("foo", to: "bar")
            #expect(try await app.cache.get("foo") == "bar")
            try await app.cache.set("visit", to: Visit(path: "/", count: 3), expiresIn: .minutes(5))
            #expect(try await app.cache.get("visit", as: Visit.self) == Visit(path: "/", count: 3))
            guard case .remaining(let left)? = try store.timeToLive("visit") else {
                Issue.record("no time to live for a value set to expire in 5 minutes")
                return
            }
            #expect(left > .zero && left <= .seconds(300))
            try await app.cache.set("foo", to: String?.none)
            #expect(try await app.cache.get("foo", as: String.self) == nil)
            try await app.cache.set("now", to: "gone", expiresIn: .seconds(0))
            #expect(try await app.cache.get("now", as: String.self) == nil)
        }
    }

    /// A value that does not decode as the type asked for fails, it is not nil;
    /// a value too large fails and changes nothing.
    @Test func errorsReachTheCaller() async throws {
        try await withCachedApp { app, _ in
            try await app.cache.set("text", to: "not a number")
            await #expect { _ = try await app.cache.get("text", as: Int.self) } throws: { error in
                (error as? ShmError)?.code == .codingFailed
            }
            let large = String(repeating: "x", count: 1000)  // records of 256 bytes
            await #expect { try await app.cache.set("text", to: large) } throws: { error in
                (error as? ShmError)?.code == .valueTooLarge
            }
            #expect(try await app.cache.get("text", as: String.self) == "not a number")
        }
    }

    /// Handlers using `req.cache` through the application's responder.
    @Test func requestHandlersUseTheCache() async throws {
        try await withCachedApp(keyPrefix: "vapor:") { app, store in
            addCacheRoutes(app)
            let tester = try app.testing()
            try await tester.test(.GET, "cache/greeting") { res in #expect(res.status == .notFound) }
            try await tester.test(.PUT, "cache/greeting", body: ByteBuffer(string: "hello")) { res in #expect(res.status == .ok) }
            try await tester.test(.GET, "cache/greeting") { res in
                #expect(res.status == .ok)
                #expect(res.body.string == "hello")
            }
            #expect(try store.get("vapor:greeting", as: String.self) == "hello")  // the prefix keeps keys apart
            #expect(try store.get("greeting", as: String.self) == nil)
            try await tester.test(.PUT, "cache/brief?ttl=0", body: ByteBuffer(string: "x")) { res in #expect(res.status == .ok) }
            try await tester.test(.GET, "cache/brief") { res in #expect(res.status == .notFound) }
            try await tester.test(.DELETE, "cache/greeting") { res in #expect(res.status == .noContent) }
            try await tester.test(.GET, "cache/greeting") { res in #expect(res.status == .notFound) }
        }
    }

    /// `req.cache` is the shared handle bound to the request's event loop: the
    /// same store object on every request, and no attach per request.
    @Test func requestCacheIsACheapHandle() async throws {
        let elsewhere = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do { try await cheapHandle(elsewhere) } catch {
            try? await elsewhere.shutdownGracefully()
            throw error
        }
        try await elsewhere.shutdownGracefully()
    }

    func cheapHandle(_ elsewhere: MultiThreadedEventLoopGroup) async throws {
        try await withCachedApp { app, store in
            app.get("handle") { req -> String in
                guard let cache = req.cache as? ShmCache else { return "not a ShmCache: \(type(of: req.cache))" }
                let sameStore = cache.store === (req.application.cache as? ShmCache)?.store
                // `for(request)` binds a cache made on another loop to the request's.
                let bound = ShmCache(store: store, on: elsewhere.next()).for(req).eventLoop === req.eventLoop
                return "\(sameStore) \(bound) \(try store.cache.region.attachCount)"
            }
            let attached = try store.cache.region.attachCount
            let tester = try app.testing()
            for _ in 0..<20 {
                try await tester.test(.GET, "handle") { res in
                    #expect(res.body.string == "true true \(attached)")
                }
            }
            #expect(try store.cache.region.attachCount == attached)
            #expect((app.cache as? ShmCache)?.store === store)
        }
    }

    /// Another process writes through the store and this application reads it
    /// through `req.cache`; the application writes and the other process reads.
    @Test func anotherProcessSharesTheCache() async throws {
        try await withCachedApp(keyPrefix: "vapor:") { app, store in
            addCacheRoutes(app)
            let tester = try app.testing()
            let key = store.key.description
            let set = try runTestHelper(["store-set", key, "vapor:greeting", "string", "from another process", "600000"])
            #expect(set.status == 0, "\(set.output)")
            try await tester.test(.GET, "cache/greeting") { res in
                #expect(res.status == .ok)
                #expect(res.body.string == "from another process")
            }
            try await tester.test(.PUT, "cache/reply", body: ByteBuffer(string: "from vapor")) { res in #expect(res.status == .ok) }
            #expect(try runTestHelper(["store-get", key, "vapor:reply", "string"]).values["value"] == "[from vapor]")
            #expect(try runTestHelper(["store-remove", key, "vapor:greeting"]).values["removed"] == "true")
            try await tester.test(.GET, "cache/greeting") { res in #expect(res.status == .notFound) }
        }
    }
}
#endif
