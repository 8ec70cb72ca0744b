#if CLI
import ArgumentParser
import Glibc
import ShmLRU

// store keys|get|set|rm-key|locks|listen: a ShmStore's entries, locks and changes
// (snapshot|restore: Commands+Snapshot.swift).
// Every command probes the store segment read-only first, so another program's
// segment (or a cache) is reported and never locked or written.

struct StoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "Read and edit a ShmStore (keyed values, per-key locks, changes).",
        discussion: """
            KEY is the store's key (its store segment's, as `shm-lru list` shows it); NAME \
            is an entry's key, any string. Values print as text when they are UTF-8 text \
            (JSON, as the library's Codable values are, is text), in hex otherwise.
            """,
        subcommands: [
            StoreKeysCommand.self, StoreGetCommand.self, StoreSetCommand.self, StoreRemoveKeyCommand.self,
            StoreLocksCommand.self, StoreListenCommand.self, StoreSnapshotCommand.self, StoreRestoreCommand.self,
        ])
}

struct StoreKeysCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys", abstract: "Print the store's live keys, one a line, most recently used first.")

    @Argument(help: "The store's key (decimal or 0x-hex).", transform: parseKey)
    var key: ShmKey

    func run() throws {
        try reporting {
            try withStore(key) { (store) throws(ShmError) in
                for name in try store.keys() { print(name) }
            }
        }
    }
}

struct StoreGetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: "Print the value of an entry.",
        discussion: "A use of the entry (it becomes the most recently used). Exits 1 if the entry is absent or expired.")

    @Argument(help: "The store's key (decimal or 0x-hex).", transform: parseKey)
    var key: ShmKey

    @Argument(help: "The entry's key.")
    var name: String

    @Flag(help: "Print the value's bytes in hex even when they are text.")
    var hex = false

    func run() throws {
        try reporting {
            var value: [UInt8]?
            try withStore(key) { (store) throws(ShmError) in value = try store.bytes(name) }
            guard let value else { throw ToolFailure("\"\(name)\" is not in store \(key)", exitCode: Exit.hashNotFound) }
            print(hex ? hexString(value) : displayValue(value))
        }
    }
}

struct StoreSetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set",
        abstract: "Store a value under an entry's key.",
        discussion: """
            Stores VALUE's UTF-8 bytes as they are (write JSON, e.g. '{"n":1}' or '"text"', \
            for values the library's Codable get reads). Listeners of the entry are told.
            """)

    @Argument(help: "The store's key (decimal or 0x-hex).", transform: parseKey)
    var key: ShmKey

    @Argument(help: "The entry's key.")
    var name: String

    @Argument(help: "The value.")
    var value: String

    @Flag(help: "VALUE is hex digits: store those bytes.")
    var hex = false

    @Option(name: .customLong("ttl"), help: ArgumentHelp("Expire the entry after this long.", valueName: "seconds"))
    var timeToLive: Double?

    func validate() throws {
        if hex, parseHex(value) == nil { throw ValidationError("--hex: VALUE must be an even number of hex digits") }
        if let timeToLive, !(timeToLive.isFinite && timeToLive > 0 && timeToLive < 1e9) {
            throw ValidationError("--ttl must be a number of seconds above 0")
        }
    }

    func run() throws {
        try reporting {
            let bytes = hex ? parseHex(value)! : Array(value.utf8)
            let expiry: ShmStore.Expiry =
                timeToLive.map { .after(.nanoseconds(Int64(($0 * 1e9).rounded()))) } ?? .storeDefault
            try withStore(key) { (store) throws(ShmError) in try store.set(name, bytes: bytes, expiry: expiry) }
            print("set \"\(name)\" (\(bytes.count) bytes)")
        }
    }
}

struct StoreRemoveKeyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm-key", abstract: "Remove an entry.", discussion: "Exits 1 if the entry is absent or expired.")

    @Argument(help: "The store's key (decimal or 0x-hex).", transform: parseKey)
    var key: ShmKey

    @Argument(help: "The entry's key.")
    var name: String

    func run() throws {
        try reporting {
            var removed = false
            try withStore(key) { (store) throws(ShmError) in removed = try store.remove(name) }
            guard removed else { throw ToolFailure("\"\(name)\" is not in store \(key)", exitCode: Exit.hashNotFound) }
            print("removed \"\(name)\"")
        }
    }
}

struct StoreLocksCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "locks",
        abstract: "Show the per-key locks held or waited for.",
        discussion: """
            A snapshot read without the lock table's lock. The table keeps a hash of each \
            key, not the key: NAME shows the entry whose key has that hash, or #hash when \
            no stored entry has it.
            """)

    @Argument(help: "The store's key (decimal or 0x-hex).", transform: parseKey)
    var key: ShmKey

    func run() throws {
        try reporting {
            try withStore(key) { (store) throws(ShmError) in
                let locks = try store.lockStates()
                guard !locks.isEmpty else {
                    print("no lock held or waited for")
                    return
                }
                var rows = [["NAME", "HOLDER", "WAITERS"]]
                for lock in locks {
                    rows.append([
                        lock.key.map { "\"\($0)\"" } ?? "#" + String(lock.keyHash, radix: 16),
                        lock.holder.map(String.init) ?? "-", String(lock.waiters),
                    ])
                }
                print(table(rows))
            }
        }
    }
}

struct StoreListenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "listen",
        abstract: "Print the changes of one entry (or all), as they happen.",
        discussion: """
            Prints `listening` once subscribed, then one line per change made by any \
            process: `set "NAME" VALUE`, `removed "NAME"`, `expired "NAME"`, `evicted "NAME"`, \
            or `missed N`. Stops after --count changes or --timeout seconds, whichever comes \
            first (exit 0), or when interrupted; exits 1 if --count changes did not arrive \
            within --timeout.
            """)

    @Argument(help: "The store's key (decimal or 0x-hex).", transform: parseKey)
    var key: ShmKey

    @Argument(help: "The entry's key; all entries when omitted.")
    var name: String?

    @Option(help: ArgumentHelp("Stop after this many changes.", valueName: "n"))
    var count: Int?

    @Option(help: ArgumentHelp("Stop after this long.", valueName: "seconds"))
    var timeout: Double?

    func validate() throws {
        if let count, count < 1 { throw ValidationError("--count must be 1 or more") }
        if let timeout, !(timeout.isFinite && timeout >= 0 && timeout < 1e9) {
            throw ValidationError("--timeout must be a number of seconds, 0 or more")
        }
    }

    func run() async throws {
        let store: ShmStore
        do { store = try openStore(key) } catch {
            printError("shm-lru: " + error.message)
            throw ExitCode(error.exitCode)
        }
        defer { try? store.detach() }
        let changes = name.map { store.listen($0) } ?? store.listenAll()
        print("listening")
        flushOutput()
        let limit = count
        let seen = await withTaskGroup(of: Int?.self) { group in
            group.addTask {
                var seen = 0
                for await change in changes {
                    print(describeChange(change))
                    flushOutput()
                    seen += 1
                    if let limit, seen >= limit { break }
                }
                return seen
            }
            if let timeout {
                group.addTask {
                    try? await Task.sleep(for: .nanoseconds(Int64((timeout * 1e9).rounded())))
                    return nil
                }
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        if let limit, (seen ?? 0) < limit {
            printError("shm-lru: fewer than \(limit) change(s) within \(timeout ?? 0) s")
            throw ExitCode(Exit.hashNotFound)
        }
    }
}

// MARK: Support

/// One line per change, as `store listen` prints it.
func describeChange(_ change: ShmStore.Change) -> String {
    switch change.kind {
    case .set: "set \"\(change.key)\" \(displayValue(change.bytes ?? []))"
    case .removed: "removed \"\(change.key)\""
    case .expired: "expired \"\(change.key)\""
    case .evicted: "evicted \"\(change.key)\""
    case .missed(let count): "missed \(count)"
    }
}

/// The value as text when it is UTF-8 without control characters (tabs and
/// newlines aside), else as hex.
func displayValue(_ bytes: [UInt8]) -> String {
    guard let text = String(validating: bytes, as: UTF8.self),
        !text.unicodeScalars.contains(where: { $0.value < 0x20 && $0 != "\t" && $0 != "\n" && $0 != "\r" || $0.value == 0x7F })
    else { return hexString(bytes) }
    return text
}

/// Bytes of an even number of hex digits; nil otherwise.
func parseHex(_ text: String) -> [UInt8]? {
    let digits = Array(text.utf8)
    guard digits.count % 2 == 0 else { return nil }
    var bytes: [UInt8] = []
    bytes.reserveCapacity(digits.count / 2)
    var i = 0
    while i < digits.count {
        guard let high = hexDigit(digits[i]), let low = hexDigit(digits[i + 1]) else { return nil }
        bytes.append(high << 4 | low)
        i += 2
    }
    return bytes
}

private func hexDigit(_ c: UInt8) -> UInt8? {
    switch c {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
    default: nil
    }
}

/// Flushes standard output (a pipe is block-buffered: `listen` must show each line at once).
func flushOutput() { fflush(nil) }

/// Checks the store segment read-only first (a foreign segment or a cache is
/// reported, never locked or written), then attaches the store.
func openStore(_ key: ShmKey) throws(ToolFailure) -> ShmStore {
    do {
        _ = try ShmStore.probe(key: key)
    } catch {
        guard error.code == .incompatibleSegment else { throw describe(error, key: key) }
        if (try? ShmLRU.probe(key: key)) != nil {
            throw ToolFailure(
                "segment \(key) is a ShmLRU cache, not a store (use `shm-lru get`, `set`, `del`)", exitCode: Exit.notShmLRU)
        }
        throw ToolFailure("segment \(key) is not a ShmStore (\(error.detail ?? error.description))", exitCode: Exit.notShmLRU)
    }
    do { return try ShmStore.attach(key: key, wait: .milliseconds(200)) } catch { throw describe(error, key: key) }
}

/// Runs `body` on an open store, then detaches it; a library error becomes a clear failure.
func withStore(_ key: ShmKey, _ body: (ShmStore) throws(ShmError) -> Void) throws(ToolFailure) {
    let store = try openStore(key)
    defer { try? store.detach() }
    do { try body(store) } catch { throw describe(error, key: key) }
}
#endif  // CLI
