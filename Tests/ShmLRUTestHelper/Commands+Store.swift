import ShmLRU

/// Commands for the keyed store, per-key locks, listen and TTL tests.
let storeCommands: [String: HelperCommand] = [:]
