import Foundation
import Glibc
import ShmLRU
import ShmLRUTestSupport
import Testing

/// Issue 3, across processes: several real processes hammer one segment at once;
/// afterwards the structure verifies clean and every record holds a whole value
/// that one of them wrote for that hash.
@Suite struct LRUMultiProcessTests {
    struct Config: Sendable, CustomTestStringConvertible {
        var index: ShmLRU.IndexKind
        /// 0: exact LRU (every read locks); else the promotion interval in ms (lock-free reads).
        var intervalMs: Int
        /// The segment's eviction policy (the helpers attach with the segment's).
        var policy: ShmLRU.EvictionPolicy = .lru
        var testDescription: String { "\(policy) \(index) \(intervalMs == 0 ? "onEveryRead" : "atMostEvery(\(intervalMs) ms)")" }
    }

    static let processes = 4
    static let operations = 50_000
    static let hashes: UInt32 = 200

    /// The (hash, version, length) of every value `lru-hammer SEED` writes: the
    /// test's replay of the helper's generator (same draws, same order).
    static func writes(seed: UInt64, operations: Int, hashes: UInt32, recordSize: Int) -> Set<[UInt32]> {
        var random = SplitMix64(seed: seed)
        var result = Set<[UInt32]>()
        for step in 0..<operations {
            let hash = UInt32.random(in: 0..<hashes, using: &random)
            if Int.random(in: 0..<10, using: &random) < 4 {
                let length = Int.random(in: 12...recordSize, using: &random)
                result.insert([hash, UInt32(truncatingIfNeeded: seed &* 1_000_003 &+ UInt64(step)), UInt32(length)])
            }
        }
        return result
    }

    @Test(arguments: [
        Config(index: .shared, intervalMs: 0), Config(index: .shared, intervalMs: 1), Config(index: .processLocal, intervalMs: 0),
        Config(index: .shared, intervalMs: 0, policy: .sieve), Config(index: .shared, intervalMs: 1, policy: .s3fifo),
        Config(index: .processLocal, intervalMs: 0, policy: .s3fifo),
    ])
    func hammeringProcessesNeverCorruptTheCache(_ config: Config) throws {
        try withKey { key in
            let recordSize = 48
            let cache = try ShmLRU.create(
                key: key, recordSize: recordSize, capacity: 64, index: config.index, options: ShmLRU.Options(policy: config.policy))
            let seeds = (0..<Self.processes).map { UInt64(1_000 + $0) + UInt64(config.intervalMs) * 100 }
            var children: [SpawnedProcess] = []
            for seed in seeds {
                var arguments = ["lru-hammer", key.description, String(seed), String(Self.operations), String(Self.hashes)]
                if config.intervalMs > 0 { arguments.append(String(config.intervalMs)) }
                children.append(try spawnHelper(arguments))
            }
            // This process reads meanwhile: every hit is a whole value for its hash.
            var random = SplitMix64(seed: 99)
            var localHits = 0
            for _ in 0..<3_000 {
                let hash = UInt32.random(in: 0..<Self.hashes, using: &random)
                if config.index == .processLocal, Int.random(in: 0..<50, using: &random) == 0 { try cache.reloadIndex() }
                if let bytes = try cache.bytes(hash) {
                    #expect(decodeValue(bytes, hash: hash) != nil, "torn or foreign value for \(hash)")
                    localHits += 1
                }
            }
            var sets = 0, deletes = 0, hits = 0
            for child in children {
                let run = child.wait()
                #expect(run.status == 0, "\(config.testDescription): \(run.errorOutput)")
                sets += Int(run.values["sets"] ?? "") ?? 0
                deletes += Int(run.values["deletes"] ?? "") ?? 0
                hits += Int(run.values["hits"] ?? "") ?? 0
            }
            #expect(sets > Self.processes * Self.operations / 3)
            #expect(deletes > 100)
            #expect(hits > 1_000, "the processes read each other's values")

            let report = try cache.verify()
            #expect(report.isClean, "\(config.testDescription): \(report)")
            let stats = cache.stats
            #expect(stats.inserts + stats.updates == UInt64(sets), "every set is counted once")
            #expect(stats.deletes == UInt64(deletes))
            #expect(stats.inserts &- stats.deletes &- stats.evictions == UInt64(stats.count))
            #expect(stats.recoveries == 0)
            #expect(stats.evictions > 0, "the cache was full")

            // Every record holds a value some process wrote for that hash, whole.
            var written = Set<[UInt32]>()
            for seed in seeds {
                written.formUnion(Self.writes(seed: seed, operations: Self.operations, hashes: Self.hashes, recordSize: recordSize))
            }
            let json = try cache.dumpJSON()
            let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
            let records = try #require(object["records"] as? [[String: Any]])
            #expect(records.count == cache.count)
            #expect(records.count > 0)
            var seen = Set<UInt32>()
            for record in records {
                let hash = try #require((record["hash"] as? NSNumber)?.uint32Value)
                let bytes: [UInt8]
                if let hex = record["valueHex"] as? String {
                    let digits = Array(hex.utf8)
                    bytes = stride(from: 0, to: digits.count, by: 2).map { UInt8(String(decoding: digits[$0..<$0 + 2], as: UTF8.self), radix: 16)! }
                } else {
                    bytes = Array(try #require(record["value"] as? String).utf8)
                }
                let version = decodeValue(bytes, hash: hash)
                #expect(version != nil, "record for \(hash) is not a whole value for it")
                if let version {
                    #expect(written.contains([hash, version, UInt32(bytes.count)]), "\(hash) v\(version) was never written")
                }
                if config.index == .shared { #expect(seen.insert(hash).inserted, "hash \(hash) twice") }
            }
            // Reads through the index agree with the records.
            if config.index == .processLocal { try cache.reloadIndex() }
            for hash in 0..<Self.hashes {
                if let bytes = try cache.bytes(hash) { #expect(decodeValue(bytes, hash: hash) != nil) }
            }
            _ = localHits
        }
    }
}

/// The lock is process-shared and robust: a holder makes others time out (a typed
/// error, not a hang); a holder killed with SIGKILL does not block anyone.
@Suite struct LRULockTests {
    @Test func aKilledLockHolderBlocksNoOne() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 8, options: .init(lockTimeout: .milliseconds(200)))
            try cache.set(1, "one")
            try cache.set(2, "two")
            let fast = try ShmLRU.attach(key: key, options: .init(promotion: .atMostEvery(.seconds(600))))
            let holder = try spawnHelper(["lru-hold-lock", key.description, "1"])
            defer {
                holder.kill(SIGKILL)
                _ = holder.wait()
            }
            var ready = false
            while let line = holder.readLine() {
                if line == "ready=1" {
                    ready = true
                    break
                }
            }
            try #require(ready)
            // Held by a live process: a typed timeout, and nothing changed.
            expectShmError(.lockTimeout) { try cache.set(3, "three") }
            expectShmError(.lockTimeout) { _ = try cache.bytes(2) }
            // Reads that take no lock still answer.
            #expect(try fast.string(2) == "two")
            #expect(cache.count == 2)
            // The holder dies holding it: the next locker gets it (EOWNERDEAD), repairs, goes on.
            holder.kill(SIGKILL)
            #expect(holder.wait().status == 128 + SIGKILL)
            try cache.set(3, "three")
            #expect(cache.stats.recoveries == 1)
            #expect(try cache.string(1) == "one")
            #expect(try cache.string(2) == "two")
            #expect(try cache.string(3) == "three")
            #expect(try cache.verify().isClean)
            // And it is an ordinary lock again.
            let peer = try runHelper(["lru-script", key.description, "set:4:four", "get:1"])
            #expect(peer.values["get.1"] == "one", "\(peer.errorOutput)")
            #expect(cache.stats.recoveries == 1)
        }
    }
}

/// Last-use times come from one machine-wide clock: a record written by another
/// process is stamped between this process's readings before and after.
@Suite struct LRUTimestampTests {
    @Test func timestampsAreComparableAcrossProcesses() throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 16, capacity: 8)
            try cache.set(1, "mine, older")
            let before = ShmInstant.now
            let run = try runHelper(["lru-script", key.description, "set:2:theirs"])
            #expect(run.status == 0, "\(run.errorOutput)")
            let after = ShmInstant.now
            try cache.set(3, "mine, newer")
            let stamp = try #require(try cache.lastUsed(2))
            #expect(before <= stamp && stamp <= after)
            #expect(try cache.lastUsed(1)! <= before)
            #expect(try cache.lastUsed(3)! >= after)
            // A cutoff taken here evicts what the peer used before it, and nothing newer.
            #expect(try cache.evict(lastUsedBefore: after) == [1, 2])
            #expect(try cache.string(3) == "mine, newer")
            // Ages: nothing is an hour old; everything is at least 0 old.
            #expect(try cache.evict(olderThan: .seconds(3600)) == [])
            #expect(try cache.evict(olderThan: .zero) == [3])
        }
    }

    @Test func instantArithmetic() {
        let t = ShmInstant(nanoseconds: 5_000)
        #expect(t.advanced(by: .nanoseconds(10)).nanoseconds == 5_010)
        #expect(t.advanced(by: .seconds(-1)).nanoseconds == 0, "clamped at the clock's start")
        #expect(ShmInstant(nanoseconds: .max - 1).advanced(by: .seconds(1)).nanoseconds == .max, "clamped at its end")
        #expect(t.advanced(by: .zero) == t)
        #expect(ShmInstant(nanoseconds: 1) < t)
        #expect(ShmInstant.now > ShmInstant(nanoseconds: 0))
    }
}
