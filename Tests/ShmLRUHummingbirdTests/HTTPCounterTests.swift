#if Hummingbird
import Dispatch
import Glibc
import ShmLRU
import ShmLRUHummingbird
import ShmLRUTestSupport
import Synchronization
import Testing

/// Examples/HTTPCounter, the Router example: started as a real server of 3 worker
/// processes on a free loopback port, loaded with concurrent requests over plain
/// sockets, stopped with SIGTERM; nothing may be left behind.
@Suite struct HTTPCounterTests {
    /// N concurrent `GET /` on new connections: every answer is 200, the counts
    /// answered are exactly 1...N (no update lost, none counted twice), several
    /// worker processes answered, `/count` and the parent's final `counter=` say N.
    /// A value PUT through one worker's PersistDriver is read by every worker and
    /// by this process's own driver; the stop leaves no process and no segment.
    @Test(arguments: ["mutex", "withLock", "update"])
    func workersShareTheCounterAndThePersistedValues(variant: String) async throws {
        let key = uniqueStoreKey()
        let port = try freeLoopbackPort()
        let server = try TestProcess(
            testProductPath("HTTPCounter"), ["serve", "--variant", variant, "--workers", "3", "--port", "\(port)", "--key", key.description])
        var stopped = false
        defer {
            if !stopped {
                server.signal(SIGTERM)
                _ = server.wait(timeout: .seconds(30))
            }
            try? ShmStore.remove(key: key)
            try? ShmRegion.remove(key: key)
        }
        let ready = await offPool { server.readLine() }
        try #require(ready?.hasPrefix("ready workers=3") == true, "the server did not start: \(ready ?? "no output")")

        // N requests from 8 Dispatch threads (not the cooperative pool: the sockets block).
        let requests = 150
        let results = Results(count: requests)
        await offPool {
            DispatchQueue.concurrentPerform(iterations: 8) { thread in
                for index in stride(from: thread, to: requests, by: 8) {
                    results.store(index, Result { try httpRequest(port: port, "GET", "/") })
                }
            }
        }
        var counts: [Int] = []
        var pids: Set<Int32> = []
        for result in results.all {
            switch result {
            case .success(let response)?:
                #expect(response.status == 200, "\(response)")
                let fields = response.body.split(separator: " ", omittingEmptySubsequences: true)
                guard fields.count == 2, let count = Int(fields[0]), let pid = Int32(fields[1].dropLast()) else {
                    Issue.record("not a count and a PID: \(response.body.debugDescription)")
                    continue
                }
                counts.append(count)
                pids.insert(pid)
            case .failure(let error)?:
                Issue.record("request failed: \(error)")
            case nil:
                Issue.record("a request was not sent")
            }
        }
        #expect(counts.sorted() == Array(1...requests), "lost or doubled updates")
        #expect(pids.count >= 2, "every response came from one worker: \(pids)")
        #expect(!pids.contains(server.pid), "the parent serves nothing")
        #expect(try await request(port: port, "GET", "/count").body == "\(requests)")

        // The PersistDriver, through the workers and from this process.
        let put = try await request(port: port, "PUT", "/persist/greeting?ttl=600", body: "hello from a worker")
        #expect(put.status == 200)
        for _ in 0..<12 {  // new connections: spread over the workers
            #expect(try await request(port: port, "GET", "/persist/greeting").body == "hello from a worker")
        }
        let store = try ShmStore.attach(key: key)
        let dataKey = store.cache.key
        let persist = ShmPersistDriver(store: store, keyPrefix: "persist:")
        let read = try #require(try await persist.getWithTTL(key: "greeting", as: String.self))
        #expect(read.object == "hello from a worker")
        #expect(read.ttl.map { $0 > .zero && $0 <= .seconds(600) } == true)
        #expect(try await request(port: port, "DELETE", "/persist/greeting").status == 204)
        #expect(try await request(port: port, "GET", "/persist/greeting").status == 204)
        #expect(try await persist.get(key: "greeting", as: String.self) == nil)
        try store.detach()

        // Stop: the parent stops its workers, reports the counter, removes the store.
        server.signal(SIGTERM)
        let run = await offPool { server.wait(timeout: .seconds(60)) }
        stopped = true
        #expect(run.status == 0, "\(run.output)")
        #expect(run.output.split(separator: "\n").contains("counter=\(requests)"), "\(run.output)")
        for pid in pids {
            #expect(kill(pid, 0) == -1 && errno == ESRCH, "worker \(pid) is still running")
        }
        #expect(!ShmRegion.exists(key: key), "the store segment is left")
        #expect(!ShmRegion.exists(key: dataKey), "the data segment is left")
    }
}

/// Results written by several threads, one slot each.
final class Results: Sendable {
    private let slots: Mutex<[Result<TestHTTPResponse, any Error>?]>
    init(count: Int) { slots = Mutex(Array(repeating: nil, count: count)) }
    func store(_ index: Int, _ result: Result<TestHTTPResponse, any Error>) { slots.withLock { $0[index] = result } }
    var all: [Result<TestHTTPResponse, any Error>?] { slots.withLock { $0 } }
}

/// Runs blocking work (sockets, a child's output) on a Dispatch thread, not on
/// the cooperative pool, and waits for it without blocking a thread.
func offPool<R: Sendable>(_ body: @escaping @Sendable () -> R) async -> R {
    await withCheckedContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(returning: body()) }
    }
}

/// One HTTP exchange with the server, off the cooperative pool.
func request(port: Int, _ method: String, _ path: String, body: String = "") async throws -> TestHTTPResponse {
    try await offPool { Result { try httpRequest(port: port, method, path, body: body) } }.get()
}
#endif
