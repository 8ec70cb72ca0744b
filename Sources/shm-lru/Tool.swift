import ArgumentParser

struct ShmLRUTool: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shm-lru",
        abstract: "Inspect and edit ShmLRU caches in SysV shared memory.",
        discussion: """
            KEY is a SysV key in decimal (1234) or hexadecimal (0x4d2), as `ipcs -m` and \
            `shm-lru list` print it. HASH is a record's UInt32 hash, decimal or 0x-hex.

            Exit codes:
              0   success
              1   the hash is not in the cache (get, del)
              2   no segment has that key
              3   the segment is not a ShmLRU cache (another program's, or damaged)
              4   verify found problems
              5   any other failure (permission denied, value too large, lock timeout, …)
              64  bad arguments
            """,
        subcommands: [
            ListCommand.self, StatCommand.self, DumpCommand.self, VerifyCommand.self, GetCommand.self, SetCommand.self,
            DelCommand.self, EvictCommand.self, CreateCommand.self, RemoveCommand.self,
        ])
}
