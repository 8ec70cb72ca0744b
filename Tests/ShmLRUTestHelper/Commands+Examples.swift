import ShmLRU

/// Commands used by the example and CLI tests.
let exampleCommands: [String: HelperCommand] = [:]
