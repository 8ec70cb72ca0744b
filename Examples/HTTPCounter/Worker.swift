#if Hummingbird
import Glibc
import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOPosix
import ShmLRU

enum Variant: String, Sendable {
    case mutex, withLock, update, none
}

/// One `GET /`: adds one to the counter the variant's way; returns the new count.
func count(_ store: ShmStore, _ variant: Variant) async throws -> Int {
    switch variant {
    case .mutex:
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

/// Serves 127.0.0.1:PORT with Hummingbird's HTTP/1 channel. Hummingbird's own
/// server sets SO_REUSEADDR only, so the socket is bound here with NIO's
/// bootstrap and SO_REUSEPORT: every worker binds the same port, and the kernel
/// spreads the connections among them.
func runWorker(variant: Variant, port: Int, key: ShmKey) async throws {
    let store = try ShmStore.attach(key: key)
    let logger = {
        var logger = Logger(label: "HTTPCounter.worker")
        logger.logLevel = .error
        return logger
    }()
    let http = HTTP1Channel(responder: { request, responseWriter, channel in
        var response: Response
        do {
            let next = try await count(store, variant)
            var buffer = channel.allocator.buffer(capacity: 16)
            let digits = String(next)  // fixed width: ab counts a body of another length as a failure
            buffer.writeString(String(repeating: " ", count: max(0, 12 - digits.count)) + digits + "\n")
            response = Response(status: .ok, headers: [.contentType: "text/plain"], body: .init(byteBuffer: buffer))
        } catch {
            var buffer = channel.allocator.buffer(capacity: 64)
            buffer.writeString("\(error)\n")
            response = Response(status: .internalServerError, body: .init(byteBuffer: buffer))
        }
        var head = response.head
        if request.head.headerFields[.connection]?.lowercased() == "keep-alive" {
            head.headerFields[.connection] = "keep-alive"  // an HTTP/1.0 client (ab -k) must be told
        }
        try await responseWriter.write(response: head, body: response.body)
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
    try store.update("listening", as: Int.self) { ($0 ?? 0) + 1 }
    await withDiscardingTaskGroup { group in
        do {
            try await server.executeThenClose { inbound in
                for try await connection in inbound {
                    group.addTask { await http.handle(value: connection, logger: logger) }
                }
            }
        } catch {
            logger.error("accept: \(error)")
        }
    }
}
#endif  // Hummingbird
