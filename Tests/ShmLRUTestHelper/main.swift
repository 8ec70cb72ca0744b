// The other side of the multi-process tests: the tests spawn this executable
// (posix_spawn) with a command and arguments; it prints results on stdout, one
// `key=value` per line, and exits 0 on success, 1 on a check that failed, 2 on
// bad usage. Commands live in Commands*.swift, one concern a file.
import Glibc
import ShmLRU

let arguments = Array(CommandLine.arguments.dropFirst())
guard let name = arguments.first, let command = helperCommands[name] else {
    let names = helperCommands.keys.sorted().joined(separator: ", ")
    FileHandleLite.standardError.write("usage: ShmLRUTestHelper COMMAND ARGS…; commands: \(names)\n")
    exit(2)
}
do {
    try command(Array(arguments.dropFirst()))
    exit(0)
} catch let error as HelperFailure {
    FileHandleLite.standardError.write("helper \(name): \(error.message)\n")
    exit(1)
} catch {
    FileHandleLite.standardError.write("helper \(name): \(error)\n")
    exit(1)
}
