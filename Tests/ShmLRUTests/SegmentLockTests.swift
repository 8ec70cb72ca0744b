import CShm
import Glibc
import ShmLRU
import ShmLRUTestSupport
import Testing

/// The cache's lock (`_SegmentLock`: an owner word with the holder's thread id
/// and start time). A holder SIGKILLed at each of the lock's own steps is
/// recovered by the next locker; a stopped holder makes lockers throw
/// `.lockTimeout`; an owner word naming no live thread (forged, or a dead
/// process's) is taken over and repaired, one naming a live process that does
/// not hold it is a typed timeout until that process is gone.
@Suite(.serialized) struct SegmentLockTests {
    static let lockWordOffset = 64

    /// A cache with hashes 1...4 (version 1) and the context for messages.
    func prefilled(_ key: ShmKey, lockTimeout: Duration = .seconds(10)) throws -> ShmLRU {
        let cache = try ShmLRU.create(key: key, recordSize: 64, capacity: 8, options: .init(lockTimeout: lockTimeout))
        for hash in UInt32(1)...4 { try cache.set(hash, encodeValue(hash: hash, version: 1, length: 20 + Int(hash))) }
        return cache
    }

    /// Every prefilled value is there, whole; `extra` may hold one of `versions`.
    func expectIntact(_ cache: ShmLRU, extra: UInt32 = 100, versions: Set<UInt32?>, _ context: String) throws {
        #expect(try cache.verify().isClean, "\(context)")
        for hash in UInt32(1)...4 {
            #expect(try cache.bytes(hash).flatMap { decodeValue($0, hash: hash) } == 1, "\(context): hash \(hash)")
        }
        let version = try cache.bytes(extra).map { decodeValue($0, hash: extra) ?? 0xDEAD }
        #expect(versions.contains(version), "\(context): hash \(extra) holds \(String(describing: version))")
    }

    func killedSet(_ key: ShmKey, at point: String, version: UInt32 = 7) throws {
        let run = try runHelper(["rel-op", key.description, "\(point)@1", "set", "100", String(version), "40"])
        try #require(run.status == 128 + SIGKILL, "\(point): not killed (status \(run.status)) \(run.output) \(run.errorOutput)")
    }

    func forgeOwner(_ cache: ShmLRU, _ word: UInt64) throws {
        try cache.region.withUnsafeMutableBytes { $0.storeBytes(of: word, toByteOffset: Self.lockWordOffset, as: UInt64.self) }
    }

    func ownerWord(_ cache: ShmLRU) throws -> UInt64 {
        cache.region.withUnsafeBytes { $0.load(fromByteOffset: Self.lockWordOffset, as: UInt64.self) }
    }

    /// Killed right after its compare-and-swap took the lock: the next locker
    /// finds the owner dead, takes over and rebuilds.
    @Test func holderKilledRightAfterAcquiringIsRecovered() throws {
        try withKey { key in
            let cache = try prefilled(key)
            try killedSet(key, at: "lock.acquired")
            #expect(try ownerWord(cache) != 0, "the dead holder's word stays until someone takes it over")
            let before = cache.stats.recoveries
            try cache.set(5, encodeValue(hash: 5, version: 1, length: 30))
            #expect(cache.stats.recoveries == before + 1)
            try expectIntact(cache, versions: [nil], "lock.acquired")
            #expect(try ownerWord(cache) == 0)
        }
    }

    /// Killed after its unlock cleared the word, before waking sleepers: the
    /// operation is complete and nothing needs repair.
    @Test func holderKilledWhileReleasingLeavesTheLockFree() throws {
        try withKey { key in
            let cache = try prefilled(key)
            let before = cache.stats.recoveries
            try killedSet(key, at: "lock.releasing")
            #expect(try ownerWord(cache) == 0)
            try cache.set(5, encodeValue(hash: 5, version: 1, length: 30))
            #expect(cache.stats.recoveries == before)
            try expectIntact(cache, versions: [7], "lock.releasing")
        }
    }

    /// A locker that took the lock over from a dead owner and died before
    /// repairing: the next one takes over again and repairs.
    @Test func lockerKilledAfterTakingOverIsRecovered() throws {
        try withKey { key in
            let cache = try prefilled(key)
            try killedSet(key, at: "lock.acquired")
            let before = cache.stats.recoveries
            try killedSet(key, at: "lock.takenOver", version: 8)
            #expect(cache.stats.recoveries == before, "the victim died before its repair")
            try cache.set(5, encodeValue(hash: 5, version: 1, length: 30))
            #expect(cache.stats.recoveries == before + 1)
            try expectIntact(cache, versions: [nil], "lock.takenOver")
        }
    }

    /// A waiter killed asleep (waiters bit set) blocks no one: once the live
    /// holder is gone too, the next locker recovers.
    @Test func waiterKilledWhileWaitingBlocksNoOne() throws {
        try withKey { key in
            let cache = try prefilled(key, lockTimeout: .seconds(10))
            let holder = try spawnHelper(["lru-hold-lock", key.description, "1"])
            defer {
                holder.kill(SIGKILL)
                _ = holder.wait()
            }
            try #require(waitReady(holder))
            try killedSet(key, at: "lock.waiting")
            #expect(try ownerWord(cache) & (1 << 31) != 0, "the victim set the waiters bit before sleeping")
            holder.kill(SIGKILL)
            #expect(holder.wait().status == 128 + SIGKILL)
            let before = cache.stats.recoveries
            try cache.set(5, encodeValue(hash: 5, version: 1, length: 30))
            #expect(cache.stats.recoveries == before + 1)
            try expectIntact(cache, versions: [nil], "lock.waiting")
        }
    }

    /// A stopped holder is alive: lockers throw `.lockTimeout` (they do not take it
    /// over); lock-free reads still answer. Killed, it is recovered.
    @Test func stoppedHolderCostsTheTimeoutThenIsRecoveredWhenKilled() throws {
        try withKey { key in
            let cache = try prefilled(key, lockTimeout: .milliseconds(100))
            let fast = try ShmLRU.attach(key: key, options: .init(promotion: .atMostEvery(.seconds(600))))
            let holder = try spawnHelper(["lru-hold-lock", key.description, "1"])
            defer {
                holder.kill(SIGKILL)
                _ = holder.wait()
            }
            try #require(waitReady(holder))
            holder.kill(SIGSTOP)
            expectShmError(.lockTimeout) { try cache.set(5, "five") }
            expectShmError(.lockTimeout) { _ = try cache.bytes(2) }
            #expect(try fast.bytes(2).flatMap { decodeValue($0, hash: 2) } == 1)
            holder.kill(SIGKILL)
            #expect(holder.wait().status == 128 + SIGKILL)
            let before = cache.stats.recoveries
            try cache.set(100, encodeValue(hash: 100, version: 3, length: 30))
            #expect(cache.stats.recoveries == before + 1)
            try expectIntact(cache, versions: [3], "stopped holder")
        }
    }

    /// Owner words that name no thread (0x7ffffffe, bit 30 set, thread id 0) or a
    /// process that has exited: the next locker takes over and repairs.
    @Test(arguments: [UInt64(0x7FFF_FFFE), 0x4000_0001, 0xFFFF_FFFF_FFFF_FFFF, 0x1234_5678_0000_0000])
    func forgedOwnerNamingNoThreadIsRecovered(word: UInt64) throws {
        try withKey { key in
            let cache = try prefilled(key)
            try forgeOwner(cache, word)
            let before = cache.stats.recoveries
            try cache.set(100, encodeValue(hash: 100, version: 2, length: 30))
            #expect(cache.stats.recoveries == before + 1)
            try expectIntact(cache, versions: [2], "forged 0x\(String(word, radix: 16))")
        }
    }

    @Test func ownerThatExitedIsRecovered() throws {
        try withKey { key in
            let cache = try prefilled(key)
            let gone = try spawnHelper(["lru-get", key.description, "1"])
            let pid = UInt64(UInt32(bitPattern: gone.pid))
            #expect(gone.wait().status == 0)
            try forgeOwner(cache, pid)  // no start time: the process is gone anyway
            let before = cache.stats.recoveries
            #expect(try cache.bytes(1).flatMap { decodeValue($0, hash: 1) } == 1)
            #expect(cache.stats.recoveries == before + 1)
            try expectIntact(cache, versions: [nil], "exited owner")
        }
    }

    /// A word naming a live process that does not hold the lock (a hostile peer
    /// could write one): a clear `.lockTimeout`, not a hang; recovered once that
    /// process is gone. The same process, named with another start time (its
    /// id reused), or with none (a forged "thread N"), is not it: recovered at
    /// once. Named with the "unknown" start time (a holder that could not read
    /// its own), it is taken for alive while it exists: a timeout, never a
    /// takeover (issue 24).
    @Test func forgedOwnerNamingALiveProcess() throws {
        try withKey { key in
            let cache = try prefilled(key, lockTimeout: .milliseconds(50))
            let sleeper = try spawnHelper(["region-hold", key.description])  // alive, never locks
            defer {
                sleeper.kill(SIGKILL)
                _ = sleeper.wait()
            }
            try #require(waitReady(sleeper))
            let pid = UInt64(UInt32(bitPattern: sleeper.pid))
            let start = try #require(procStartTicks(sleeper.pid), "no /proc entry for the sleeper")
            let exact = UInt64(UInt32(truncatingIfNeeded: start)) << 32 | pid
            try forgeOwner(cache, exact)
            let error = expectShmError(.lockTimeout) { try cache.set(5, "five") }
            #expect(error?.detail?.contains("\(pid)") == true, "the error names the holder: \(String(describing: error))")
            #expect(try ownerWord(cache) & ~(1 << 31) == exact, "the waiter only added the waiters bit")
            // Another start time (its id reused), or none (a forged "thread N"): not the holder.
            var recoveries = cache.stats.recoveries
            for word in [UInt64(UInt32(truncatingIfNeeded: start &+ 1)) << 32 | pid, pid, 1] {
                try forgeOwner(cache, word)
                try cache.set(100, encodeValue(hash: 100, version: 4, length: 30))
                recoveries += 1
                #expect(cache.stats.recoveries == recoveries, "word 0x\(String(word, radix: 16))")
            }
            // The unknown start time: alive while it exists.
            try forgeOwner(cache, 0xFFFF_FFFF << 32 | pid)
            expectShmError(.lockTimeout) { try cache.set(5, "five") }
            #expect(cache.stats.recoveries == recoveries, "the unknown start time naming a live process")
            // The live process's exact word again; it exits: recovered.
            try forgeOwner(cache, exact)
            expectShmError(.lockTimeout) { _ = try cache.bytes(1) }
            sleeper.kill(SIGKILL)
            _ = sleeper.wait()
            try expectIntact(cache, versions: [4], "live then gone")
        }
    }

    /// A holder that cannot read its own start time records 0 in the owner
    /// word; while it runs, lockers must time out, never take the lock over
    /// (issue 24, item 1: a takeover let a second process into the structure,
    /// and changed the value lent to the holder). Killed, it is recovered.
    func expectLiveBlindHolderIsNeverRobbed(_ mode: String) throws {
        try withKey { key in
            let cache = try prefilled(key, lockTimeout: .milliseconds(200))
            let holder = try spawnHelper(["lru-hold-lock-blind", key.description, "2", mode])
            defer {
                holder.kill(SIGKILL)
                _ = holder.wait()
            }
            var values: [String: String] = [:]
            while values["ready"] == nil, let line = holder.readLine() {
                if let eq = line.firstIndex(of: "=") { values[String(line[..<eq])] = String(line[line.index(after: eq)...]) }
            }
            try #require(values["ready"] == "1", "the holder did not take the lock: \(values) \(holder.wait().errorOutput)")
            try #require(values["procReadable"] == "0", "\(mode): the holder could read /proc, nothing tested")
            let word = try ownerWord(cache)
            #expect(word & Self._tidMask == UInt64(UInt32(bitPattern: holder.pid)), "the word names the holder")
            #expect(word >> 32 == 0xFFFF_FFFF, "\(mode): the holder marked its start time unknown")
            let before = cache.stats.recoveries
            expectShmError(.lockTimeout, "\(mode): a live holder was robbed") {
                try cache.set(2, encodeValue(hash: 2, version: 9, length: 22))
            }
            expectShmError(.lockTimeout, "\(mode)") { try cache.set(100, encodeValue(hash: 100, version: 9, length: 30)) }
            #expect(cache.stats.recoveries == before, "\(mode): a live holder was taken over")
            #expect(try ownerWord(cache) & ~(1 << 31) == word, "\(mode): the holder still owns the lock")
            holder.kill(SIGKILL)
            #expect(holder.wait().status == 128 + SIGKILL)
            try cache.set(100, encodeValue(hash: 100, version: 3, length: 30))
            #expect(cache.stats.recoveries == before + 1, "\(mode): the dead holder is recovered")
            try expectIntact(cache, versions: [3], mode)
        }
    }

    static let _tidMask: UInt64 = 0x3FFF_FFFF

    @Test func liveHolderAtItsFdLimitIsNeverRobbed() throws {
        try expectLiveBlindHolderIsNeverRobbed("fd-limit")
    }

    /// The holder's /proc is an empty tmpfs (a mount namespace of its own: root only).
    @Test(.enabled(if: getuid() == 0, "mounting over /proc needs root"))
    func liveHolderThatCannotSeeProcIsNeverRobbed() throws {
        try expectLiveBlindHolderIsNeverRobbed("no-proc")
    }

    /// Item 8: a process whose first /proc read fails (no descriptor left) does
    /// not keep start time 0 for good: it reads it again once it can.
    @Test func processIdentityNeverCachesAnUnknownStartTime() throws {
        let run = try runHelper(["identity-at-fd-limit"])
        try #require(run.status == 0, "\(run.output) \(run.errorOutput)")
        let values = run.values
        try #require(values["first"] == "0", "the first read succeeded at the fd limit, nothing tested: \(values)")
        #expect(values["after"] != "0", "start time 0 was cached: \(values)")
        #expect(values["after"] == values["actual"], "\(values)")
    }

    func waitReady(_ process: SpawnedProcess) -> Bool {
        while let line = process.readLine() { if line == "ready=1" { return true } }
        return false
    }
}
