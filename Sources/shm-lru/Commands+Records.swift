#if CLI
import ArgumentParser
import ShmLRU

// get, set, del, evict: one record (or a batch of old ones) at a time.

struct GetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: "Print the value stored under a hash.",
        discussion: "Counts as a use (the record becomes the most recently used). Exits 1 if the hash is absent.")

    @Argument(help: "The segment's key (decimal or 0x-hex).", transform: parseKey)
    var key: ShmKey

    @Argument(help: "The record's hash (decimal or 0x-hex).", transform: parseHash)
    var hash: UInt32

    @Flag(help: "Print the value's bytes in hex instead of as text.")
    var hex = false

    func run() throws {
        try reporting {
            var value: [UInt8]?
            try withCache(key) { (cache) throws(ShmError) in value = try cache.bytes(hash) }
            guard let value else {
                throw ToolFailure("hash \(hash) is not in cache \(key)", exitCode: Exit.hashNotFound)
            }
            print(hex ? hexString(value) : String(decoding: value, as: UTF8.self))
        }
    }
}

struct SetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set",
        abstract: "Store a value under a hash.",
        discussion: """
            Updates the record in place if the hash is present, else takes a free record \
            (or evicts the least recently used one when the cache is full). Prints what it \
            did and the record's offset.
            """)

    @Argument(help: "The segment's key (decimal or 0x-hex).", transform: parseKey)
    var key: ShmKey

    @Argument(help: "The record's hash (decimal or 0x-hex).", transform: parseHash)
    var hash: UInt32

    @Argument(help: "The value, stored as its UTF-8 bytes (at most the cache's record size).")
    var value: String

    func run() throws {
        try reporting {
            try withCache(key) { (cache) throws(ShmError) in
                let result = try cache.set(hash, value)
                var line = "\(result.updated ? "updated" : "inserted") \(hash) at offset \(result.offset)"
                if let evicted = result.evictedHash { line += " (evicted \(evicted))" }
                print(line)
            }
        }
    }
}

struct DelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "del", abstract: "Delete the record with a hash.", discussion: "Exits 1 if the hash is absent.")

    @Argument(help: "The segment's key (decimal or 0x-hex).", transform: parseKey)
    var key: ShmKey

    @Argument(help: "The record's hash (decimal or 0x-hex).", transform: parseHash)
    var hash: UInt32

    func run() throws {
        try reporting {
            var removed = false
            try withCache(key) { (cache) throws(ShmError) in removed = try cache.remove(hash) }
            guard removed else { throw ToolFailure("hash \(hash) is not in cache \(key)", exitCode: Exit.hashNotFound) }
            print("deleted \(hash)")
        }
    }
}

struct EvictCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evict",
        abstract: "Evict the records not used for a while.",
        discussion: """
            Evicts, least recently used first, the records whose last use is at least \
            SECONDS ago, at most N of them. Prints how many and their hashes.
            """)

    @Argument(help: "The segment's key (decimal or 0x-hex).", transform: parseKey)
    var key: ShmKey

    @Option(name: .customLong("older-than"), help: ArgumentHelp("Minimum age of an evicted record.", valueName: "seconds"))
    var olderThan: Double

    @Option(name: .customLong("max"), help: ArgumentHelp("Evict at most this many.", valueName: "n"))
    var max: Int?

    func validate() throws {
        guard olderThan.isFinite, olderThan >= 0, olderThan < 1e9 else {
            throw ValidationError("--older-than must be a number of seconds, 0 or more")
        }
        if let max, max < 0 { throw ValidationError("--max must be 0 or more") }
    }

    func run() throws {
        try reporting {
            try withCache(key) { (cache) throws(ShmError) in
                let age = Duration.nanoseconds(Int64((olderThan * 1e9).rounded()))
                let evicted = try cache.evict(olderThan: age, limit: max ?? .max)
                print("evicted \(evicted.count)" + (evicted.isEmpty ? "" : ": " + evicted.map(String.init).joined(separator: " ")))
            }
        }
    }
}
#endif  // CLI
