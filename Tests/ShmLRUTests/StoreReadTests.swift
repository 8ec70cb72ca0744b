import Dispatch
import Glibc
import Synchronization
@testable import ShmLRU
import ShmLRUTestSupport
import Testing

/// The store's read path: lock-free hits (with probing and expiry), the decoded
/// cache (L1) and its coherence across processes, the codec.
@Suite struct StoreReadTests {
    struct Person: Codable, Equatable {
        var name: String
        var age: Int
    }

    /// A binary codec for the test: a tag byte, then the JSON of the value
    /// reversed; anything else is refused.
    struct ReversedCodec: ShmStoreCodec {
        func encode<Value: Encodable>(_ value: Value) throws -> [UInt8] {
            [0xB1] + (try JSONStoreCodec().encode(value)).reversed()
        }
        func decode<Value: Decodable>(_ type: Value.Type, from bytes: UnsafeRawBufferPointer) throws -> Value {
            guard bytes.first == 0xB1 else { throw ShmError(.invalidArgument, "ReversedCodec.decode") }
            let json = [UInt8](bytes.dropFirst().reversed())
            return try json.withUnsafeBytes { try JSONStoreCodec().decode(type, from: $0) }
        }
    }

    /// Holds the store's data-segment lock in another process (on the record of
    /// LRU hash `hash`) until the returned process is killed.
    func holdDataLock(_ store: ShmStore, hash: UInt32) throws -> SpawnedProcess {
        let holder = try spawnHelper(["lru-hold-lock", store.cache.key.description, String(hash)])
        var ready = false
        while let line = holder.readLine() {
            if line == "ready=1" {
                ready = true
                break
            }
        }
        if !ready {
            holder.kill(SIGKILL)
            _ = holder.wait()
            throw ShmError(.notFound, "lru-hold-lock did not take the lock")
        }
        return holder
    }

    @Test func readsTakeNoLockWithIntervalPromotion() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(
                key: key, configuration: .init(capacity: 32, recordSize: 128, lockSlots: 4, lockWaiters: 4, changeLogCapacity: 4))
            try store.set("held", 1)
            try store.set("tom", Person(name: "Tom", age: 10))
            #expect(try store.get("tom", as: Person.self) == Person(name: "Tom", age: 10))  // decoded once, kept in the L1
            let peer = try ShmStore.attach(key: key)
            #expect(peer.configuration.promotion == .atMostEvery(.seconds(1)))
            let holder = try holdDataLock(store, hash: store._hash("held"))
            defer {
                holder.kill(SIGKILL)
                _ = holder.wait()
            }
            // The lock is held by a live process: every read still answers.
            #expect(try store.get("tom", as: Person.self) == Person(name: "Tom", age: 10))  // L1 hit
            #expect(try peer.get("tom", as: Person.self) == Person(name: "Tom", age: 10))  // L1 miss, decoded
            #expect(try peer.bytes("held") == Array("1".utf8))
            #expect(try peer.contains("tom"))
            #expect(try !peer.contains("jerry"))
            #expect(try peer.get("jerry", as: Person.self) == nil)
            #expect(store.decodedCacheStats.hits == 1)
            #expect(peer.decodedCacheStats.misses == 1)
        }
    }

    @Test func lockFreeReadsFollowProbes() throws {
        try withStoreKey { key in
            // Every key on hash 500: a, b, c, d live under 500, 501, 502, 503.
            let store = try ShmStore._create(
                key: key, configuration: .init(capacity: 16, recordSize: 128, probeLimit: 4), permissions: 0o600,
                persistent: false, hash: { _ in 500 })
            for name in ["a", "b", "c", "d"] { try store.set(name, name.uppercased()) }
            #expect(try store.remove("b"))  // a hole at 501: the keys after it stay reachable
            let holder = try holdDataLock(store, hash: 500)
            defer {
                holder.kill(SIGKILL)
                _ = holder.wait()
            }
            #expect(try store.get("a", as: String.self) == "A")
            #expect(try store.get("c", as: String.self) == "C")
            #expect(try store.bytes("d") == Array("\"D\"".utf8))
            #expect(try store.get("b", as: String.self) == nil)
            #expect(try store.contains("d"))
            #expect(try !store.contains("b"))
            #expect(try store.get("e", as: String.self) == nil)
        }
    }

    @Test func expiredEntriesAreAbsentAndReclaimedUnderTheLock() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 128))
            try store.set("short", 1, expiry: .after(.milliseconds(30)))
            try store.set("long", 2)
            #expect(try store.get("short", as: Int.self) == 1)  // now in the L1, with its expiry
            usleep(80_000)
            do {
                let holder = try holdDataLock(store, hash: store._hash("long"))
                defer {
                    holder.kill(SIGKILL)
                    _ = holder.wait()
                }
                #expect(try !store.contains("short"))  // lock-free: absent, not reclaimed
                #expect(try store.contains("long"))
                #expect(try store.get("long", as: Int.self) == 2)
            }
            #expect(store.count == 2, "a lock-free read does not reclaim")
            #expect(try store.get("short", as: Int.self) == nil)  // the L1 entry has expired too; the get reclaims
            #expect(store.count == 1)
            #expect(try store.bytes("short") == nil)
            #expect(try store.purgeExpired() == 0)
        }
    }

    @Test func renewingGetsTakeTheLockAndRenew() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(
                key: key, configuration: .init(capacity: 8, recordSize: 128, maxAge: .milliseconds(300), renewsAgeOnGet: true))
            try store.set("k", 7)
            for _ in 0..<6 {
                usleep(100_000)
                #expect(try store.get("k", as: Int.self) == 7)  // each get restarts the 300 ms
            }
            usleep(450_000)
            #expect(try store.get("k", as: Int.self) == nil)
        }
    }

    @Test func bytesIntoABufferAllocateNothingAndCheckTheSize() throws {
        for promotion in [ShmLRU.Promotion.atMostEvery(.seconds(1)), .onEveryRead] {
            try withStoreKey { key in
                let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 128, promotion: promotion))
                try store.set("k", bytes: [1, 2, 3, 4, 5])
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 8, alignment: 8)
                defer { buffer.deallocate() }
                buffer.initializeMemory(as: UInt8.self, repeating: 0xEE)
                #expect(try store.bytes("k", into: buffer) == 5)
                #expect(Array(buffer) == [1, 2, 3, 4, 5, 0xEE, 0xEE, 0xEE])
                #expect(try store.bytes("absent", into: buffer) == nil)
                let small = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<4])
                small.initializeMemory(as: UInt8.self, repeating: 0)
                expectError(.invalidArgument) { _ = try store.bytes("k", into: small) }
                #expect(Array(small) == [0, 0, 0, 0], "a too-small buffer is left as it was")
            }
        }
    }

    @Test func decodedCacheReusesOnlyUnchangedValues() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 16, recordSize: 128))
            let peer = try ShmStore.attach(key: key)
            try store.set("tom", Person(name: "Tom", age: 10))
            #expect(try store.get("tom", as: Person.self)?.age == 10)
            #expect(try store.get("tom", as: Person.self)?.age == 10)
            #expect(store.decodedCacheStats == .init(entries: 1, bytes: store.decodedCacheStats.bytes, hits: 1, misses: 1))
            // A peer's write (another handle: its own L1) is seen by the next get.
            try peer.set("tom", Person(name: "Tom", age: 11))
            #expect(try store.get("tom", as: Person.self)?.age == 11)
            #expect(store.decodedCacheStats.misses == 2)
            // Also a write of the same bytes is a new version.
            try peer.set("tom", Person(name: "Tom", age: 11))
            #expect(try store.get("tom", as: Person.self)?.age == 11)
            #expect(store.decodedCacheStats.misses == 3)
            // Removed, then set again by the peer, possibly into the same record.
            #expect(try peer.remove("tom"))
            #expect(try store.get("tom", as: Person.self) == nil)
            try peer.set("tom", Person(name: "Tom", age: 12))
            #expect(try store.get("tom", as: Person.self)?.age == 12)
            // Another type for the same key decodes anew (and fails: not an Int).
            expectError(.codingFailed) { _ = try store.get("tom", as: Int.self) }
            #expect(try store.get("tom", as: Person.self)?.age == 12)
        }
    }

    @Test func decodedCacheIsBoundedAndCanBeTurnedOff() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 64, recordSize: 128))
            for i in 0..<10 { try store.set("k\(i)", i) }
            store.decodedCacheLimits = .init(maxEntries: 4, maxBytes: 1 << 20)
            for i in 0..<10 { #expect(try store.get("k\(i)", as: Int.self) == i) }
            #expect(store.decodedCacheStats.entries == 4)
            // The newest four are the ones kept.
            for i in 6..<10 { #expect(try store.get("k\(i)", as: Int.self) == i) }
            #expect(store.decodedCacheStats.hits == 4)
            // A byte bound: each entry costs its encoded size + key + 64.
            store.decodedCacheLimits = .init(maxEntries: 100, maxBytes: 3 * (1 + 2 + 64))
            #expect(store.decodedCacheStats.entries <= 3)
            for i in 0..<10 { _ = try store.get("k\(i)", as: Int.self) }
            #expect(store.decodedCacheStats.entries == 3)
            #expect(store.decodedCacheStats.bytes <= 3 * 67)
            // Off: nothing kept, every get decodes.
            store.decodedCacheLimits = .disabled
            #expect(store.decodedCacheStats.entries == 0)
            let hits = store.decodedCacheStats.hits
            for _ in 0..<3 { #expect(try store.get("k1", as: Int.self) == 1) }
            #expect(store.decodedCacheStats.hits == hits)
            #expect(store.decodedCacheStats.entries == 0)
        }
    }

    @Test func decodedCacheIsThreadSafe() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 64, recordSize: 128))
            store.decodedCacheLimits = .init(maxEntries: 8, maxBytes: 1 << 20)
            for i in 0..<16 { try store.set("k\(i)", Person(name: "p\(i)", age: i)) }
            // Each failure says what it was (a miss, another value, an error).
            let failures = Mutex<[String]>([])
            DispatchQueue.concurrentPerform(iterations: 4) { thread in
                for step in 0..<2_000 {
                    let i = (step &* 7 &+ thread) % 16
                    do {
                        if step % 50 == 0 { try store.set("k\(i)", Person(name: "p\(i)", age: i)) }
                        let read = try store.get("k\(i)", as: Person.self)
                        if read != Person(name: "p\(i)", age: i) {
                            failures.withLock { $0.append("thread \(thread) step \(step): k\(i) read \(String(describing: read))") }
                        }
                    } catch { failures.withLock { $0.append("thread \(thread) step \(step): k\(i) threw \(error)") } }
                }
            }
            let failed = failures.withLock { $0 }
            #expect(failed.isEmpty, "\(failed.count) failed reads: \(failed.prefix(5))")
            #expect(store.decodedCacheStats.entries <= 8)
        }
    }

    /// Another process updates a key over and over (each update writes a fresh
    /// record and switches the key's index entry to it, then frees the old
    /// record) while this one reads it lock-free: the key is present throughout,
    /// so no read may miss. A read that had loaded the index entry of the old
    /// record and met that record already freed took it for an absent key, and the
    /// index looked unchanged (the switch did not mark the index as moving): a
    /// miss of a present key (`decodedCacheIsThreadSafe` caught one read of 8,000
    /// under ThreadSanitizer).
    @Test func anUpdateByAnotherProcessNeverHidesTheKey() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 16, recordSize: 128))
            try store.set("k", 0)
            let writer = try spawnHelper(["store-update-loop", key.description, "k", "200000"])
            var reads = 0, misses = 0, decodedMisses = 0
            // Until the writer is done, or has exited without being done (then its
            // status fails the test below); bounded all the same.
            while reads < 20_000_000 {
                if try store.bytes("k") == nil { misses += 1 }
                if try store.get("k", as: Int.self) == nil { decodedMisses += 1 }
                reads += 1
                if reads % 256 == 0, try store.contains("done") || processState(writer.pid) == "Z" { break }
            }
            let run = writer.wait()
            #expect(run.status == 0, "\(run.errorOutput)")
            #expect(misses == 0 && decodedMisses == 0, "\(misses) bytes and \(decodedMisses) get misses in \(reads) reads")
            #expect(reads > 0)
            #expect(try store.get("k", as: Int.self) == 200_000)
            #expect(try store.verify().isClean)
        }
    }

    @Test func codecIsPluggable() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 16, recordSize: 128))
            store.codec = ReversedCodec()
            try store.set("tom", Person(name: "Tom", age: 10))
            let raw = try #require(try store.bytes("tom"))
            #expect(raw.first == 0xB1)
            #expect(try store.get("tom", as: Person.self) == Person(name: "Tom", age: 10))
            // A handle with the default JSON codec cannot read it: a typed error.
            let peer = try ShmStore.attach(key: key)
            expectError(.codingFailed) { _ = try peer.get("tom", as: Person.self) }
            peer.codec = ReversedCodec()
            #expect(try peer.get("tom", as: Person.self) == Person(name: "Tom", age: 10))
            // Changing the codec empties the decoded cache.
            #expect(store.decodedCacheStats.entries == 1)
            store.codec = JSONStoreCodec()
            #expect(store.decodedCacheStats.entries == 0)
            try store.set("n", 5)
            #expect(try store.bytes("n") == Array("5".utf8))
        }
    }

    @Test func exactPromotionStaysAvailable() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(
                key: key, configuration: .init(capacity: 3, recordSize: 128, promotion: .onEveryRead))
            let peer = try ShmStore.attach(key: key)
            #expect(peer.configuration.promotion == .onEveryRead)
            #expect(peer.cache.options.promotion == .onEveryRead)
            try store.set("a", 1)
            try store.set("b", 2)
            try store.set("c", 3)
            #expect(try peer.get("a", as: Int.self) == 1)  // exact LRU: a moves to the head
            #expect(try peer.get("a", as: Int.self) == 1)  // under the lock, from the L1
            #expect(peer.decodedCacheStats.hits == 1)
            try store.set("d", 4)  // evicts the least recently used: b
            #expect(try store.keys() == ["d", "a", "c"])
            #expect(try peer.get("b", as: Int.self) == nil)
        }
    }

    /// Real processes: a writer changes "c" round after round while readers read
    /// it through their decoded caches; each reader checks that every value it
    /// decoded or reused is the current round's (never a stale one).
    @Test func decodedCachesStayCoherentAcrossProcesses() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 64, recordSize: 512))
            let rounds = 300, readers = 2
            let readerProcesses = try (0..<readers).map {
                try spawnHelper(["store-coherence-reader", key.description, String($0), String(rounds)])
            }
            let writer = try spawnHelper(["store-coherence-writer", key.description, String(rounds), String(readers)])
            let written = writer.wait()
            #expect(written.status == 0, "\(written.errorOutput)")
            #expect(written.values["rounds"] == String(rounds))
            for process in readerProcesses {
                let run = process.wait()
                #expect(run.status == 0, "\(run.errorOutput)")
                #expect(Int(run.values["reads"] ?? "") ?? 0 >= rounds)
                #expect(Int(run.values["l1hits"] ?? "") ?? 0 > 0, "the readers reused decoded values")
            }
            #expect(try store.get("c", as: Round.self)?.round == rounds)
            #expect(try store.verify().isClean)
        }
    }

    /// Real processes set, get (through the L1), read bytes, test and remove keys
    /// that share probe hashes, lock-free; every value read is whole and its
    /// key's, and the structure stays sound.
    @Test func hammeringProcessesReadLockFree() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 20, recordSize: 256))
            let processes = 4, operations = 20_000
            let children = try (0..<processes).map {
                try spawnHelper(["store-read-hammer", key.description, String($0), String(operations)])
            }
            var sets = 0, hits = 0, l1hits = 0
            for child in children {
                let run = child.wait()
                #expect(run.status == 0, "\(run.errorOutput)")
                sets += Int(run.values["sets"] ?? "") ?? 0
                hits += Int(run.values["hits"] ?? "") ?? 0
                l1hits += Int(run.values["l1hits"] ?? "") ?? 0
            }
            #expect(sets > processes * operations / 4)
            #expect(hits > processes * operations / 10)
            #expect(l1hits > 0)
            let report = try store.verify()
            #expect(report.isClean, "\(report)")
            for name in hammerNamesForTest(store) {
                if let value = try store.get(name, as: StoreProbeValue.self) { #expect(value.isWhole(for: name)) }
            }
        }
    }

    func hammerNamesForTest(_ store: ShmStore) -> [String] {
        probeSharingNames(count: 16, hash: store._recordHash) + (0..<8).map { "plain-\($0)" }
    }
}

/// The `round` field of the coherence writer's value.
struct Round: Codable {
    var round: Int
}
