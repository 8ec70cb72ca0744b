import Glibc
@testable import ShmLRU
import Testing

struct Person: Codable, Equatable {
    var name: String
    var age: Int
}

@Suite struct StoreTests {
    @Test func valueSetInOneProcessIsReadInAnother() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 64, recordSize: 256))
            try store.set("myObj", Person(name: "Tom", age: 10))
            try store.set("greeting", "hello")
            let read = try runHelper(["store-get", key.description, "greeting", "string"])
            #expect(read.status == 0, "\(read.errorOutput)")
            #expect(read.values["value"] == "[hello]")

            let set = try runHelper(["store-set", key.description, "answer", "int", "42"])
            #expect(set.status == 0, "\(set.errorOutput)")
            #expect(try store.get("answer", as: Int.self) == 42)
            #expect(try store.get("myObj", as: Person.self) == Person(name: "Tom", age: 10))

            let removed = try runHelper(["store-remove", key.description, "greeting"])
            #expect(removed.values["removed"] == "true")
            #expect(try store.get("greeting", as: String.self) == nil)
            #expect(try store.remove("greeting") == false)
            #expect(try store.cache.verify().isClean)
        }
    }

    @Test func falsyValuesRoundTrip() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 64, recordSize: 128))
            try store.set("zero", 0)
            try store.set("false", false)
            try store.set("empty", "")
            try store.set("none", [Int]())
            try store.set("raw", bytes: [])
            #expect(try store.get("zero", as: Int.self) == 0)
            #expect(try store.get("false", as: Bool.self) == false)
            #expect(try store.get("empty", as: String.self) == "")
            #expect(try store.get("none", as: [Int].self) == [])
            #expect(try store.bytes("raw") == [])
            #expect(try store.contains("raw"))
            // …and across processes, both ways.
            #expect(try runHelper(["store-get", key.description, "zero", "int"]).values["value"] == "0")
            #expect(try runHelper(["store-get", key.description, "false", "bool"]).values["value"] == "false")
            #expect(try runHelper(["store-get", key.description, "empty", "string"]).values["value"] == "[]")
            #expect(try runHelper(["store-set", key.description, "zero2", "int", "0"]).status == 0)
            #expect(try runHelper(["store-set", key.description, "empty2", "string", ""]).status == 0)
            #expect(try store.get("zero2", as: Int.self) == 0)
            #expect(try store.get("empty2", as: String.self) == "")
        }
    }

    @Test func rawBytesAndUnicodeKeys() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 128))
            let bytes: [UInt8] = [0, 255, 1, 254, 0]
            try store.set("clé ✓", bytes: bytes)
            try store.set("", bytes: [7])  // the empty key is a key like any other
            #expect(try store.bytes("clé ✓") == bytes)
            #expect(try store.bytes("") == [7])
            #expect(try store.bytes("cle ✓") == nil)
            #expect(Set(try store.keys()) == ["clé ✓", ""])
        }
    }

    @Test func tooLargeIsATypedErrorAndChangesNothing() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64))
            #expect(store.maxEntryBytes == 40)
            try store.set("k", bytes: [UInt8](repeating: 1, count: 39))  // 24 + 1 + 39 = 64: fits
            expectError(.valueTooLarge) {
                try store.set("k", bytes: [UInt8](repeating: 2, count: 40))
            }
            expectError(.valueTooLarge) {
                try store.set(String(repeating: "x", count: 41), bytes: [])
            }
            #expect(try store.bytes("k") == [UInt8](repeating: 1, count: 39))
            #expect(store.count == 1)
            #expect(try store.cache.verify().isClean)
        }
    }

    @Test func codingFailureIsTyped() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 128))
            try store.set("name", "Tom")
            expectError(.codingFailed) {
                _ = try store.get("name", as: Int.self)
            }
            #expect(try store.get("name", as: String.self) == "Tom")
        }
    }

    /// Two keys with the same record hash in this store (found by brute force
    /// with its seeded hash): both are stored (the second one probes to hash +
    /// 1), and neither reads the other's value.
    @Test func realHashCollisionNeverReturnsAnotherKeysValue() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 16, recordSize: 128))
            let (a, b) = collidingPair(store)
            #expect(store._hash(a) == store._hash(b))
            try store.set(a, 1)
            #expect(try store.get(b, as: Int.self) == nil)
            try store.set(b, 2)
            #expect(try store.get(a, as: Int.self) == 1)
            #expect(try store.get(b, as: Int.self) == 2)
            #expect(try store.cache.contains(store._hash(a)))
            #expect(try store.cache.contains(store._hash(a) &+ 1))
            // Another process computes the same hashes and finds each key's own value.
            #expect(try runHelper(["store-get", key.description, a, "int"]).values["value"] == "1")
            #expect(try runHelper(["store-get", key.description, b, "int"]).values["value"] == "2")
            // Removing the first leaves the second reachable (no tombstone needed).
            #expect(try store.remove(a))
            #expect(try store.get(b, as: Int.self) == 2)
            #expect(try runHelper(["store-set", key.description, a, "int", "3"]).status == 0)
            #expect(try store.get(a, as: Int.self) == 3)
            #expect(try store.get(b, as: Int.self) == 2)
            #expect(store.count == 2)
        }
    }

    /// Two "key-N" keys with the same record hash in `store` (a birthday search:
    /// about 80,000 keys for 32 bits).
    func collidingPair(_ store: ShmStore) -> (String, String) {
        var seen: [UInt32: String] = [:]
        for n in 0... {
            let candidate = "key-\(n)"
            if let other = seen.updateValue(candidate, forKey: store._hash(candidate)) { return (other, candidate) }
        }
        fatalError("unreachable")
    }

    /// Item 7 (issue 24): keys crafted to collide under the unseeded FNV-1a 32
    /// (a probe window of 1 makes the second a `.keyCollision`) no longer collide:
    /// the record hash is keyed with a per-store random seed, different in two
    /// stores. A store segment of layout version 3 (FNV) is a typed error.
    @Test func craftedFnvCollisionsNoLongerCollide() throws {
        let a = "key-901258", b = "key-1540052"
        try #require(_stableHash(a) == _stableHash(b), "the crafted pair collides under FNV-1a 32")
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 16, recordSize: 128, probeLimit: 1))
            try store.set(a, 1)
            try store.set(b, 2)  // a .keyCollision when both hash alike
            #expect(try store.get(a, as: Int.self) == 1)
            #expect(try store.get(b, as: Int.self) == 2)
            #expect(store._hash(a) != store._hash(b))
            try withStoreKey { otherKey in
                let other = try ShmStore.create(key: otherKey, configuration: .init(capacity: 16, recordSize: 128))
                #expect(other._hashSeed != store._hashSeed, "each store draws its own seed")
                #expect(other._hash(a) != store._hash(a) || other._hash(b) != store._hash(b))
            }
            // Another process computes the same (seeded) hashes.
            #expect(try runHelper(["store-get", key.description, b, "int"]).values["value"] == "2")
            // An older layout (version 3, FNV-hashed) is refused with a typed error.
            try store._storeRegion.withUnsafeMutableBytes {
                $0.storeBytes(of: UInt32(3), toByteOffset: _StoreLayout.H.version, as: UInt32.self)
            }
            expectError(.incompatibleSegment) { _ = try ShmStore.attach(key: key, wait: .zero) }
        }
    }

    /// With every key forced onto one hash and 3 probes, a fourth key is a typed
    /// error that changes nothing; a removal makes room again.
    @Test func probeExhaustionIsATypedError() throws {
        try withStoreKey { key in
            let store = try ShmStore._create(
                key: key, configuration: .init(capacity: 16, recordSize: 128, probeLimit: 3), permissions: 0o600,
                persistent: false, hash: { _ in 1000 })
            try store.set("a", "A")
            try store.set("b", "B")
            try store.set("c", "C")
            expectError(.keyCollision) {
                try store.set("d", "D")
            }
            #expect(store.count == 3)
            #expect(try store.get("d", as: String.self) == nil)
            try store.set("b", "B2")  // an existing key is still updated in place
            #expect(try store.remove("a"))
            try store.set("d", "D")
            #expect(try store.cache.string(1000) != nil)
            for (name, value) in [("b", "B2"), ("c", "C"), ("d", "D")] {
                #expect(try store.get(name, as: String.self) == value)
            }
            #expect(try store.get("a", as: String.self) == nil)
            // A second handle with the same hash function sees the same placement.
            let peer = try ShmStore._attach(key: key, wait: .seconds(1), hash: { _ in 1000 })
            #expect(try peer.get("d", as: String.self) == "D")
        }
    }

    @Test func fullStoreEvictsLeastRecentlyUsedOrRefuses() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 2, recordSize: 64))
            try store.set("a", 1)
            try store.set("b", 2)
            #expect(try store.get("a", as: Int.self) == 1)  // a is now the most recently used
            try store.set("c", 3)
            #expect(try store.get("b", as: Int.self) == nil)
            #expect(try store.get("a", as: Int.self) == 1)
            #expect(try store.get("c", as: Int.self) == 3)
        }
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 1, recordSize: 64, whenFull: .refuse))
            try store.set("a", 1)
            expectError(.full) {
                try store.set("b", 2)
            }
            try store.set("a", 5)  // updates still work
            #expect(try store.get("a", as: Int.self) == 5)
            let peer = try ShmStore.attach(key: key)
            #expect(peer.configuration.whenFull == .refuse)
        }
    }

    @Test func attachChecksTheSegment() throws {
        try withKey { key in
            expectError(.notFound) { _ = try ShmStore.attach(key: key) }
            let lru = try ShmLRU.create(key: key, recordSize: 64, capacity: 4)
            expectError(.incompatibleSegment) { _ = try ShmStore.attach(key: key, wait: .zero) }
            _ = lru
        }
        try withStoreKey { key in
            expectError(.invalidSize) {
                _ = try ShmStore.create(key: key, configuration: .init(recordSize: 24))
            }
            expectError(.invalidArgument) {
                _ = try ShmStore.create(key: key, configuration: .init(maxAge: .zero))
            }
            #expect(!ShmRegion.exists(key: key))  // nothing left behind by the refusals
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 4, recordSize: 64))
            expectError(.exists) {
                _ = try ShmStore.create(key: key)
            }
            let peer = try ShmStore.attach(key: key)
            #expect(peer.configuration == store.configuration)
            try peer.set("x", 1)
            #expect(try store.get("x", as: Int.self) == 1)
        }
    }
}

extension StoreTests {
    @Test func verifyChecksStoreRecords() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64))
            try store.set("a", 1)
            try store.set("b", 2)
            #expect(try store.verify().isClean)
            // A record written under the store's LRU by hash, not through the store, is reported.
            try store.cache.set(12345, [1, 2, 3])
            let report = try store.verify()
            #expect(!report.isClean)
            #expect(report.problems.contains { $0.contains("not a store record") })
        }
    }
}
