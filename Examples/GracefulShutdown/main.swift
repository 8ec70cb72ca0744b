#if Lifecycle
import Glibc
import Logging
import ServiceLifecycle
import ShmLRU
import ShmLRULifecycle
import UnixSignals

// A server stopped by its supervisor leaves nothing behind: this process creates
// a store (persistent: it would outlive a crash), serves until SIGTERM or SIGINT,
// and the ShmSegmentsService removes the store's two segments on the graceful
// shutdown that the signal starts.
//
//   GracefulShutdown [--key 0x5eed] [--without-service]
//
// Prints `ready key=… data=…` once the store exists. With --without-service the
// signal ends the process at once and the segments stay (remove them with
// `shm-lru rm KEY`): the difference the service makes.

/// Waits for graceful shutdown: the stand-in for a real server. Says it is ready
/// once running: the group traps its signals before it starts a service.
struct IdleServer: Service {
    let readyLine: String
    func run() async throws {
        print(readyLine)
        fflush(nil)
        try? await gracefulShutdown()
    }
}

/// Prints the message on standard error and exits.
func fail(_ message: String, status: Int32) -> Never {
    let line = "GracefulShutdown: \(message)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
    exit(status)
}

// A supervisor may start us with signals blocked (a mask is inherited): unblock
// the two that stop us, or SIGTERM would stay pending for ever.
var stopSignals = sigset_t()
sigemptyset(&stopSignals)
sigaddset(&stopSignals, SIGTERM)
sigaddset(&stopSignals, SIGINT)
pthread_sigmask(SIG_UNBLOCK, &stopSignals, nil)

var key = ShmKey(0x5EED)
var withService = true
var arguments = CommandLine.arguments.dropFirst()
while let argument = arguments.popFirst() {
    switch argument {
    case "--key":
        guard let text = arguments.popFirst(), let parsed = ShmKey(parsing: text) else {
            fail("--key needs a key (decimal or 0x-hex)", status: 64)
        }
        key = parsed
    case "--without-service": withService = false
    default:
        fail("usage: GracefulShutdown [--key KEY] [--without-service]", status: 64)
    }
}

let store: ShmStore
do {
    store = try ShmStore.create(key: key, configuration: .init(capacity: 100, recordSize: 256), persistent: true)
    try store.set("started", getpid())
} catch {
    fail("\(error)", status: 1)
}
let readyLine = "ready key=\(store.key) data=\(store.cache.key)"

var logger = Logger(label: "GracefulShutdown")
logger.logLevel = .warning
if withService {
    let group = ServiceGroup(
        services: [IdleServer(readyLine: readyLine), ShmSegmentsService(store: store)], gracefulShutdownSignals: [.sigterm, .sigint],
        logger: logger)
    do { try await group.run() } catch {
        fail("\(error)", status: 1)
    }
    print("stopped")
} else {
    print(readyLine)
    fflush(nil)
    while true { pause() }
}
#else
import Glibc
let message = "GracefulShutdown: built without the Lifecycle trait (swift build --traits Lifecycle)\n"
_ = message.withCString { write(2, $0, strlen($0)) }
exit(2)
#endif  // Lifecycle
