#if Hummingbird
import Glibc
import Hummingbird
import HummingbirdTesting
import ShmLRU
import ShmLRUHummingbird
import ShmLRUTestSupport
import Testing

// Hummingbird 2.28.1's own persist tests (Tests/HummingbirdTests/PersistTests.swift),
// ported to ShmPersistDriver: the same routes and the same expectations, each on
// a store of its own; then what the port adds (the time to live kept by a set
// without one, the deviations the driver documents, several processes).

/// Hummingbird's `createRouter`: the persist routes on a driver over `store`.
func persistRouter(_ store: ShmStore) -> (Router<BasicRequestContext>, ShmPersistDriver) {
    let router = Router()
    let persist = ShmPersistDriver(store: store)
    router.put("/persist/:tag") { request, context -> HTTPResponse.Status in
        let buffer = try await request.body.collect(upTo: .max)
        let tag = try context.parameters.require("tag")
        try await persist.set(key: tag, value: String(buffer: buffer))
        return .ok
    }
    router.put("/persist/:tag/:time") { request, context -> HTTPResponse.Status in
        guard let time = context.parameters.get("time", as: Int.self) else { throw HTTPError(.badRequest) }
        let buffer = try await request.body.collect(upTo: .max)
        let tag = try context.parameters.require("tag")
        try await persist.set(key: tag, value: String(buffer: buffer), expires: .seconds(time))
        return .ok
    }
    router.get("/persist/:tag") { _, context -> String? in
        guard let tag = context.parameters.get("tag", as: String.self) else { throw HTTPError(.badRequest) }
        return try await persist.get(key: tag, as: String.self)
    }
    router.get("/persist/:tag/ttl") { _, context -> String? in
        guard let tag = context.parameters.get("tag", as: String.self) else { throw HTTPError(.badRequest) }
        return try await persist.getWithTTL(key: tag, as: String.self)?.ttl.map { String($0.components.seconds) }
    }
    router.delete("/persist/:tag") { _, context -> HTTPResponse.Status in
        guard let tag = context.parameters.get("tag", as: String.self) else { throw HTTPError(.badRequest) }
        try await persist.remove(key: tag)
        return .noContent
    }
    return (router, persist)
}

/// A tag no other test uses.
func newTag() -> String { "tag-\(UInt64.random(in: 0...UInt64.max))" }

func buffer(_ text: String) -> ByteBuffer { ByteBufferAllocator().buffer(string: text) }

@Suite struct PersistDriverTests {
    @Test func setGet() async throws {
        try await withStore { store in
            let (router, _) = persistRouter(store)
            try await Application(responder: router.buildResponder()).test(.router) { client in
                let tag = newTag()
                try await client.execute(uri: "/persist/\(tag)", method: .put, body: buffer("Persist")) { _ in }
                try await client.execute(uri: "/persist/\(tag)", method: .get) { response in
                    #expect(String(buffer: response.body) == "Persist")
                }
            }
        }
    }

    @Test func createGet() async throws {
        try await withStore { store in
            let (router, persist) = persistRouter(store)
            router.put("/create/:tag") { request, context -> HTTPResponse.Status in
                let buffer = try await request.body.collect(upTo: .max)
                try await persist.create(key: try context.parameters.require("tag"), value: String(buffer: buffer))
                return .ok
            }
            try await Application(responder: router.buildResponder()).test(.router) { client in
                let tag = newTag()
                try await client.execute(uri: "/create/\(tag)", method: .put, body: buffer("Persist")) { _ in }
                try await client.execute(uri: "/persist/\(tag)", method: .get) { response in
                    #expect(String(buffer: response.body) == "Persist")
                }
            }
        }
    }

    @Test func doubleCreateFails() async throws {
        try await withStore { store in
            let (router, persist) = persistRouter(store)
            router.put("/create/:tag") { request, context -> HTTPResponse.Status in
                let buffer = try await request.body.collect(upTo: .max)
                do {
                    try await persist.create(key: try context.parameters.require("tag"), value: String(buffer: buffer))
                } catch let error as PersistError where error == .duplicate {
                    throw HTTPError(.conflict)
                }
                return .ok
            }
            try await Application(responder: router.buildResponder()).test(.router) { client in
                let tag = newTag()
                try await client.execute(uri: "/create/\(tag)", method: .put, body: buffer("Persist")) { response in
                    #expect(response.status == .ok)
                }
                try await client.execute(uri: "/create/\(tag)", method: .put, body: buffer("Other")) { response in
                    #expect(response.status == .conflict)
                }
                try await client.execute(uri: "/persist/\(tag)", method: .get) { response in
                    #expect(String(buffer: response.body) == "Persist")  // the duplicate changed nothing
                }
            }
        }
    }

    @Test func setTwice() async throws {
        try await withStore { store in
            let (router, _) = persistRouter(store)
            try await Application(responder: router.buildResponder()).test(.router) { client in
                let tag = newTag()
                try await client.execute(uri: "/persist/\(tag)", method: .put, body: buffer("test1")) { _ in }
                try await client.execute(uri: "/persist/\(tag)", method: .put, body: buffer("test2")) { response in
                    #expect(response.status == .ok)
                }
                try await client.execute(uri: "/persist/\(tag)", method: .get) { response in
                    #expect(String(buffer: response.body) == "test2")
                }
            }
        }
    }

    /// A value set to live 0 s reads as absent; one set to live 10 minutes does not;
    /// one set to live 1 s is gone once that second has passed.
    @Test func expires() async throws {
        try await withStore { store in
            let (router, _) = persistRouter(store)
            try await Application(responder: router.buildResponder()).test(.router) { client in
                let (tag1, tag2, tag3) = (newTag(), newTag(), newTag())
                try await client.execute(uri: "/persist/\(tag1)/0", method: .put, body: buffer("ThisIsTest1")) { _ in }
                try await client.execute(uri: "/persist/\(tag2)/600", method: .put, body: buffer("ThisIsTest2")) { _ in }
                try await client.execute(uri: "/persist/\(tag3)/1", method: .put, body: buffer("ThisIsTest3")) { _ in }
                let setAt = ContinuousClock.now
                try await client.execute(uri: "/persist/\(tag1)", method: .get) { response in
                    #expect(response.status == .noContent)
                }
                try await client.execute(uri: "/persist/\(tag2)", method: .get) { response in
                    #expect(String(buffer: response.body) == "ThisIsTest2")
                }
                try await Task.sleep(until: setAt + .milliseconds(1100), clock: .continuous)  // at least: tag3's second has passed
                try await client.execute(uri: "/persist/\(tag3)", method: .get) { response in
                    #expect(response.status == .noContent)
                }
            }
        }
    }

    @Test func ttl() async throws {
        try await withStore { store in
            let (router, _) = persistRouter(store)
            try await Application(responder: router.buildResponder()).test(.router) { client in
                let (tag, forever) = (newTag(), newTag())
                try await client.execute(uri: "/persist/\(tag)/600", method: .put, body: buffer("ThisIsTest2")) { _ in }
                try await client.execute(uri: "/persist/\(tag)/ttl", method: .get) { response in
                    let ttl = try #require(Int(String(buffer: response.body)))
                    #expect(ttl <= 600 && ttl > 1)
                }
                try await client.execute(uri: "/persist/\(forever)", method: .put, body: buffer("kept")) { _ in }
                try await client.execute(uri: "/persist/\(forever)/ttl", method: .get) { response in
                    #expect(response.status == .noContent)  // no expiry: a nil ttl
                }
            }
        }
    }

    @Test func codable() async throws {
        struct TestCodable: Codable {
            let buffer: String
        }
        try await withStore { store in
            let (router, persist) = persistRouter(store)
            router.put("/codable/:tag") { request, context -> HTTPResponse.Status in
                guard let tag = context.parameters.get("tag") else { throw HTTPError(.badRequest) }
                let buffer = try await request.body.collect(upTo: .max)
                try await persist.set(key: tag, value: TestCodable(buffer: String(buffer: buffer)))
                return .ok
            }
            router.get("/codable/:tag") { _, context -> String? in
                guard let tag = context.parameters.get("tag") else { throw HTTPError(.badRequest) }
                return try await persist.get(key: tag, as: TestCodable.self)?.buffer
            }
            try await Application(responder: router.buildResponder()).test(.router) { client in
                let tag = newTag()
                try await client.execute(uri: "/codable/\(tag)", method: .put, body: buffer("Persist")) { _ in }
                try await client.execute(uri: "/codable/\(tag)", method: .get) { response in
                    #expect(String(buffer: response.body) == "Persist")
                }
            }
        }
    }

    @Test func invalidGetAs() async throws {
        struct TestCodable: Codable {
            let buffer: String
        }
        try await withStore { store in
            let (router, persist) = persistRouter(store)
            router.put("/invalid") { _, _ -> HTTPResponse.Status in
                try await persist.set(key: "test", value: TestCodable(buffer: "hello"))
                return .ok
            }
            router.get("/invalid") { _, _ -> String? in
                do {
                    return try await persist.get(key: "test", as: String.self)
                } catch let error as PersistError where error == .invalidConversion {
                    throw HTTPError(.badRequest)
                }
            }
            try await Application(router: router).test(.router) { client in
                try await client.execute(uri: "/invalid", method: .put)
                try await client.execute(uri: "/invalid", method: .get) { response in
                    #expect(response.status == .badRequest)
                }
            }
            await #expect(throws: PersistError.invalidConversion) { _ = try await persist.getWithTTL(key: "test", as: Int.self) }
        }
    }

    @Test func remove() async throws {
        try await withStore { store in
            let (router, _) = persistRouter(store)
            try await Application(responder: router.buildResponder()).test(.router) { client in
                let tag = newTag()
                try await client.execute(uri: "/persist/\(tag)", method: .put, body: buffer("ThisIsTest1")) { _ in }
                try await client.execute(uri: "/persist/\(tag)", method: .delete) { _ in }
                try await client.execute(uri: "/persist/\(tag)", method: .get) { response in
                    #expect(response.status == .noContent)
                }
            }
        }
    }

    @Test func expireAndAdd() async throws {
        try await withStore { store in
            let (router, _) = persistRouter(store)
            try await Application(responder: router.buildResponder()).test(.router) { client in
                let tag = newTag()
                try await client.execute(uri: "/persist/\(tag)/0", method: .put, body: buffer("ThisIsTest1")) { _ in }
                try await client.execute(uri: "/persist/\(tag)", method: .get) { response in
                    #expect(response.status == .noContent)
                }
                try await client.execute(uri: "/persist/\(tag)/10", method: .put, body: buffer("ThisIsTest1")) { response in
                    #expect(response.status == .ok)
                }
                try await client.execute(uri: "/persist/\(tag)", method: .get) { response in
                    #expect(response.status == .ok)
                    #expect(String(buffer: response.body) == "ThisIsTest1")
                }
            }
        }
    }

    /// Hummingbird's `testTidy`: the driver runs as a service of the application
    /// (its `run` waits for the graceful shutdown) and values stay meanwhile.
    @Test func runsAsAService() async throws {
        try await withStore { store in
            let (router, persist) = persistRouter(store)
            let app = Application(responder: router.buildResponder(), services: [persist])
            try await app.test(.router) { client in
                let tag = newTag()
                try await client.execute(uri: "/persist/\(tag)/10", method: .put, body: buffer("NotExpired")) { _ in }
                try await Task.sleep(for: .milliseconds(20))
                try await client.execute(uri: "/persist/\(tag)", method: .get) { response in
                    #expect(String(buffer: response.body) == "NotExpired")
                }
            }
        }
    }

    // MARK: Beyond Hummingbird's tests

    /// `set(expires: nil)` keeps the entry's time to live (the protocol's rule),
    /// and a new entry set without one does not expire.
    @Test func setWithoutExpiryKeepsTheTimeToLive() async throws {
        try await withStore { store in
            let persist = ShmPersistDriver(store: store)
            try await persist.set(key: "k", value: 1, expires: .seconds(600))
            try await persist.set(key: "k", value: 2)
            let read = try #require(try await persist.getWithTTL(key: "k", as: Int.self))
            #expect(read.object == 2)
            let ttl = try #require(read.ttl)
            #expect(ttl > .zero && ttl <= .seconds(600))
            try await persist.set(key: "new", value: 3)
            let new = try #require(try await persist.getWithTTL(key: "new", as: Int.self))
            #expect(new.object == 3 && new.ttl == nil)
            #expect(try await persist.getWithTTL(key: "absent", as: Int.self) == nil)
        }
    }

    /// The documented deviations from MemoryPersistDriver: an expired entry is
    /// absent for `create` too, and `set(expires: nil)` over it stores a value
    /// that does not expire. The key prefix keeps the driver's keys apart.
    @Test func anExpiredEntryIsAbsentForCreateAndSet() async throws {
        try await withStore { store in
            let persist = ShmPersistDriver(store: store, keyPrefix: "p:")
            try await persist.create(key: "k", value: "old", expires: .zero)
            try await persist.create(key: "k", value: "new", expires: nil)  // no duplicate: the old one expired
            #expect(try await persist.get(key: "k", as: String.self) == "new")
            await #expect(throws: PersistError.duplicate) { try await persist.create(key: "k", value: "again") }
            try await persist.set(key: "gone", value: "old", expires: .seconds(-5))
            #expect(try await persist.get(key: "gone", as: String.self) == nil)
            try await persist.set(key: "gone", value: "kept")
            #expect(try await persist.getWithTTL(key: "gone", as: String.self)?.ttl == nil)
            #expect(try await persist.get(key: "gone", as: String.self) == "kept")
            #expect(try store.get("p:k", as: String.self) == "new")
            #expect(try store.get("k", as: String.self) == nil)
            try await persist.remove(key: "k")
            #expect(try store.contains("p:k") == false)
        }
    }

    /// Several processes: another process writes through the store, this one
    /// reads through the driver (value, time to live, conversion); this one
    /// writes through the driver and the other reads it.
    @Test func anotherProcessSeesTheSameValues() async throws {
        try await withStore { store in
            let persist = ShmPersistDriver(store: store, keyPrefix: "persist:")
            let key = store.key.description
            let set = try runTestHelper(["store-set", key, "persist:greeting", "string", "from another process", "600000"])
            #expect(set.status == 0, "\(set.output)")
            let read = try #require(try await persist.getWithTTL(key: "greeting", as: String.self))
            #expect(read.object == "from another process")
            let ttl = try #require(read.ttl)
            #expect(ttl > .zero && ttl <= .seconds(600))
            await #expect(throws: PersistError.duplicate) { try await persist.create(key: "greeting", value: "mine") }

            let number = try runTestHelper(["store-set", key, "persist:number", "int", "42"])
            #expect(number.status == 0, "\(number.output)")
            await #expect(throws: PersistError.invalidConversion) { _ = try await persist.get(key: "number", as: String.self) }
            #expect(try await persist.get(key: "number", as: Int.self) == 42)

            try await persist.create(key: "reply", value: "from the driver", expires: .seconds(600))
            #expect(try runTestHelper(["store-get", key, "persist:reply", "string"]).values["value"] == "[from the driver]")
            try await persist.remove(key: "reply")
            #expect(try runTestHelper(["store-get", key, "persist:reply", "string"]).values["miss"] == "1")

            let removed = try runTestHelper(["store-remove", key, "persist:greeting"])
            #expect(removed.values["removed"] == "true")
            #expect(try await persist.get(key: "greeting", as: String.self) == nil)
        }
    }
}
#endif
