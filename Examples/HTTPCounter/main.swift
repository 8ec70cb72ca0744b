#if Hummingbird
// HTTPCounter: cluster-shared-memory's test server as a Hummingbird 2 Router on
// ShmStore, served by N worker processes on one port.
//
//   HTTPCounter serve --variant mutex|withLock|update|none [--workers 4] [--port 8089] [--key 0x48545443]
//                     [--loops N]
//       opens the store (ShmStore.open: a store left by a killed run is replaced),
//       sets the counter to 0, starts N worker processes that serve 127.0.0.1:PORT
//       together (SO_REUSEPORT), prints `ready` once all listen, and on SIGTERM or
//       SIGINT stops them, prints `counter=N` and removes the store.
//       --loops: event-loop threads per worker; by default the machine's cores
//       divided among the workers (at least one), since the processes are the
//       server's parallelism.
//   HTTPCounter worker VARIANT PORT KEY LOOPS      (started by serve)
//
// Routes (Worker.swift, `makeRouter`):
//   GET /                 adds one to the Int under "requestTimes", answers the new
//                         count and the worker's PID (fixed width), the variant's way:
//       mutex     under the key's lock, async (cluster-shared-memory's `mutex`)
//       withLock  under the key's lock, blocking, reached through a synchronous helper
//       update    ShmStore.update (the data lock alone, no per-key lock)
//       none      get then set with no lock (loses updates: the baseline for speed)
//   GET /count            the counter
//   PUT /persist/:key     stores the body through the PersistDriver (?ttl=SECONDS)
//   GET /persist/:key     the stored body (204 when absent or expired)
//   DELETE /persist/:key  removes it
import Glibc
import NIOCore
import ShmLRU

let arguments = Array(CommandLine.arguments.dropFirst())

func fail(_ message: String) -> Never {
    var text = "HTTPCounter: \(message)\n"
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    exit(1)
}

func option(_ name: String, _ fallback: String) -> String {
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count else { return fallback }
    return arguments[index + 1]
}

guard let command = arguments.first else { fail("usage: HTTPCounter serve --variant V [--workers N] [--port P] [--key K]") }
switch command {
case "serve":
    let variant = option("--variant", "mutex")
    guard Variant(rawValue: variant) != nil else { fail("unknown variant \(variant)") }
    guard let workers = Int(option("--workers", "4")), workers >= 1 else { fail("bad --workers") }
    guard let port = Int(option("--port", "8089")) else { fail("bad --port") }
    guard let key = ShmKey(parsing: option("--key", "0x48545443")) else { fail("bad --key") }
    let cores = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    guard let loops = Int(option("--loops", "\(max(1, cores / workers))")), (1...1024).contains(loops)
    else { fail("bad --loops (1...1024)") }
    serve(variant: variant, workers: workers, loops: loops, port: port, key: key)
case "worker":
    guard arguments.count == 5, let variant = Variant(rawValue: arguments[1]), let port = Int(arguments[2]),
        let key = ShmKey(parsing: arguments[3]), let loops = Int(arguments[4]), (1...1024).contains(loops)
    else { fail("usage: HTTPCounter worker VARIANT PORT KEY LOOPS") }
    // Before NIO's singleton group exists (it can be sized only once).
    NIOSingletons.groupLoopCountSuggestion = loops
    do {
        try await runWorker(variant: variant, port: port, key: key)
    } catch {
        fail("worker: \(error)")
    }
default:
    fail("unknown command \(command)")
}
#else
import Glibc
let message = "HTTPCounter: built without the Hummingbird trait (swift build --traits Hummingbird)\n"
_ = message.withCString { write(2, $0, strlen($0)) }
exit(2)
#endif  // Hummingbird
