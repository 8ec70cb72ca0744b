import ArgumentParser
import ShmLRU

// list, stat, dump, verify: the read-mostly subcommands.

struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List the ShmLRU caches on this machine.",
        discussion: """
            Reads each segment's header read-only (no lock, no write) and shows those that \
            carry a valid ShmLRU header: key, shmid, size, live records, capacity, record \
            size, index kind and how many processes are attached. Segments of other \
            programs, and those this user may not read, are skipped unless --all is given.
            """)

    @Flag(help: "Also list segments that are not ShmLRU caches, with the reason.")
    var all = false

    func run() throws {
        try reporting {
            var rows = [["KEY", "ID", "BYTES", "RECORDS", "CAPACITY", "RECORD", "INDEX", "ATTACHED"] + (all ? ["STATUS"] : [])]
            for info in ShmRegion.list() {
                let other = { (status: String) -> [String] in
                    [info.key.description, String(info.id), String(info.byteCount), "-", "-", "-", "-",
                     String(info.attachCount), status]
                }
                if info.key.isPrivate {
                    if all { rows.append(other("private, or marked for removal")) }
                    continue
                }
                do throws(ShmError) {
                    let summary = try ShmLRU.probe(key: info.key)
                    rows.append(
                        [summary.key.description, String(summary.id), String(summary.byteCount), String(summary.count),
                         String(summary.capacity), String(summary.recordSize), summary.indexKind.rawValue,
                         String(summary.attachCount)] + (all ? ["ShmLRU"] : []))
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
            print(table(rows))
        }
    }
}

struct StatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stat", abstract: "Show a cache's size, fill and counters.")

    @Argument(help: "The segment's key (decimal or 0x-hex).", transform: parseKey)
    var key: ShmKey

    func run() throws {
        try reporting {
            let summary: ShmLRU.SegmentSummary
            do throws(ShmError) { summary = try ShmLRU.probe(key: key) } catch { throw describe(error, key: key) }
            let cache = try openCache(key)
            let stats = cache.stats
            let age = Double(ShmInstant.now.nanoseconds &- summary.createdAt.nanoseconds) / 1e9
            print(
                table([
                    ["key", key.description],
                    ["id", String(summary.id)],
                    ["bytes", String(summary.byteCount)],
                    ["attached", "\(summary.attachCount) process(es) besides this one"],
                    ["records", "\(stats.count) of \(stats.capacity) (\(stats.free) free)"],
                    ["record size", "\(stats.recordSize) bytes"],
                    ["index", cache.indexKind.rawValue],
                    ["policy", cache.policy.rawValue],
                    ["age", formatSeconds(age)],
                    ["inserts", String(stats.inserts)],
                    ["updates", String(stats.updates)],
                    ["deletes", String(stats.deletes)],
                    ["evictions", String(stats.evictions)],
                    ["recoveries", String(stats.recoveries)],
                    ["promotions", String(stats.promotions)],
                ]))
        }
    }
}

/// `12.3 s`, with one decimal.
func formatSeconds(_ seconds: Double) -> String {
    let tenths = Int((seconds * 10).rounded())
    return "\(tenths / 10).\(tenths % 10) s"
}

struct DumpCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dump",
        abstract: "Print a cache's LRU list as JSON.",
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
            try withCache(key) { (cache) throws(ShmError) in print(try cache.dumpJSON(backwards: backwards)) }
        }
    }
}

struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check a cache's structure (lists, links, counts, index).",
        discussion: "Prints `clean: …` and exits 0, or the problems found and exits 4. Repairs nothing.")

    @Argument(help: "The segment's key (decimal or 0x-hex).", transform: parseKey)
    var key: ShmKey

    func run() throws {
        try reporting {
            var report: ShmLRU.IntegrityReport?
            try withCache(key) { (cache) throws(ShmError) in report = try cache.verify() }
            guard let report else { return }
            if report.isClean {
                print(report.description)
            } else {
                print("\(report.problems.count) problem(s):")
                for problem in report.problems { print("  " + problem) }
                throw ToolFailure("cache \(key) failed verification", exitCode: Exit.problems)
            }
        }
    }
}
