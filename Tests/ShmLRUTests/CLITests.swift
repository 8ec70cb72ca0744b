#if CLI
import Glibc
@testable import ShmLRU
import Testing

// Runs the built `shm-lru` tool as a user would, against caches made by the
// library, against other programs' segments, and with bad arguments.

private func cli(_ arguments: String...) throws -> HelperRun {
    try runProduct("shm-lru", arguments)
}

/// The `name  value` lines of `shm-lru stat`.
private func fields(_ output: String) -> [String: String] {
    var result: [String: String] = [:]
    for line in output.split(separator: "\n") {
        // Names have at most one space ("record size"); two or more end them.
        guard let gap = line.firstRange(of: "  ") else { continue }
        result[String(line[..<gap.lowerBound])] = String(line[gap.upperBound...].drop { $0 == " " })
    }
    return result
}

/// The hashes of a `dump`, in order.
private func dumpedHashes(_ json: String) -> [UInt32] {
    json.split(separator: "\"hash\":").dropFirst().compactMap { UInt32($0.prefix { $0.isNumber }) }
}

/// Another program's segment: random bytes, no ShmLRU header.
private func makeForeignSegment(_ key: ShmKey) throws -> (ShmRegion, [UInt8]) {
    let region = try ShmRegion.create(key: key, byteCount: 8192)
    try region.withUnsafeMutableBytes { bytes in for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255) } }
    return (region, region.withUnsafeBytes { Array($0) })
}

/// The library API the tool's `list` is built on.
@Suite struct SegmentListingTests {
    @Test func listAndProbeACacheAndAForeignSegment() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 40, capacity: 6, index: .processLocal)
            try cache.set(1, "a")
            try cache.set(2, "b")
            let info = try #require(ShmRegion.list().first { $0.key == key })
            #expect(info.id == cache.region.id)
            #expect(info.byteCount == cache.region.byteCount)
            #expect(info.permissions == 0o600)
            #expect(info.attachCount == 1)
            #expect(info.creatorPID == getpid())
            let summary = try ShmLRU.probe(key: key)
            #expect(summary.key == key && summary.id == cache.region.id)
            #expect(summary.recordSize == 40 && summary.capacity == 6 && summary.count == 2)
            #expect(summary.indexKind == .processLocal)
            #expect(summary.attachCount == 1, "the probe does not count itself")
            #expect(summary.createdAt <= ShmInstant.now)
            #expect(try cache.region.attachCount == 1, "the probe detached")
        }
        try withKey { key in
            let (region, before) = try makeForeignSegment(key)
            let error = #expect(throws: ShmError.self) { try ShmLRU.probe(key: key) }
            #expect(error?.code == .incompatibleSegment)
            #expect(region.withUnsafeBytes { Array($0) } == before)
        }
        let missing = uniqueKey()
        let error = #expect(throws: ShmError.self) { try ShmLRU.probe(key: missing) }
        #expect(error?.code == .notFound)
        #expect(!ShmRegion.list().contains { $0.key == missing })
    }

    @Test func aSegmentSmallerThanAHeaderIsNotACache() throws {
        try withKey { key in
            _ = try ShmRegion.create(key: key, byteCount: 100)
            let error = #expect(throws: ShmError.self) { try ShmLRU.probe(key: key) }
            #expect(error?.code == .incompatibleSegment)
            let run = try runProduct("shm-lru", ["stat", key.description])
            #expect(run.status == 3)
            #expect(run.errorOutput.contains("smaller than a ShmLRU header"))
        }
    }
}

@Suite struct CLITests {
    static let subcommands = ["list", "stat", "dump", "verify", "get", "set", "del", "evict", "create", "rm"]

    @Test func helpForTheToolAndEachSubcommand() throws {
        let top = try cli("--help")
        #expect(top.status == 0)
        #expect(top.output.contains("USAGE: shm-lru <subcommand>"))
        #expect(top.output.contains("Exit codes:"))
        for name in Self.subcommands {
            #expect(top.output.contains("  \(name) "), "\(name) missing from --help")
            let help = try cli(name, "--help")
            #expect(help.status == 0, "\(name) --help: \(help.errorOutput)")
            #expect(help.output.contains("USAGE: shm-lru \(name)"), "\(name) --help: \(help.output)")
        }
        let evict = try cli("help", "evict")
        #expect(evict.output.contains("--older-than <seconds>"))
        #expect(evict.output.contains("--max <n>"))
    }

    @Test func everySubcommandOnALibraryCache() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 32, capacity: 4)
            try cache.set(10, "ten")
            try cache.set(20, "twenty")
            try cache.set(30, "thirty")
            let decimal = String(key.unsignedValue)
            let hex = key.description

            // get: by decimal and hex key, decimal and hex hash.
            var run = try cli("get", hex, "20")
            #expect(run.status == 0, "\(run.errorOutput)")
            #expect(run.output == "twenty\n")
            run = try cli("get", decimal, "0x1e", "--hex")
            #expect(run.output == "746869727479\n")

            // set: seen by the library at once; update in place.
            run = try cli("set", hex, "40", "forty")
            #expect(run.status == 0, "\(run.errorOutput)")
            #expect(run.output.hasPrefix("inserted 40 at offset "))
            #expect(try cache.string(40) == "forty")
            run = try cli("set", hex, "40", "FORTY")
            #expect(run.output.hasPrefix("updated 40 at offset "))
            #expect(try cache.string(40) == "FORTY")
            // Full (capacity 4): the least recently used goes, and is named.
            run = try cli("set", hex, "50", "fifty")
            #expect(run.status == 0)
            #expect(run.output.contains("(evicted 10)"), "\(run.output)")
            #expect(try cache.contains(10) == false)

            // dump, both ways: most recent first, and its reverse.
            run = try cli("dump", hex)
            #expect(run.status == 0)
            #expect(run.output.hasPrefix("{\"key\":\"\(hex)\""))
            let forward = dumpedHashes(run.output)
            #expect(forward == [50, 40, 30, 20])
            run = try cli("dump", hex, "--backwards")
            #expect(dumpedHashes(run.output) == forward.reversed())
            #expect(run.output.contains("\"order\":\"leastRecentFirst\""))

            // stat
            run = try cli("stat", hex)
            #expect(run.status == 0, "\(run.errorOutput)")
            let stat = fields(run.output)
            #expect(stat["key"] == hex)
            #expect(stat["records"] == "4 of 4 (0 free)")
            #expect(stat["record size"] == "32 bytes")
            #expect(stat["index"] == "shared")
            #expect(stat["policy"] == "lru")
            #expect(stat["attached"] == "1 process(es) besides this one")  // this test
            #expect(stat["inserts"] == "5")
            #expect(stat["updates"] == "1")
            #expect(stat["evictions"] == "1")

            // verify
            run = try cli("verify", hex)
            #expect(run.status == 0)
            #expect(run.output.hasPrefix("clean: 4 live"))

            // list: our cache, with its figures.
            run = try cli("list")
            #expect(run.status == 0)
            let row = run.output.split(separator: "\n").first { $0.hasPrefix(hex + " ") }
            let columns = row.map { $0.split(separator: " ").map(String.init) }
            #expect(columns?[2] == String(cache.region.byteCount))
            #expect(Array(columns?[3...7] ?? []) == ["4", "4", "32", "shared", "1"])

            // del
            run = try cli("del", hex, "30")
            #expect(run.status == 0)
            #expect(run.output == "deleted 30\n")
            #expect(try cache.contains(30) == false)

            // evict: everything used before now, at most 1, then the rest.
            run = try cli("evict", hex, "--older-than", "0", "--max", "1")
            #expect(run.status == 0, "\(run.errorOutput)")
            #expect(run.output == "evicted 1: 20\n")
            run = try cli("evict", hex, "--older-than", "3600")
            #expect(run.output == "evicted 0\n", "nothing is an hour old")
            run = try cli("evict", hex, "--older-than", "0")
            #expect(run.output == "evicted 2: 40 50\n")
            #expect(cache.count == 0)
            #expect(try cache.verify().isClean)

            // rm: the key is free at once; this process stays attached.
            run = try cli("rm", hex)
            #expect(run.status == 0)
            #expect(run.output == "removed \(hex) (1 process(es) still attached: the memory goes when they detach)\n")
            #expect(!ShmRegion.exists(key: key))
        }
    }

    @Test func missesAndOversizedValues() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 8, capacity: 2)
            try cache.set(1, "one")
            var run = try cli("get", key.description, "2")
            #expect(run.status == 1)
            #expect(run.errorOutput == "shm-lru: hash 2 is not in cache \(key)\n")
            run = try cli("del", key.description, "2")
            #expect(run.status == 1)
            #expect(run.errorOutput.contains("hash 2 is not in cache"))
            run = try cli("set", key.description, "3", "123456789")
            #expect(run.status == 5)
            #expect(run.errorOutput.contains("valueTooLarge"))
            #expect(try cache.contains(3) == false)
            #expect(cache.count == 1)
        }
    }

    @Test func createAndRemove() throws {
        try withKey { key in
            var run = try cli("create", key.description, "--record-size", "100", "--capacity", "10", "--index", "processLocal")
            #expect(run.status == 0, "\(run.errorOutput)")
            let summary = try ShmLRU.probe(key: key)
            #expect(summary.capacity == 10 && summary.recordSize == 100 && summary.indexKind == .processLocal)
            #expect(summary.attachCount == 0, "persistent, nobody attached")
            run = try cli("create", key.description, "--record-size", "100", "--capacity", "10")
            #expect(run.status == 5)
            #expect(run.errorOutput.contains("a segment with key \(key) already exists"))
            run = try cli("rm", key.description)
            #expect(run.output == "removed \(key)\n")
            #expect(!ShmRegion.exists(key: key))
            run = try cli("create", key.description, "--record-size", "100", "--capacity", "10", "--policy", "s3fifo")
            #expect(run.status == 0, "\(run.errorOutput)")
            #expect(fields(try cli("stat", key.description).output)["policy"] == "s3fifo")
            let peer = try ShmLRU.attach(key: key)
            #expect(peer.policy == .s3fifo)
            _ = try peer.detach()
            run = try cli("rm", key.description)
            #expect(!ShmRegion.exists(key: key))
        }
    }

    @Test func aMissingKeyFailsClearly() throws {
        let key = uniqueKey()
        let invocations: [[String]] = [
            ["stat"], ["dump"], ["dump", "--backwards"], ["verify"], ["get", "1"], ["set", "1", "x"], ["del", "1"],
            ["evict", "--older-than", "1"], ["rm"],
        ]
        for invocation in invocations {
            let arguments = [invocation[0], key.description] + invocation.dropFirst()
            let run = try runProduct("shm-lru", arguments)
            #expect(run.status == 2, "\(arguments): \(run.status) \(run.errorOutput)")
            #expect(run.errorOutput == "shm-lru: no segment with key \(key) (see `shm-lru list` or `ipcs -m`)\n")
            #expect(run.output.isEmpty)
        }
        #expect(!ShmRegion.exists(key: key))
    }

    @Test func aForeignSegmentIsReportedAndNeverWritten() throws {
        try withKey { key in
            let (region, before) = try makeForeignSegment(key)
            let invocations: [[String]] = [
                ["stat"], ["dump"], ["verify"], ["get", "1"], ["set", "1", "x"], ["del", "1"],
                ["evict", "--older-than", "0"], ["rm"],
            ]
            for invocation in invocations {
                let arguments = [invocation[0], key.description] + invocation.dropFirst()
                let run = try runProduct("shm-lru", arguments)
                #expect(run.status == 3, "\(arguments): \(run.status) \(run.errorOutput)")
                #expect(run.errorOutput.hasPrefix("shm-lru: segment \(key) is not a ShmLRU cache"), "\(run.errorOutput)")
            }
            #expect(region.withUnsafeBytes { Array($0) } == before, "a command wrote into the foreign segment")
            #expect(ShmRegion.exists(key: key), "rm without --force removed it")

            var run = try cli("list")
            #expect(run.status == 0)
            #expect(!run.output.contains(key.description + " "))
            run = try cli("list", "--all")
            #expect(run.status == 0)
            let row = run.output.split(separator: "\n").first { $0.hasPrefix(key.description + " ") }
            #expect(row?.hasSuffix("not ShmLRU") == true, "\(run.output)")

            run = try cli("rm", key.description, "--force")
            #expect(run.status == 0, "\(run.errorOutput)")
            #expect(!ShmRegion.exists(key: key))
        }
    }

    @Test func aZeroFilledSegmentAndADamagedHeader() throws {
        // A plain region (zeros: no cache was ever laid out) is reported at once.
        try withKey { key in
            _ = try ShmRegion.create(key: key, byteCount: 4096)
            let run = try cli("get", key.description, "1")
            #expect(run.status == 3)
            #expect(run.errorOutput.contains("no ShmLRU cache was initialized"))
        }
        // A ShmLRU header whose capacity was overwritten: reported, not trusted.
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 4)
            try cache.region.withUnsafeMutableBytes { bytes in
                bytes.storeBytes(of: UInt32(1_000_000), toByteOffset: _Layout.H.capacity, as: UInt32.self)
            }
            for arguments in [["stat", key.description], ["get", key.description, "1"], ["rm", key.description]] {
                let run = try runProduct("shm-lru", arguments)
                #expect(run.status == 3, "\(arguments): \(run.errorOutput)")
                #expect(run.errorOutput.contains("has a damaged ShmLRU header"), "\(run.errorOutput)")
            }
            let list = try cli("list", "--all")
            #expect(list.status == 0)
            #expect(list.output.contains("damaged ShmLRU header"))
            #expect(ShmRegion.exists(key: key))
        }
    }

    @Test(arguments: [
        ["stat"], ["stat", "0"], ["stat", "zz"], ["stat", "0x1ffffffff"], ["get", "0x10"], ["get", "0x10", "-1"],
        ["get", "0x10", "4294967296"], ["set", "0x10", "1"], ["evict", "0x10"], ["evict", "0x10", "--older-than", "-1"],
        ["evict", "0x10", "--older-than", "nan"], ["evict", "0x10", "--older-than", "1", "--max", "-2"],
        ["create", "0x10", "--record-size", "0", "--capacity", "1"],
        ["create", "0x10", "--record-size", "1", "--capacity", "1", "--index", "tree"], ["frobnicate"],
        ["create", "0x10", "--record-size", "1", "--capacity", "1", "--policy", "mru"],
        ["list", "extra"],
    ])
    func badArgumentsExit64(_ arguments: [String]) throws {
        let run = try runProduct("shm-lru", arguments)
        #expect(run.status == 64, "\(arguments): \(run.status) \(run.errorOutput)")
        #expect(run.errorOutput.contains("Error:") || run.errorOutput.contains("Usage:"), "\(run.errorOutput)")
        #expect(!ShmRegion.exists(key: 0x10) || arguments[0] != "create")
    }
}
#endif  // CLI
