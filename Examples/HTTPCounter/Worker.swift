#if Hummingbird
import Glibc
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import ShmLRU
import ShmLRUHummingbird
import UnixSignals

/// How `GET /` adds one to the counter.
enum Variant: String, Sendable {
    case mutex, withLock, update, none
}

// snippet.start routes
/// The worker's routes. Every worker process builds the same router on its own
/// handle of the one store: the counter and the persisted values are the machine's.
func makeRouter(store: ShmStore, persist: ShmPersistDriver, variant: Variant) -> Router<BasicRequestContext> {
    let router = Router()
    // Adds one to the counter, under its lock in every process; answers the new
    // count and the PID of the worker that served it.
    router.get("/") { _, _ -> String in
        let next = try await count(store, variant)
        return padded(next, 12) + " " + padded(Int(getpid()), 10) + "\n"
    }
    router.get("/count") { _, _ -> String in
        String(try store.get("requestTimes", as: Int.self) ?? 0)
    }
    // Key/value pairs through Hummingbird's persist API, shared by the workers.
    router.put("/persist/:key") { request, context -> HTTPResponse.Status in
        let key = try context.parameters.require("key")
        let body = try await request.body.collect(upTo: 1024)
        let ttl = request.uri.queryParameters.get("ttl", as: Int.self).map { Duration.seconds($0) }
        try await persist.set(key: key, value: String(buffer: body), expires: ttl)
        return .ok
    }
    router.get("/persist/:key") { _, context -> String? in
        try await persist.get(key: try context.parameters.require("key"), as: String.self)
    }
    router.delete("/persist/:key") { _, context -> HTTPResponse.Status in
        try await persist.remove(key: try context.parameters.require("key"))
        return .noContent
    }
    return router
}

/// One `GET /`: adds one to the counter the variant's way; returns the new count.
func count(_ store: ShmStore, _ variant: Variant) async throws -> Int {
    switch variant {
    case .mutex:
        // The key's cross-process lock, waited for without blocking a thread.
        return try await store.mutex("requestTimes") { _ in
            let next = (try store.get("requestTimes", as: Int.self) ?? 0) + 1
            try store.set("requestTimes", next)
            return next
        }
    case .withLock:
        return try countBlocking(store)
    case .update:
        return try store.update("requestTimes", as: Int.self) { ($0 ?? 0) + 1 } ?? 0
    case .none:
        let next = (try store.get("requestTimes", as: Int.self) ?? 0) + 1
        try store.set("requestTimes", next)
        return next
    }
}
// snippet.end routes

/// The blocking `withLock`, reached from async code through a synchronous helper
/// (as an application might): safe here only because the body never suspends, and
/// bounded by the store's lock timeout.
func countBlocking(_ store: ShmStore) throws -> Int {
    try store.withBlockingLock("requestTimes") { _ in
        let next = (try store.get("requestTimes", as: Int.self) ?? 0) + 1
        try store.set("requestTimes", next)
        return next
    }
}

/// `value` right-aligned in `width` characters (ab counts a body of another
/// length as a failed request).
func padded(_ value: Int, _ width: Int) -> String {
    let digits = String(value)
    return String(repeating: " ", count: max(0, width - digits.count)) + digits
}

/// One worker process: attaches the store, serves the router on the shared port
/// until SIGTERM (the parent's stop), then detaches.
func runWorker(variant: Variant, port: Int, key: ShmKey) async throws {
    let store = try ShmStore.attach(key: key)
    var logger = Logger(label: "HTTPCounter.worker")
    logger.logLevel = .error
    let router = makeRouter(store: store, persist: ShmPersistDriver(store: store, keyPrefix: "persist:"), variant: variant)
    let server = ReusePortServer(responder: router.buildResponder(), port: port, logger: logger) {
        // Tells the parent this worker listens.
        try store.update("listening", as: Int.self) { ($0 ?? 0) + 1 }
    }
    let group = ServiceGroup(services: [server], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
    try await group.run()
    try store.detach()
}

/// Serves a Hummingbird responder (a `Router`'s) on 127.0.0.1:PORT through
/// Hummingbird's HTTP/1 channel, on a socket bound with SO_REUSEPORT: every
/// worker binds the same port, and the kernel spreads connections among them.
/// Hummingbird 2's `Application` binds with SO_REUSEADDR alone (two processes
/// cannot both listen on its port), so this service does what its `run()` does
/// for a request: build the request context, respond, write the response.
/// Graceful shutdown closes the listening socket; requests in progress finish.
struct ReusePortServer<Responder: HTTPResponder>: Service where Responder.Context == BasicRequestContext {
    let responder: Responder
    let port: Int
    let logger: Logger
    /// Runs once the socket listens.
    let onListening: @Sendable () throws -> Void

    func run() async throws {
        let responder = self.responder
        let logger = self.logger
        let http = HTTP1Channel(responder: { request, responseWriter, channel in
            let context = BasicRequestContext(source: .init(channel: channel, logger: logger))
            var response: Response
            do {
                response = try await responder.respond(to: request, context: context)
            } catch {
                response = Response(status: .internalServerError)
            }
            if request.head.headerFields[.connection]?.lowercased() == "keep-alive" {
                response.headers[.connection] = "keep-alive"  // an HTTP/1.0 client (ab -k) must be told
            }
            try await responseWriter.write(response: response.head, body: response.body)
        })
        let reusePort = ChannelOptions.socketOption(NIOBSDSocket.Option(rawValue: SO_REUSEPORT))
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.backlog, value: 1024)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(reusePort, value: 1)
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .bind(host: "127.0.0.1", port: port, serverBackPressureStrategy: nil) { channel in
                http.setup(channel: channel, logger: logger)
            }
        try onListening()
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                do {
                    try await server.executeThenClose { inbound in
                        for try await connection in inbound {
                            group.addTask { await http.handle(value: connection, logger: logger) }
                        }
                    }
                } catch {
                    logger.debug("accept: \(error)")  // the socket closed by a graceful shutdown ends here too
                }
            }
        } onGracefulShutdown: {
            server.channel.close(promise: nil)
        }
    }
}
#endif  // Hummingbird
