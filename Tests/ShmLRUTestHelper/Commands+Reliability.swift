import ShmLRU

/// Commands for fault injection, soak and corruption tests.
let reliabilityCommands: [String: HelperCommand] = [:]
