#if CLI
import ArgumentParser

/// The tool's version (`shm-lru --version`).
let toolVersion = "0.1.0"

// `shm-lru`: inspect and edit ShmLRU caches and stores from the shell; one file per
// group of subcommands.
@main
struct ShmLRUTool: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shm-lru",
        abstract: "Inspect and edit ShmLRU caches and ShmStore stores in SysV shared memory.",
        discussion: """
            KEY is a SysV key in decimal (1234) or hexadecimal (0x4d2), as `ipcs -m` and \
            `shm-lru list` print it. HASH is a record's UInt32 hash, decimal or 0x-hex. \
            Segments that are neither caches nor stores are never locked or written.

            Exit codes:
              0   success
              1   the hash or entry is not there (get, del, store get, store rm-key), or
                  store listen saw fewer than --count changes before --timeout
              2   no segment has that key
              3   the segment is not a ShmLRU cache or store (another program's, or damaged)
              4   verify found problems
              5   any other failure (permission denied, value too large, lock timeout, …)
              64  bad arguments
            """,
        version: toolVersion,
        subcommands: [
            ListCommand.self, StatCommand.self, DumpCommand.self, VerifyCommand.self, GetCommand.self, SetCommand.self,
            DelCommand.self, EvictCommand.self, CreateCommand.self, RemoveCommand.self, StoreCommand.self,
        ])
}
#endif  // CLI
