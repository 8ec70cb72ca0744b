import CShm
import Glibc
import ShmLRU
import ShmLRUTestSupport

/// Commands for fault injection, soak and corruption tests.
let reliabilityCommands: [String: HelperCommand] = [
    "rel-op": relOp,
    "rel-victim": relVictim,
    "rel-survivor": relSurvivor,
    "rel-soak": relSoak,
]

// MARK: - Shared pieces

/// Arms the library's kill points for this process (read when the first handle is made).
private func armFaults(_ spec: String) {
    if spec != "-" { setenv("SHMLRU_FAULT_INJECTION", spec, 1) }
}

/// A control region made by the test: word 0 = stop flag, word 1 = barrier
/// counter, words 2… = per-hash eviction counters (soak).
private struct Control {
    let region: ShmRegion
    let count: Int

    init(key: ShmKey) throws {
        region = try ShmRegion.attach(key: key)
        count = region.byteCount / 4
    }
    /// Lends the control words (the pointer stays inside `body`).
    private func withWords<R>(_ body: (UnsafeMutablePointer<UInt32>) -> R) -> R {
        do {
            return try region.withUnsafeMutableBytes { body($0.baseAddress!.assumingMemoryBound(to: UInt32.self)) }
        } catch {
            fatalError("control region: \(error)")
        }
    }
    var stopRequested: Bool { withWords { cshm_load_acquire_u32($0) != 0 } }
    func arriveAndWait(parties: UInt32, timeoutSeconds: UInt64) throws {
        withWords { _ = cshm_fetch_add_u32($0 + 1, 1) }
        let deadline = _monotonicNanoseconds() + timeoutSeconds * 1_000_000_000
        while withWords({ cshm_load_acquire_u32($0 + 1) }) < parties {
            guard _monotonicNanoseconds() < deadline else { throw HelperFailure(message: "barrier timed out") }
            usleep(1_000)
        }
    }
    func evictions(of hash: UInt32) -> UInt32 {
        let index = 2 + Int(hash)
        return index < count ? withWords { cshm_load_acquire_u32($0 + index) } : 0
    }
    /// Word 8: the victim is inside the lock (doing work in `withValue`).
    func setInsideLock(_ inside: Bool) {
        if count > 8 { withWords { cshm_store_release_u32($0 + 8, inside ? 1 : 0) } }
    }
    func countEviction(of hash: UInt32) {
        let index = 2 + Int(hash)
        if index < count { withWords { _ = cshm_fetch_add_u32($0 + index, 1) } }
    }
}

private func now() -> UInt64 { _monotonicNanoseconds() }

/// Checks a value read for `hash`: whole, for that hash (see `encodeValue`).
private func checkValue(_ bytes: [UInt8], hash: UInt32, _ context: String) throws -> UInt32 {
    guard let version = decodeValue(bytes, hash: hash) else {
        throw HelperFailure(message: "\(context): torn or foreign value for hash \(hash): \(bytes.prefix(16))")
    }
    return version
}

/// Checks a value read by offset: whole for whichever hash it names.
private func checkAnyValue(_ bytes: [UInt8], _ context: String) throws {
    guard bytes.count >= 12 else { throw HelperFailure(message: "\(context): short value \(bytes)") }
    let hash = UInt32(bytes[0]) | UInt32(bytes[1]) << 8 | UInt32(bytes[2]) << 16 | UInt32(bytes[3]) << 24
    _ = try checkValue(bytes, hash: hash, context)
}

// MARK: - rel-op: one operation, killed at a point

/// rel-op KEY SPEC OP [HASH VERSION LENGTH]
///
/// Arms SPEC (`point@n`, or `-`), attaches and runs one operation: `set` (HASH
/// VERSION LENGTH), `remove` (HASH), `evict` (up to 3 records used before now),
/// `repair`, `attach` (nothing more: a process-local attach rebuilds its map).
/// Exits 0 with `survived=1` if the point was not reached.
func relOp(_ arguments: [String]) throws {
    let key = try keyArgument(arguments, 0)
    armFaults(try argument(arguments, 1, "SPEC"))
    let operation = try argument(arguments, 2, "OP")
    let cache = try ShmLRU.attach(key: key)
    switch operation {
    case "set":
        let hash: UInt32 = try intArgument(arguments, 3, "HASH", as: UInt32.self)
        let version: UInt32 = try intArgument(arguments, 4, "VERSION", as: UInt32.self)
        let length: Int = try intArgument(arguments, 5, "LENGTH")
        try cache.set(hash, encodeValue(hash: hash, version: version, length: length))
    case "remove":
        try cache.remove(try intArgument(arguments, 3, "HASH", as: UInt32.self))
    case "evict":
        try cache.evict(lastUsedBefore: .now, limit: 3)
    case "repair":
        try cache.repair()
    case "attach":
        break
    default:
        throw HelperFailure(message: "unknown op \(operation)")
    }
    emit("survived", 1)
}

// MARK: - rel-victim: hammer until killed

/// rel-victim KEY SPEC MODE SEED HASHES [CONTROL]
///
/// Arms SPEC (or `-` for none: the test kills it at a random time) and hammers
/// the cache until killed. MODE `mixed`: set / get / remove / evict / reload;
/// `locked`: the same, every other step replaced by a value checked 1000 times
/// inside `withValue` (under the lock: random-time kills land inside it), with
/// word 8 of CONTROL set while inside (the test kills it then);
/// `repair`: repair() in a loop (each completed one is printed, so the test
/// knows how many recoveries to expect). Every value read is checked whole.
/// Exits 3 if it was never killed.
func relVictim(_ arguments: [String]) throws {
    let key = try keyArgument(arguments, 0)
    armFaults(try argument(arguments, 1, "SPEC"))
    let mode = try argument(arguments, 2, "MODE")
    let seed: UInt64 = try intArgument(arguments, 3, "SEED", as: UInt64.self)
    let hashes: UInt32 = try intArgument(arguments, 4, "HASHES", as: UInt32.self)
    let cache = try ShmLRU.attach(key: key, options: ShmLRU.Options(lockTimeout: .seconds(5)))
    let control = arguments.count > 5 ? try Control(key: try keyArgument(arguments, 5)) : nil
    var random = SplitMix64(seed: seed)
    emit("ready", 1)
    for step in 0..<2_000_000 {
        if mode == "repair" {
            try cache.repair()
            emit("repaired", step + 1)
            continue
        }
        let hash = UInt32.random(in: 0..<hashes, using: &random)
        if mode == "locked", step % 2 == 0 {
            // Work inside the critical section (a value checked over and over under
            // the lock), so that a kill at a random time lands inside the lock most
            // of the time and the next locker has to recover.
            // Long enough (about a millisecond) that the peers' short operations,
            // which this process waits for outside the lock, are the smaller part.
            let whole = try cache.withValue(hash) { bytes -> Bool in
                control?.setInsideLock(true)
                defer { control?.setInsideLock(false) }
                let copy = Array(bytes)
                var whole = true
                for _ in 0..<1_000 { whole = whole && decodeValue(copy, hash: hash) != nil }
                return whole
            }
            if whole == false { throw HelperFailure(message: "victim: torn or foreign value for hash \(hash) under the lock") }
            if whole == nil, try cache.verify().isClean == false {  // a miss: walk the structure under the lock instead
                throw HelperFailure(message: "victim: verify() under the lock found problems")
            }
            continue
        }
        switch Int.random(in: 0..<100, using: &random) {
        case 0..<45:
            let length = Int.random(in: 12...cache.recordSize, using: &random)
            let version = UInt32(truncatingIfNeeded: seed &* 7_919 &+ UInt64(step))
            try cache.set(hash, encodeValue(hash: hash, version: version, length: length))
        case 45..<80:
            if let bytes = try cache.bytes(hash) { _ = try checkValue(bytes, hash: hash, "victim get") }
        case 80..<93:
            try cache.remove(hash)
        case 93..<97:
            // Cutoff `now`: the least recently used records are always candidates, so an
            // armed `evict.batch@n` is reached however fast the peers refresh records.
            try cache.evict(lastUsedBefore: .now, limit: 3)
        default:
            try cache.reloadIndex()
        }
    }
    emit("survived", 1)
    exit(3)
}

// MARK: - rel-survivor: keep working while peers die

/// rel-survivor KEY CONTROL SEED HASHES INTERVAL-MS
///
/// Hammers the cache until the control region's stop flag is set, checking
/// every value read and `verify()` every 100 operations. Measures how long each
/// operation took (lock wait included) and fails on a lock held for over 5 s.
func relSurvivor(_ arguments: [String]) throws {
    let key = try keyArgument(arguments, 0)
    let control = try Control(key: try keyArgument(arguments, 1))
    let seed: UInt64 = try intArgument(arguments, 2, "SEED", as: UInt64.self)
    let hashes: UInt32 = try intArgument(arguments, 3, "HASHES", as: UInt32.self)
    let intervalMs: Int = try intArgument(arguments, 4, "INTERVAL")
    let options = ShmLRU.Options(
        promotion: intervalMs > 0 ? .atMostEvery(.milliseconds(intervalMs)) : .onEveryRead, lockTimeout: .seconds(5))
    let cache = try ShmLRU.attach(key: key, options: options)
    var random = SplitMix64(seed: seed)
    var operations = 0, reads = 0, verifies = 0
    var maxOperationNs: UInt64 = 0, maxVerifyNs: UInt64 = 0
    emit("ready", 1)
    while !control.stopRequested {
        operations += 1
        let hash = UInt32.random(in: 0..<hashes, using: &random)
        let started = now()
        do {
            switch Int.random(in: 0..<100, using: &random) {
            case 0..<40:
                let length = Int.random(in: 12...cache.recordSize, using: &random)
                let version = UInt32(truncatingIfNeeded: seed &* 104_729 &+ UInt64(operations))
                try cache.set(hash, encodeValue(hash: hash, version: version, length: length))
            case 40..<85:
                if let bytes = try cache.bytes(hash) { _ = try checkValue(bytes, hash: hash, "survivor get") }
                reads += 1
            case 85..<95:
                try cache.remove(hash)
            case 95..<97:
                try cache.evict(lastUsedBefore: ShmInstant.now.advanced(by: .milliseconds(-5)), limit: 2)
            default:
                if cache.indexKind == .processLocal { try cache.reloadIndex() }
            }
        } catch let error as ShmError where error.code == .lockTimeout {
            throw HelperFailure(message: "lock unavailable for 5 s: \(error)")
        }
        maxOperationNs = max(maxOperationNs, now() - started)
        if operations % 100 == 0 {
            let verifyStarted = now()
            let report = try cache.verify()
            maxVerifyNs = max(maxVerifyNs, now() - verifyStarted)
            verifies += 1
            guard report.isClean else { throw HelperFailure(message: "verify after \(operations) ops: \(report)") }
        }
    }
    emit("operations", operations)
    emit("reads", reads)
    emit("verifies", verifies)
    emit("maxOperationUs", maxOperationNs / 1_000)
    emit("maxVerifyUs", maxVerifyNs / 1_000)
}

// MARK: - rel-soak: owned hash ranges, nothing lost but by eviction

/// rel-soak KEY CONTROL INDEX PROCESSES SECONDS HASHES-PER-PROCESS INTERVAL-MS
///
/// Process INDEX owns hashes INDEX*H ..< (INDEX+1)*H and is their only writer,
/// so it knows each one's last value. It runs mixed operations for SECONDS:
/// sets, gets of its own hashes (a hit must be exactly the last value written;
/// a miss of a hash it believes present must be explained by an eviction) and of
/// others' (whole values only), deletes, evict(lastUsedBefore:), reads by
/// offset, verify(). Every eviction it causes is counted per hash in the control
/// region. After a barrier (nobody writes any more) it checks that every hash it
/// believes present is there with its last value, or was evicted since its last set.
func relSoak(_ arguments: [String]) throws {
    let key = try keyArgument(arguments, 0)
    let control = try Control(key: try keyArgument(arguments, 1))
    let index: UInt32 = try intArgument(arguments, 2, "INDEX", as: UInt32.self)
    let processes: UInt32 = try intArgument(arguments, 3, "PROCESSES", as: UInt32.self)
    let seconds: UInt64 = try intArgument(arguments, 4, "SECONDS", as: UInt64.self)
    let perProcess: UInt32 = try intArgument(arguments, 5, "HASHES", as: UInt32.self)
    let intervalMs: Int = try intArgument(arguments, 6, "INTERVAL")
    let options = ShmLRU.Options(
        promotion: intervalMs > 0 ? .atMostEvery(.milliseconds(intervalMs)) : .onEveryRead, lockTimeout: .seconds(10))
    let cache = try ShmLRU.attach(key: key, options: options)
    let first = index * perProcess
    var random = SplitMix64(seed: 0x50AC_0000 &+ UInt64(index))
    var lastVersion = [UInt32?](repeating: nil, count: Int(perProcess))
    var evictionsAtSet = [UInt32](repeating: 0, count: Int(perProcess))
    var offsets = [Int?](repeating: nil, count: Int(perProcess))
    var unexplained: [(local: Int, evictionsAtSet: UInt32)] = []
    var operations = 0, sets = 0, ownHits = 0, ownMisses = 0, foreignReads = 0, deletes = 0, evictions = 0, verifies = 0
    var version: UInt32 = 0
    var busyMisses: UInt64 = 0

    func noteMiss(_ local: Int) {
        // A miss of a hash believed present: explained if it was evicted since its last set.
        if control.evictions(of: first + UInt32(local)) == evictionsAtSet[local] {
            unexplained.append((local, evictionsAtSet[local]))  // checked after the barrier
        }
        lastVersion[local] = nil
    }

    let end = now() + seconds * 1_000_000_000
    while operations % 64 != 0 || now() < end {
        operations += 1
        let local = Int.random(in: 0..<Int(perProcess), using: &random)
        let hash = first + UInt32(local)
        switch Int.random(in: 0..<100, using: &random) {
        case 0..<35:
            version &+= 1
            let length = Int.random(in: 12...cache.recordSize, using: &random)
            // Read before the set: a peer may evict (and count) the new value before
            // this process gets to run again after the set, and a count read then
            // would already include that eviction and hide it (the cause of a
            // "vanished without an eviction" seen under AddressSanitizer).
            let evictionsBefore = control.evictions(of: hash)
            let result = try cache.set(hash, encodeValue(hash: hash, version: version, length: length))
            if let evicted = result.evictedHash { control.countEviction(of: evicted) }
            lastVersion[local] = version
            evictionsAtSet[local] = evictionsBefore
            offsets[local] = result.offset
            sets += 1
        case 35..<60:
            if let bytes = try cache.bytes(hash) {
                let read = try checkValue(bytes, hash: hash, "soak own get")
                guard let expected = lastVersion[local] else {
                    throw HelperFailure(message: "hash \(hash) came back (version \(read)) after a delete or a miss")
                }
                guard read == expected else {
                    throw HelperFailure(message: "hash \(hash) holds version \(read); its only writer last wrote \(expected)")
                }
                ownHits += 1
            } else if cache.stats.busyMisses != busyMisses {
                // A lock-free read whose entry kept moving (a writer in its critical
                // section all along): a miss by contract, not a sign of absence.
                busyMisses = cache.stats.busyMisses
            } else {
                if lastVersion[local] != nil { noteMiss(local) }
                ownMisses += 1
            }
        case 60..<80:
            let other = UInt32.random(in: 0..<(processes * perProcess), using: &random)
            if let bytes = try cache.bytes(other) { _ = try checkValue(bytes, hash: other, "soak foreign get") }
            foreignReads += 1
        case 80..<88:
            let removed = try cache.remove(hash)
            if removed, lastVersion[local] == nil {
                throw HelperFailure(message: "deleted hash \(hash), which was deleted or missing before")
            }
            if !removed, lastVersion[local] != nil { noteMiss(local) }
            lastVersion[local] = nil
            deletes += 1
        case 88..<90:
            for evicted in try cache.evict(lastUsedBefore: ShmInstant.now.advanced(by: .milliseconds(-20)), limit: 4) {
                control.countEviction(of: evicted)
                evictions += 1
            }
        case 90..<95:
            if let offset = offsets[local] {
                do { try checkAnyValue(try cache.bytes(atOffset: offset), "soak get by offset") } catch let error as ShmError
                    where error.code == .alreadyDeleted
                {}
            }
        case 95..<99:
            _ = try cache.contains(hash)
            _ = try cache.lastUsed(hash)
            _ = cache.stats
        default:
            let report = try cache.verify()
            guard report.isClean else { throw HelperFailure(message: "verify during soak: \(report)") }
            verifies += 1
        }
    }

    // Nobody writes after this barrier: eviction counters are final.
    try control.arriveAndWait(parties: processes, timeoutSeconds: 300)
    for entry in unexplained where control.evictions(of: first + UInt32(entry.local)) == entry.evictionsAtSet {
        throw HelperFailure(message: "hash \(first + UInt32(entry.local)) vanished without an eviction")
    }
    var present = 0
    for local in 0..<Int(perProcess) {
        guard let expected = lastVersion[local] else { continue }
        let hash = first + UInt32(local)
        if let bytes = try cache.bytes(hash) {
            let read = try checkValue(bytes, hash: hash, "soak final read")
            guard read == expected else { throw HelperFailure(message: "final: hash \(hash) holds \(read), expected \(expected)") }
            present += 1
        } else if control.evictions(of: hash) == evictionsAtSet[local] {
            throw HelperFailure(message: "final: hash \(hash) (version \(expected)) vanished without an eviction")
        }
    }
    emit("operations", operations)
    emit("sets", sets)
    emit("ownHits", ownHits)
    emit("ownMisses", ownMisses)
    emit("foreignReads", foreignReads)
    emit("deletes", deletes)
    emit("evictCalls", evictions)
    emit("verifies", verifies)
    emit("busyMisses", cache.stats.busyMisses)
    emit("presentAtEnd", present)
}
