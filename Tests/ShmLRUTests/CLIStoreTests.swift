#if CLI
import Foundation
import Glibc
@testable import ShmLRU
import Testing

// The `shm-lru` tool on stores: list, stat, store keys|get|set|rm-key|locks|listen,
// rm of a store, and --version. Runs the built binary as a user would.

private func cli(_ arguments: String...) throws -> HelperRun {
    try runProduct("shm-lru", arguments)
}

/// The `name  value` lines of `shm-lru stat`.
private func statFields(_ output: String) -> [String: String] {
    var result: [String: String] = [:]
    for line in output.split(separator: "\n") {
        guard let gap = line.firstRange(of: "  ") else { continue }
        result[String(line[..<gap.lowerBound])] = String(line[gap.upperBound...].drop { $0 == " " })
    }
    return result
}

/// The rows of `shm-lru list`, split on runs of spaces (KIND may hold one space: "data of").
private func listRows(_ output: String) -> [[String]] {
    output.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
}

private struct Point: Codable, Equatable {
    var x: Int
}

@Suite struct CLIStoreTests {
    @Test func storeCommandsOnALibraryStore() async throws {
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 16, recordSize: 128))
            try store.set("greeting", bytes: Array("hello".utf8))
            try store.set("point", Point(x: 3))
            try store.set("blob", bytes: [0, 1, 2, 255])
            let k = key.description

            var run = try cli("store", "keys", k)
            #expect(run.status == 0, "\(run.errorOutput)")
            #expect(Set(run.output.split(separator: "\n").map(String.init)) == ["greeting", "point", "blob"])

            // get: text, JSON, hex; --hex forces hex; absent is exit 1.
            run = try cli("store", "get", k, "greeting")
            #expect(run.status == 0 && run.output == "hello\n", "\(run.errorOutput)")
            run = try cli("store", "get", k, "point")
            #expect(run.output == "{\"x\":3}\n")
            run = try cli("store", "get", k, "blob")
            #expect(run.output == "000102ff\n")
            run = try cli("store", "get", k, "greeting", "--hex")
            #expect(run.output == "68656c6c6f\n")
            run = try cli("store", "get", k, "nothing")
            #expect(run.status == 1)
            #expect(run.errorOutput == "shm-lru: \"nothing\" is not in store \(k)\n")

            // set: seen by the library at once, as text (JSON round-trips through Codable) or hex bytes.
            run = try cli("store", "set", k, "point", "{\"x\":42}")
            #expect(run.status == 0, "\(run.errorOutput)")
            #expect(try store.get("point", as: Point.self) == Point(x: 42))
            run = try cli("store", "set", k, "raw", "00ff10", "--hex")
            #expect(run.status == 0, "\(run.errorOutput)")
            #expect(try store.bytes("raw") == [0, 0xFF, 0x10])
            run = try cli("store", "set", k, "short", "lived", "--ttl", "0.05")
            #expect(run.status == 0, "\(run.errorOutput)")
            #expect(try await eventually { try store.bytes("short") == nil })
            run = try cli("store", "set", k, "raw", "0f0", "--hex")
            #expect(run.status == 64)
            run = try cli("store", "set", k, "big", String(repeating: "x", count: 200))
            #expect(run.status == 5, "a value larger than a record: \(run.errorOutput)")
            #expect(try store.bytes("big") == nil)

            // rm-key
            run = try cli("store", "rm-key", k, "greeting")
            #expect(run.status == 0 && run.output == "removed \"greeting\"\n")
            #expect(try store.contains("greeting") == false)
            run = try cli("store", "rm-key", k, "greeting")
            #expect(run.status == 1)

            // locks: none, then one held by another process (by name, with its PID).
            run = try cli("store", "locks", k)
            #expect(run.output == "no lock held or waited for\n")
            let holder = try spawnHelper(["store-hold-lock", k, "point"])
            defer {
                holder.kill(SIGKILL)
                _ = holder.wait()
            }
            while let line = holder.readLine(), line != "locked=1" {}
            run = try cli("store", "locks", k)
            #expect(run.status == 0, "\(run.errorOutput)")
            let row = listRows(run.output).first { $0.first == "\"point\"" }
            #expect(row == ["\"point\"", String(holder.pid), "0"], "\(run.output)")
            let locked = try #require(try store.tryLock("unstored") )
            run = try cli("store", "locks", k)
            #expect(run.output.contains("#" + String(_fnv1a64("unstored".utf8), radix: 16) + "  \(getpid())"), "\(run.output)")
            try store.unlock("unstored", locked)
        }
    }

    @Test func listenPrintsChangesUntilCountOrTimeout() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 16, recordSize: 128))
            let listener = try SpawnedProcess(
                productsDirectory() + "/shm-lru", ["store", "listen", key.description, "job", "--count", "3", "--timeout", "60"])
            #expect(listener.readLine() == "listening")
            try store.set("other", bytes: Array("ignored".utf8))
            try store.set("job", bytes: Array("one".utf8))
            try store.set("job", bytes: [0xFF])
            try store.remove("job")
            let run = listener.wait()
            #expect(run.status == 0, "\(run.errorOutput)")
            #expect(run.output == "set \"job\" one\nset \"job\" ff\nremoved \"job\"\n")

            // Nothing arrives: the timeout ends it, exit 1 because --count was not reached.
            let quiet = try cli("store", "listen", key.description, "--count", "1", "--timeout", "0.2")
            #expect(quiet.status == 1)
            #expect(quiet.output == "listening\n")
            #expect(quiet.errorOutput.contains("fewer than 1 change(s)"))
        }
    }

    @Test func listAndStatShowAStoreWithItsDataSegment() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64))
            try store.set("a", 1)
            let run = try cli("list")
            #expect(run.status == 0, "\(run.errorOutput)")
            let rows = listRows(run.output)
            let index = try #require(rows.firstIndex { $0.first == key.description }, "\(run.output)")
            // The data segment holds the store's 8 records plus one spare (an update is
            // written into a free record before the old one goes: ShmLRU+Replace.swift).
            #expect(Array(rows[index][3...]) == ["1", "9", "64", "-", "1", String(getpid()), "store"])
            let data = try #require(rows.dropFirst(index + 1).first, "the data segment's row follows")
            #expect(data.first == store.cache.key.description)
            #expect(Array(data[3...]) == ["1", "9", "64", "shared", "1", String(getpid()), "data", "of", key.description])
            #expect(rows.filter { $0.first == store.cache.key.description }.count == 1, "listed once, under its store")

            let stat = try cli("stat", key.description)
            #expect(stat.status == 0, "\(stat.errorOutput)")
            let fields = statFields(stat.output)
            #expect(fields["store"] == key.description)
            #expect(fields["key"] == store.cache.key.description)
            #expect(fields["records"] == "1 of 9 (8 free)")
            #expect(fields["policy"] == "tinylfu")  // the store's default eviction policy
            #expect(fields["memory budget"] == "none (sized by records)")
            #expect(fields["live bytes"]?.hasPrefix("2 in 1 entries (") == true, "key a + value 1: \(stat.output)")
            #expect(fields["value heap"] == "none")
        }
    }

    @Test func statShowsAStoreSizedByMemory() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(memory: 1 << 20, maxValueSize: 64 * 1024))
            try store.set("big", bytes: [UInt8](repeating: 7, count: 3_000))  // spilled to the heap: 3 chunks
            try store.set("small", bytes: [1, 2, 3])
            let usage = try store.memoryUsage()
            #expect(usage.liveBytes == 3 + 3_000 + 5 + 3)
            #expect(usage.freeHeapChunks == usage.heapChunks - 3)
            let stat = try cli("stat", key.description)
            #expect(stat.status == 0, "\(stat.errorOutput)")
            let fields = statFields(stat.output)
            #expect(fields["memory budget"] == "1048576 bytes")
            #expect(fields["live bytes"]?.hasPrefix("3011 in 2 entries (") == true, "\(stat.output)")
            #expect(fields["value heap"] == "\(usage.heapChunks) chunks, \(usage.heapChunks - 3) free")
        }
    }

    @Test func statShowsEveryProcesssHitsAndMisses() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 4)
            try cache.set(1, "one")
            for _ in 0..<3 { _ = try cache.string(1) }
            _ = try cache.string(2)
            let peer = try ShmLRU.attach(key: key, options: .init(promotion: .atMostEvery(.seconds(60))))
            for _ in 0..<5 { _ = try peer.string(1) }  // lock-free hits: published at the peer's next locked operation
            _ = try peer.string(3)
            try peer.set(4, "four")
            try cache.set(5, "five")
            #expect(cache.stats.hits == 3 && cache.stats.misses == 1, "per handle")
            #expect(cache.stats.totalHits == 8 && cache.stats.totalMisses == 2, "\(cache.stats)")
            let run = try cli("stat", key.description)
            #expect(run.status == 0, "\(run.errorOutput)")
            let fields = statFields(run.output)
            #expect(fields["hits"] == "8")
            #expect(fields["misses"] == "2")
            #expect(fields["hit ratio"] == "0.800")
            #expect(fields["policy"] == "lru")
        }
    }

    @Test func rmOfAStoreRemovesBothSegments() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 64), persistent: true)
            let dataKey = store.cache.key
            defer { try? ShmRegion.remove(key: dataKey) }
            // Its data segment alone is refused: that would break the store.
            var run = try cli("rm", dataKey.description)
            #expect(run.status == 5)
            #expect(run.errorOutput.contains("is the data segment of store \(key)"), "\(run.errorOutput)")
            #expect(ShmRegion.exists(key: dataKey))
            run = try cli("rm", key.description)
            #expect(run.status == 0, "\(run.errorOutput)")
            #expect(run.output.hasPrefix("removed store \(key) and its data segment \(dataKey)"), "\(run.output)")
            #expect(!ShmRegion.exists(key: key))
            #expect(!ShmRegion.exists(key: dataKey))
            try store.detach()
        }
    }

    @Test func aLeftBehindSegmentIsStale() throws {
        try withKey { key in
            // `create` makes a persistent cache and exits: nobody attached, creator gone.
            var run = try cli("create", key.description, "--record-size", "8", "--capacity", "2")
            #expect(run.status == 0, "\(run.errorOutput)")
            run = try cli("list")
            let row = try #require(listRows(run.output).first { $0.first == key.description })
            #expect(Array(row.suffix(2)) == ["cache,", "stale"], "\(row)")
            // Attached: not stale.
            let cache = try ShmLRU.attach(key: key)
            run = try cli("list")
            #expect(listRows(run.output).first { $0.first == key.description }?.last == "cache")
            _ = try cache.detach()
        }
    }

    @Test func storeCommandsNeverTouchAForeignSegmentOrACache() throws {
        try withKey { key in
            let region = try ShmRegion.create(key: key, byteCount: 8192)
            try region.withUnsafeMutableBytes { bytes in for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255) } }
            let before = region.withUnsafeBytes { Array($0) }
            let invocations: [[String]] = [
                ["keys"], ["get", "a"], ["set", "a", "b"], ["rm-key", "a"], ["locks"], ["listen", "--timeout", "0"],
            ]
            for invocation in invocations {
                let arguments = ["store", invocation[0], key.description] + invocation.dropFirst()
                let run = try runProduct("shm-lru", arguments)
                #expect(run.status == 3, "\(arguments): \(run.status) \(run.errorOutput)")
                #expect(run.errorOutput.hasPrefix("shm-lru: segment \(key) is not a ShmStore"), "\(run.errorOutput)")
            }
            #expect(region.withUnsafeBytes { Array($0) } == before, "a store command wrote into the foreign segment")
        }
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 2)
            try cache.set(1, "x")
            let run = try cli("store", "get", key.description, "x")
            #expect(run.status == 3)
            #expect(run.errorOutput.contains("is a ShmLRU cache, not a store"))
        }
        let missing = uniqueKey()
        let run = try cli("store", "keys", missing.description)
        #expect(run.status == 2)
    }

    @Test func versionAndStoreHelp() throws {
        var run = try cli("--version")
        #expect(run.status == 0)
        #expect(run.output.split(separator: ".").count == 3, "\(run.output)")
        run = try cli("--help")
        #expect(run.output.contains("  store "))
        run = try cli("store", "--help")
        #expect(run.status == 0)
        for name in ["keys", "get", "set", "rm-key", "locks", "listen"] {
            #expect(run.output.contains("  \(name) "), "\(name) missing: \(run.output)")
            let help = try cli("store", name, "--help")
            #expect(help.status == 0 && help.output.contains("USAGE: shm-lru store \(name)"), "\(help.output)")
        }
    }

    /// `verify`, `dump` and `stat` follow a store's key to its data segment
    /// (`verify` checks the store's own structures too); `list --json` and
    /// `stat --json` print JSON that parses and holds the same figures.
    @Test func inspectionFollowsAStoreKeyAndSpeaksJSON() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 16, recordSize: 128))
            defer { try? store.detach() }
            try store.set("a", 1)
            try store.set("b", 2)
            let k = key.description
            var run = try cli("verify", k)
            #expect(run.status == 0, "\(run.output) \(run.errorOutput)")
            #expect(run.output.hasPrefix("clean"), "\(run.output)")
            run = try cli("dump", k)
            #expect(run.status == 0, "\(run.errorOutput)")
            let dumped = try JSONSerialization.jsonObject(with: Data(run.output.utf8))
            #expect((dumped as? [Any])?.count == 2 || (dumped as? [String: Any]) != nil, "\(run.output)")

            run = try cli("stat", k, "--json")
            #expect(run.status == 0, "\(run.errorOutput)")
            let stat = try #require(try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any])
            #expect(stat["store"] as? String == k || (stat["store"] as? Int).map { "\($0)" } == k, "\(stat)")
            #expect(stat["records"] as? String == "2 of 17 (15 free)", "\(stat)")

            run = try cli("list", "--json")
            #expect(run.status == 0, "\(run.errorOutput)")
            let rows = try #require(try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [[String: Any]])
            let mine = rows.first { ($0["key"] as? String) == k || ($0["key"] as? Int).map { "\($0)" } == k }
            #expect(mine?["kind"] as? String == "store", "\(rows)")
            #expect(mine?["records"] as? Int == 2, "\(rows)")

            // A damaged store fails verification through its key.
            store._store.store(_StoreLayout.H.probeLimit, 0)
            run = try cli("verify", k)
            #expect(run.status != 0, "\(run.output)")
            store._store.store(_StoreLayout.H.probeLimit, UInt32(store.configuration.probeLimit))
        }
    }
}
#endif  // CLI
