import ArgumentParser

// `shm-lru`: inspect and edit ShmLRU caches from the shell. See Tool.swift for the
// command tree and the exit codes, one file per group of subcommands.
ShmLRUTool.main()
