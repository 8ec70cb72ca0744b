import Glibc
import ShmLRU
import ShmLRUTestSupport

/// Every command, by name: each area keeps its own table in its own file.
let helperCommands: [String: HelperCommand] = coreCommands
    .merging(storeCommands) { first, _ in first }
    .merging(storeReadCommands) { first, _ in first }
    .merging(coordinationCommands) { first, _ in first }
    .merging(keyLockCommands) { first, _ in first }
    .merging(reliabilityCommands) { first, _ in first }
    .merging(exampleCommands) { first, _ in first }
    .merging(hardeningCommands) { first, _ in first }
    .merging(memoryCommands) { first, _ in first }
    .merging(snapshotCommands) { first, _ in first }
    .merging(livenessCommands) { first, _ in first }
    .merging(openCommands) { first, _ in first }
    .merging(livenessStressCommands) { first, _ in first }

/// Region and core LRU commands.
let coreCommands: [String: HelperCommand] = [
    "region-write-float": regionWriteFloat,
    "region-read-float": regionReadFloat,
    "lru-get": lruGet,
    "lru-set": lruSet,
    "lru-hammer": lruHammer,
    "region-create": regionCreate,
    "region-create-hold": regionCreateHold,
    "region-hold": regionHold,
    "region-attach-as-nobody": regionAttachAsNobody,
    "region-detach-counts": regionDetachCounts,
    "region-create-detach-exit": regionCreateDetachExit,
    "region-detach-all": regionDetachAll,
    "lru-script": lruScript,
    "lru-attach-rss": lruAttachRSS,
    "compat-worker": compatWorker,
    "lru-corrupt-fuzz": lruCorruptFuzz,
    "lru-hold-lock": lruHoldLock,
]

/// region-write-float KEY INDEX VALUE
func regionWriteFloat(_ arguments: [String]) throws {
    let region = try ShmRegion.attach(key: try keyArgument(arguments, 0))
    let index: Int = try intArgument(arguments, 1, "INDEX")
    guard let value = Float(try argument(arguments, 2, "VALUE")) else { throw HelperFailure(message: "bad VALUE") }
    try region.array(of: Float.self).setElement(value, at: index)
    emit("written", value)
}

/// region-read-float KEY INDEX
func regionReadFloat(_ arguments: [String]) throws {
    let region = try ShmRegion.attach(key: try keyArgument(arguments, 0), readOnly: true)
    let index: Int = try intArgument(arguments, 1, "INDEX")
    emit("value", try region.array(of: Float.self).element(at: index))
}

/// lru-get KEY HASH  → value=… or miss=1
func lruGet(_ arguments: [String]) throws {
    let cache = try ShmLRU.attach(key: try keyArgument(arguments, 0))
    let hash: UInt32 = try intArgument(arguments, 1, "HASH", as: UInt32.self)
    if let value = try cache.string(hash) { emit("value", value) } else { emit("miss", 1) }
}

/// lru-set KEY HASH VALUE  → offset=…
func lruSet(_ arguments: [String]) throws {
    let cache = try ShmLRU.attach(key: try keyArgument(arguments, 0))
    let hash: UInt32 = try intArgument(arguments, 1, "HASH", as: UInt32.self)
    emit("offset", try cache.set(hash, try argument(arguments, 2, "VALUE")).offset)
}

/// lru-hammer KEY SEED OPS HASHES [interval-ms]
///
/// Random set/get/delete over hashes 0..<HASHES, shared with other hammering
/// processes. Every value read must decode as a whole value for its hash
/// (never torn, never another key's). Prints counts.
func lruHammer(_ arguments: [String]) throws {
    let key = try keyArgument(arguments, 0)
    let seed: UInt64 = try intArgument(arguments, 1, "SEED", as: UInt64.self)
    let operations: Int = try intArgument(arguments, 2, "OPS")
    let hashes: UInt32 = try intArgument(arguments, 3, "HASHES", as: UInt32.self)
    let intervalMs: Int = arguments.count > 4 ? try intArgument(arguments, 4, "INTERVAL") : 0
    let options = ShmLRU.Options(promotion: intervalMs > 0 ? .atMostEvery(.milliseconds(intervalMs)) : .onEveryRead)
    let cache = try ShmLRU.attach(key: key, options: options)
    var random = SplitMix64(seed: seed)
    var sets = 0, hits = 0, misses = 0, deletes = 0
    let maxLength = cache.recordSize
    for step in 0..<operations {
        let hash = UInt32.random(in: 0..<hashes, using: &random)
        switch Int.random(in: 0..<10, using: &random) {
        case 0..<4:
            let length = Int.random(in: 12...maxLength, using: &random)
            try cache.set(hash, encodeValue(hash: hash, version: UInt32(truncatingIfNeeded: seed &* 1_000_003 &+ UInt64(step)), length: length))
            sets += 1
        case 4..<9:
            if let bytes = try cache.bytes(hash) {
                guard decodeValue(bytes, hash: hash) != nil else {
                    throw HelperFailure(message: "read a torn or foreign value for hash \(hash): \(bytes.prefix(16))")
                }
                hits += 1
            } else {
                misses += 1
            }
        default:
            if try cache.remove(hash) { deletes += 1 }
        }
    }
    emit("sets", sets)
    emit("hits", hits)
    emit("misses", misses)
    emit("deletes", deletes)
}

// MARK: Region lifecycle (RegionTests)

/// Blocks until the process is killed (the test sends SIGKILL).
func waitForever() -> Never {
    while true { pause() }
}

/// The code of a ShmError, or "none" when `body` succeeded.
func errorCode(_ body: () throws -> Void) -> String {
    do {
        try body()
        return "none"
    } catch let error as ShmError {
        return error.code.rawValue
    } catch {
        return "other:\(error)"
    }
}

/// region-create KEY BYTES [persistent]  → creates the segment and exits normally.
func regionCreate(_ arguments: [String]) throws {
    let key = try keyArgument(arguments, 0)
    let bytes: Int = try intArgument(arguments, 1, "BYTES")
    let persistent = arguments.count > 2 && arguments[2] == "persistent"
    let region = try ShmRegion.create(key: key, byteCount: bytes, persistent: persistent)
    emit("id", region.id)
}

/// region-create-hold KEY BYTES  → creates the segment, prints ready=1, waits to be killed.
func regionCreateHold(_ arguments: [String]) throws {
    let region = try ShmRegion.create(key: try keyArgument(arguments, 0), byteCount: try intArgument(arguments, 1, "BYTES"))
    emit("id", region.id)
    emit("ready", 1)
    withExtendedLifetime(region) { waitForever() }
}

/// region-hold KEY  → attaches, prints attachCount=… and ready=1, waits to be killed.
func regionHold(_ arguments: [String]) throws {
    let region = try ShmRegion.attach(key: try keyArgument(arguments, 0))
    emit("attachCount", try region.attachCount)
    emit("ready", 1)
    withExtendedLifetime(region) { waitForever() }
}

/// region-attach-as-nobody KEY  → drops to uid/gid 65534, then tries to attach
/// (read-write and read-only), to create the key, and to remove it; prints each error code.
func regionAttachAsNobody(_ arguments: [String]) throws {
    let key = try keyArgument(arguments, 0)
    guard setgid(65534) == 0, setuid(65534) == 0 else {
        throw HelperFailure(message: "setgid/setuid(65534) failed: errno \(errno)")
    }
    emit("uid", getuid())
    emit("attach", errorCode { _ = try ShmRegion.attach(key: key) })
    emit("attachReadOnly", errorCode { _ = try ShmRegion.attach(key: key, readOnly: true) })
    emit("lruAttach", errorCode { _ = try ShmLRU.attach(key: key) })
    emit("remove", errorCode { try ShmRegion.remove(key: key) })
    do {
        _ = try ShmRegion.attach(key: key)
    } catch {
        emit("errno", error.errno.map { String($0) } ?? "nil")
        emit("operation", error.operation)
    }
}

/// region-detach-counts KEY  → attaches twice and detaches both, printing the
/// attach counts the kernel reports (every process's attachments).
func regionDetachCounts(_ arguments: [String]) throws {
    let key = try keyArgument(arguments, 0)
    let first = try ShmRegion.attach(key: key)
    emit("afterFirstAttach", try first.attachCount)
    let second = try ShmRegion.attach(key: key, readOnly: true)
    emit("afterSecondAttach", try second.attachCount)
    emit("firstDetach", try second.detach())
    emit("secondDetachAgain", try second.detach())  // twice: no change
    emit("lastDetach", try first.detach())
}

/// region-create-detach-exit KEY BYTES  → creates the segment (not persistent),
/// prints ready=1, waits (30 s at most) until a peer stores 1 in byte 0, detaches
/// while the peer is still attached, prints the remaining count, and exits normally.
func regionCreateDetachExit(_ arguments: [String]) throws {
    let region = try ShmRegion.create(key: try keyArgument(arguments, 0), byteCount: try intArgument(arguments, 1, "BYTES"))
    emit("ready", 1)
    let array = region.array(of: UInt8.self)
    let deadline = time(nil) + 30
    while array[0] != 1 {
        guard time(nil) < deadline else { throw HelperFailure(message: "peer never signalled") }
        usleep(1_000)
    }
    emit("remaining", try region.detach())
}

/// region-detach-all KEY1 KEY2  → creates a segment under each key (one persistent)
/// and attaches the first again; prints totalSize, then detachAll's result, then
/// totalSize and which segments still exist.
func regionDetachAll(_ arguments: [String]) throws {
    let key1 = try keyArgument(arguments, 0)
    let key2 = try keyArgument(arguments, 1)
    emit("totalBefore", ShmRegion.totalSize)
    let a = try ShmRegion.create(key: key1, byteCount: 4096)
    let b = try ShmRegion.create(key: key2, byteCount: 3 * 4096, persistent: true)
    let again = try ShmRegion.attach(key: key1)
    emit("totalAttached", ShmRegion.totalSize)
    emit("detached", ShmRegion.detachAll())
    emit("totalAfter", ShmRegion.totalSize)
    emit("aAttached", a.isAttached)
    emit("bAttached", b.isAttached)
    emit("againAttached", again.isAttached)
    emit("exists1", ShmRegion.exists(key: key1))
    emit("exists2", ShmRegion.exists(key: key2))
    emit("detachedAgain", ShmRegion.detachAll())
}

// MARK: LRU scripts (LRUIndexTests)

/// lru-script KEY OP…  where OP is
///   set:HASH:VALUE[:SHARE]  → set.HASH.offset=…
///   del:HASH                → del.HASH=true|false
///   get:HASH                → get.HASH=value|miss
///   reload                  → reload=count
///   count                   → count=…
func lruScript(_ arguments: [String]) throws {
    let cache = try ShmLRU.attach(key: try keyArgument(arguments, 0))
    for op in arguments.dropFirst() {
        let parts = op.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        func hash(_ i: Int) throws -> UInt32 {
            guard i < parts.count, let value = UInt32(parts[i]) else { throw HelperFailure(message: "bad op \(op)") }
            return value
        }
        switch parts[0] {
        case "set":
            guard parts.count >= 3 else { throw HelperFailure(message: "bad op \(op)") }
            let share = parts.count > 3 ? UInt32(parts[3]) : nil
            emit("set.\(try hash(1)).offset", try cache.set(try hash(1), parts[2], shareKey: share).offset)
        case "del":
            emit("del.\(try hash(1))", try cache.remove(try hash(1)))
        case "get":
            emit("get.\(try hash(1))", try cache.string(try hash(1)) ?? "miss")
        case "reload":
            emit("reload", try cache.reloadIndex())
        case "count":
            emit("count", cache.count)
        default:
            throw HelperFailure(message: "bad op \(op)")
        }
    }
}

/// lru-attach-rss KEY  → attaches the cache and prints how many kB of the segment
/// this process has touched (Rss of its mapping in /proc/self/smaps) and the segment size.
func lruAttachRSS(_ arguments: [String]) throws {
    let cache = try ShmLRU.attach(key: try keyArgument(arguments, 0))
    let base = cache.region.withUnsafeBytes { UInt(bitPattern: $0.baseAddress) }
    emit("count", cache.count)
    emit("segmentKB", cache.region.byteCount / 1024)
    guard let file = fopen("/proc/self/smaps", "r") else { throw HelperFailure(message: "no /proc/self/smaps") }
    defer { fclose(file) }
    var line = [CChar](repeating: 0, count: 4096)
    var inMapping = false
    while fgets(&line, Int32(line.count), file) != nil {
        let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if let dash = text.firstIndex(of: "-"), let start = UInt(text[..<dash], radix: 16) {
            inMapping = start == base
            continue
        }
        if inMapping, text.hasPrefix("Rss:") {
            let digits = text.dropFirst(4).filter(\.isNumber)
            emit("rssKB", digits)
            return
        }
    }
    throw HelperFailure(message: "mapping at 0x\(String(base, radix: 16)) not found in smaps")
}

// MARK: Seed facade (CompatTests)

/// compat-worker KEY OP…  — the worker of the seed's example, through `Shm.*`:
///   init        → Shm.get + Shm.initLRU(key, 250, 10000, false)  → init=count
///   get:HASH    → get.HASH=value|nil, reason.HASH=…
///   del:HASH    → del.HASH=true|false
///   set:HASH:V[:SHARE] → set.HASH=offset|nil
///   reload / reloadshare:S → reload=true|false
func compatWorker(_ arguments: [String]) throws {
    let key = try keyArgument(arguments, 0)
    for op in arguments.dropFirst() {
        let parts = op.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        let hash = parts.count > 1 ? UInt32(parts[1]) ?? 0 : 0
        switch parts[0] {
        case "init":
            _ = Shm.get(key)
            emit("init", Shm.initLRU(key, 250, 10000, false).map { String($0) } ?? "nil")
        case "get":
            emit("get.\(hash)", Shm.get_el_hash(key, hash) ?? "nil")
            emit("reason.\(hash)", Shm.get_last_reason(key))
        case "del":
            emit("del.\(hash)", Shm.del_key(key, hash))
        case "set":
            let offset = Shm.set(key, hash, parts[2])
            if parts.count > 3, let offset, let share = UInt32(parts[3]) { _ = Shm.set_share_key(key, offset, share) }
            emit("set.\(hash)", offset.map { String($0) } ?? "nil")
        case "reload":
            emit("reload", Shm.reload_hash_map(key))
        case "totals":
            // Process-wide: create two segments, then detach everything.
            emit("totalBefore", Shm.getTotalSize())
            let a = Shm.create(4096)
            let b = Shm.create(16, .float64)
            emit("totalAttached", Shm.getTotalSize())
            emit("detachAll", Shm.detachAll())
            emit("totalAfter", Shm.getTotalSize())
            emit("leftBehind", [a?.key, b?.key].compactMap { $0 }.filter { ShmRegion.exists(key: $0) }.count)
        default:
            throw HelperFailure(message: "bad op \(op)")
        }
    }
}

// MARK: Corrupted structure (LRUErrorTests)

/// lru-corrupt-fuzz KEY SEED ROUNDS  → each round lays out a small cache in the
/// segment KEY (created here, removed at exit), fills it, overwrites a few words
/// of its list state, records or index with random values, runs random operations
/// (each must succeed or throw a ShmError: a trap or a hang is the failure), then
/// repairs and checks that verify() is clean. Prints rounds=…, errors=…, repaired=….
func lruCorruptFuzz(_ arguments: [String]) throws {
    let key = try keyArgument(arguments, 0)
    var random = SplitMix64(seed: try intArgument(arguments, 1, "SEED", as: UInt64.self))
    let rounds: Int = try intArgument(arguments, 2, "ROUNDS")
    let region = try ShmRegion.create(key: key, byteCount: 1 << 16)
    var errors = 0, repaired = 0
    for round in 0..<rounds {
        let kind: ShmLRU.IndexKind = round % 2 == 0 ? .shared : .processLocal
        _ = try region.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 0) }
        let options = ShmLRU.Options(lockTimeout: .seconds(5))
        let cache = try ShmLRU(initializing: region, recordSize: 32, capacity: 16, index: kind, options: options)
        let fast = kind == .shared
            ? try ShmLRU(attaching: region, options: .init(promotion: .atMostEvery(.microseconds(1)), lockTimeout: .seconds(5)))
            : cache
        var offsets: [Int] = []
        for hash in 0..<UInt32(14) { offsets.append(try cache.set(hash, encodeValue(hash: hash, version: 1, length: 12 + Int(hash))).offset) }
        try cache.remove(3)
        try cache.remove(atOffset: offsets[7])
        // Overwrite words of the list state (header line 2-3), the index, or the records.
        let recordsStart = offsets[0]
        let end = offsets[0] + 16 * (offsets[1] - offsets[0])
        try region.withUnsafeMutableBytes { bytes in
            for _ in 0..<Int.random(in: 1...4, using: &random) {
                let position: Int
                switch Int.random(in: 0..<3, using: &random) {
                case 0: position = 128 + 4 * Int.random(in: 0..<18, using: &random)  // count … high-water, index seq
                case 1: position = kind == .shared ? 512 + 4 * Int.random(in: 0..<32, using: &random) : recordsStart
                default: position = recordsStart + 4 * Int.random(in: 0..<(end - recordsStart) / 4, using: &random)
                }
                let value: UInt32
                switch Int.random(in: 0..<4, using: &random) {
                case 0: value = 0
                case 1: value = .max
                case 2: value = UInt32.random(in: 0..<20, using: &random)
                default: value = UInt32.random(in: 0...UInt32.max, using: &random)
                }
                bytes.storeBytes(of: value, toByteOffset: position, as: UInt32.self)
            }
        }
        for _ in 0..<40 {
            let hash = UInt32.random(in: 0..<20, using: &random)
            let offset = offsets[Int.random(in: 0..<offsets.count, using: &random)]
            do {
                switch Int.random(in: 0..<12, using: &random) {
                case 0, 1: try cache.set(hash, encodeValue(hash: hash, version: 2, length: 14))
                case 2, 3:
                    // Overwritten payload bytes cannot be told from data (no checksums):
                    // the read must only return or throw.
                    _ = try fast.bytes(hash)
                case 4: try cache.remove(hash)
                case 5: try cache.remove(atOffset: offset)
                case 6: _ = try cache.bytes(atOffset: offset)
                case 7: try cache.evict(lastUsedBefore: .now, limit: Int.random(in: 0...3, using: &random))
                case 8: _ = try cache.verify()
                case 9: _ = try cache.dumpJSON(backwards: Bool.random(using: &random))
                case 10: try cache.reloadIndex()
                default: try cache.setShareKey(hash, atOffset: offset)
                }
            } catch {
                errors += 1  // a typed ShmError: every call here throws only that
            }
        }
        try cache.repair()
        let report = try cache.verify()
        guard report.isClean else { throw HelperFailure(message: "round \(round): not clean after repair: \(report)") }
        repaired += 1
        _ = fast
    }
    emit("rounds", rounds)
    emit("errors", errors)
    emit("repaired", repaired)
}

/// lru-hold-lock KEY HASH  → takes the cache's lock (inside `withValue`), prints
/// value=… and ready=1, and holds it until killed.
func lruHoldLock(_ arguments: [String]) throws {
    let cache = try ShmLRU.attach(key: try keyArgument(arguments, 0))
    let hash: UInt32 = try intArgument(arguments, 1, "HASH", as: UInt32.self)
    _ = try cache.withValue(hash) { value in
        emit("value", String(decoding: value, as: UTF8.self))
        emit("ready", 1)
        waitForever()
    }
    throw HelperFailure(message: "hash \(hash) not found")
}
