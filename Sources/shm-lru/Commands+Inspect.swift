#if CLI
import ArgumentParser
import Glibc
import ShmLRU

// list, stat, dump, verify: the read-mostly subcommands.

struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List the ShmLRU caches and ShmStore stores on this machine.",
        discussion: """
            Reads each segment's header read-only (no lock, no write) and shows those that \
            carry a valid ShmLRU or ShmStore header: key, shmid, size, live records, \
            capacity, record size, index kind, how many processes are attached, the \
            creator's PID and the kind. A store's data segment is listed under it ("data \
            of KEY"). "stale" marks a segment nobody is attached to whose creator has \
            exited: left behind (remove it with `shm-lru rm KEY`). Segments of other \
            programs, and those this user may not read, are skipped unless --all is given.
            """)

    @Flag(help: "Also list segments that are neither caches nor stores, with the reason.")
    var all = false

    @Flag(help: "Print a JSON array of objects (one a segment) instead of a table.")
    var json = false

    func run() throws {
        try reporting {
            let segments = ShmRegion.list()
            let byKey = Dictionary(segments.map { ($0.key, $0) }, uniquingKeysWith: { first, _ in first })
            var stores: [ShmKey: ShmStore.SegmentSummary] = [:]
            for info in segments where !info.key.isPrivate {
                if let store = try? ShmStore.probe(key: info.key) { stores[info.key] = store }
            }
            let dataKeys = Dictionary(stores.values.map { ($0.dataKey, $0.key) }, uniquingKeysWith: { first, _ in first })

            var rows = [
                ["KEY", "ID", "BYTES", "RECORDS", "CAPACITY", "RECORD", "INDEX", "ATTACHED", "CREATOR", "KIND"]
                    + (all ? ["STATUS"] : [])
            ]
            func cacheRow(_ summary: ShmLRU.SegmentSummary, _ info: ShmRegion.SegmentInfo?, kind: String) -> [String] {
                let stale = info.map { isStale($0) } ?? false
                return [
                    summary.key.description, String(summary.id), String(summary.byteCount), String(summary.count),
                    String(summary.capacity), String(summary.recordSize), summary.indexKind.rawValue,
                    String(summary.attachCount), info.map { String($0.creatorPID) } ?? "-", kind + (stale ? ", stale" : ""),
                ] + (all ? ["ShmLRU"] : [])
            }
            for info in segments {
                let other = { (status: String) -> [String] in
                    [info.key.description, String(info.id), String(info.byteCount), "-", "-", "-", "-",
                     String(info.attachCount), String(info.creatorPID), "-", status]
                }
                if info.key.isPrivate {
                    if all { rows.append(other("private, or marked for removal")) }
                    continue
                }
                if dataKeys[info.key] != nil { continue }  // listed under its store
                if let store = stores[info.key] {
                    let data = try? ShmLRU.probe(key: store.dataKey)
                    rows.append(
                        [store.key.description, String(store.id), String(store.byteCount),
                         data.map { String($0.count) } ?? "-", data.map { String($0.capacity) } ?? "-",
                         String(store.recordSize), "-", String(store.attachCount), String(info.creatorPID),
                         "store" + (isStale(info) ? ", stale" : "") + (data == nil ? ", data segment missing" : "")]
                            + (all ? ["ShmStore"] : []))
                    if let data { rows.append(cacheRow(data, byKey[store.dataKey], kind: "data of \(store.key)")) }
                    continue
                }
                do throws(ShmError) {
                    rows.append(cacheRow(try ShmLRU.probe(key: info.key), info, kind: "cache"))
                } catch {
                    guard all else { continue }
                    switch error.code {
                    case .notFound: continue  // removed since the kernel listed it
                    case .incompatibleSegment: rows.append(other("not ShmLRU"))
                    case .corrupted: rows.append(other("damaged ShmLRU header"))
                    case .permissionDenied: rows.append(other("permission denied"))
                    default: rows.append(other("unreadable: \(error.code)"))
                    }
                }
            }
            print(json ? jsonArray(rows) : table(rows))
        }
    }
}

/// Nobody is attached and the creator has exited: the segment was left behind.
func isStale(_ info: ShmRegion.SegmentInfo) -> Bool {
    guard info.attachCount == 0 else { return false }
    return kill(info.creatorPID, 0) != 0 && errno == ESRCH
}

struct StatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stat",
        abstract: "Show a cache's (or a store's) size, fill, counters and policy.",
        discussion: """
            For a store, its configuration and memory first (budget, key and value bytes \
            held, value heap chunks: read under the store's data lock, waiting at most 1 s), \
            then the figures of its data segment. \
            Hits and misses count every process's reads: each process adds its counts \
            to the segment when it next takes the cache's lock.
            """)

    @Argument(help: "The segment's key (decimal or 0x-hex).", transform: parseKey)
    var key: ShmKey

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    func run() throws {
        try reporting {
            var rows: [[String]] = []
            var cacheKey = key
            do throws(ShmError) {
                let store = try ShmStore.probe(key: key)
                cacheKey = store.dataKey
                rows += [
                    ["store", key.description],
                    ["store id", String(store.id)],
                    ["store bytes", String(store.byteCount)],
                    ["store attached", "\(store.attachCount) process(es) besides this one"],
                    ["lock slots", String(store.lockSlots)],
                    ["lock waiters", String(store.lockWaiters)],
                    ["change log", "\(store.changeLogCapacity) entries"],
                    ["max age", store.maxAge.map { formatSeconds(Double($0.components.seconds) + Double($0.components.attoseconds) / 1e18) } ?? "none"],
                ]
                rows += memoryRows(key)
            } catch where error.code == .incompatibleSegment {
                // not a store: a cache, or another program's segment (reported below)
            } catch {
                throw describe(error, key: key)
            }
            let summary: ShmLRU.SegmentSummary
            do throws(ShmError) { summary = try ShmLRU.probe(key: cacheKey) } catch { throw describe(error, key: cacheKey) }
            let cache = try openCache(cacheKey)
            defer { _ = try? cache.detach() }
            let stats = cache.stats
            let age = Double(ShmInstant.now.nanoseconds &- summary.createdAt.nanoseconds) / 1e9
            let lookups = stats.totalHits &+ stats.totalMisses
            rows += [
                ["key", cacheKey.description],
                ["id", String(summary.id)],
                ["bytes", String(summary.byteCount)],
                ["attached", "\(summary.attachCount) process(es) besides this one"],
                ["records", "\(stats.count) of \(stats.capacity) (\(stats.free) free)"],
                ["record size", "\(stats.recordSize) bytes"],
                ["index", cache.indexKind.rawValue],
                ["policy", cache.policy.rawValue],
                ["age", formatSeconds(age)],
                ["hits", String(stats.totalHits)],
                ["misses", String(stats.totalMisses)],
                ["hit ratio", lookups == 0 ? "-" : String(format3(Double(stats.totalHits) / Double(lookups)))],
                ["inserts", String(stats.inserts)],
                ["updates", String(stats.updates)],
                ["deletes", String(stats.deletes)],
                ["evictions", String(stats.evictions)],
                ["recoveries", String(stats.recoveries)],
                ["promotions", String(stats.promotions)],
            ]
            print(json ? jsonObject(rows) : table(rows))
        }
    }
}

/// A store's memory: its budget, what its entries hold, and its value heap.
/// Read under the data lock, waiting at most 1 s for it (a stopped holder makes
/// the row say so instead of hanging `stat`).
func memoryRows(_ key: ShmKey) -> [[String]] {
    do throws(ShmError) {
        let store = try ShmStore.attach(key: key, wait: .milliseconds(200), lockTimeout: .seconds(1))
        defer { try? store.detach() }
        let usage = try store.memoryUsage()
        let budget = store.configuration.memory.map { "\($0) bytes" } ?? "none (sized by records)"
        return [
            ["memory budget", budget],
            ["live bytes", "\(usage.liveBytes) in \(usage.entries) entries (\(format3(usage.efficiency)) of \(usage.budgetBytes))"],
            ["value heap", usage.heapChunks == 0
                ? "none" : "\(usage.heapChunks) chunks, \(usage.freeHeapChunks) free"],
        ]
    } catch {
        return [["memory", "unavailable: \(error)"]]
    }
}

/// The eviction policy the segment records. Layout version 1 records none: every
/// cache evicts its least recently used record (exact LRU, or CLOCK-like for
/// handles that promote at an interval).

/// `0.123`.
func format3(_ value: Double) -> String {
    let thousandths = Int((value * 1000).rounded())
    let fraction = String(thousandths % 1000)
    return "\(thousandths / 1000)." + String(repeating: "0", count: 3 - fraction.count) + fraction
}

/// `12.3 s`, with one decimal.
func formatSeconds(_ seconds: Double) -> String {
    let tenths = Int((seconds * 10).rounded())
    return "\(tenths / 10).\(tenths % 10) s"
}

struct DumpCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dump",
        abstract: "Print a cache's (or a store's data segment's) LRU list as JSON.",
        discussion: """
            Most recently used first, or least recently used first with --backwards. Each \
            record has its offset, hash, share key, neighbours' offsets, last use \
            (CLOCK_MONOTONIC ns), length and value (UTF-8 text, or null with valueHex).
            """)

    @Argument(help: "The segment's key (decimal or 0x-hex).", transform: parseKey)
    var key: ShmKey

    @Flag(help: "Least recently used first.")
    var backwards = false

    func run() throws {
        try reporting {
            try withCache(cacheKey(following: key)) { (cache) throws(ShmError) in
                print(try cache.dumpJSON(backwards: backwards))
            }
        }
    }
}

struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check a cache's or a store's structure (lists, links, counts, index; a store's tables and value heap).",
        discussion: """
            Prints `clean: …` and exits 0, or the problems found and exits 4. Repairs nothing. \
            For a store's key, checks the store (its data segment included).
            """)

    @Argument(help: "The segment's key (decimal or 0x-hex).", transform: parseKey)
    var key: ShmKey

    func run() throws {
        try reporting {
            var report: ShmLRU.IntegrityReport?
            if (try? ShmStore.probe(key: key)) != nil {
                do throws(ShmError) {
                    let store = try ShmStore.attach(key: key, wait: .milliseconds(200), lockTimeout: .seconds(5))
                    defer { try? store.detach() }
                    report = try store.verify()
                } catch {
                    throw describe(error, key: key)
                }
            } else {
                try withCache(key) { (cache) throws(ShmError) in report = try cache.verify() }
            }
            guard let report else { return }
            if report.isClean {
                print(report.description)
            } else {
                print("\(report.problems.count) problem(s):")
                for problem in report.problems { print("  " + problem) }
                throw ToolFailure("\(key) failed verification", exitCode: Exit.problems)
            }
        }
    }
}
#endif  // CLI
