// shm-typed-lru's test/example.js, done properly in Swift.
//
// The master creates a byte region, a Float region and an LRU of 250-byte
// records, exercises the LRU (set and read by hash and by offset, delete, fill,
// dump both ways), then starts worker processes: this same binary, run again
// with `--worker ID` through posix_spawn. Each worker is told the keys over a
// pipe, attaches as a non-initializer and reads every hash; the master deletes
// three hashes; the workers reload their maps and show them gone while the rest
// remain; the workers read the typed regions' values the master writes. Every
// step is acknowledged over a pipe (no sleeps), every value a worker reads is
// checked by the master, and every segment is gone when it exits.
//
//     MasterWorker [--workers N]       # N in 1...8, default 2
//     MasterWorker --fail-worker K     # (for tests) worker K dies mid-run: the
//                                      # master reports it, cleans up, exits 1
import Glibc

let arguments = Array(CommandLine.arguments.dropFirst())
if arguments.first == "--worker" {
    exit(runWorker(Array(arguments.dropFirst())))
} else {
    exit(runMaster(arguments))
}
