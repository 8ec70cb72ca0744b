#if Lifecycle
import Glibc
import Logging
import ServiceLifecycle
@testable import ShmLRU
import ShmLRULifecycle
import Synchronization
import Testing

// ShmSnapshotService (ShmLRULifecycle): periodic snapshots, and a last one on
// graceful shutdown, taken before ShmSegmentsService detaches the store.

/// The outcomes a service reported.
private final class Outcomes: Sendable {
    let all = Mutex<[Result<ShmStore.SnapshotReport, ShmError>]>([])
    func record(_ result: Result<ShmStore.SnapshotReport, ShmError>) { all.withLock { $0.append(result) } }
    var count: Int { all.withLock { $0.count } }
    var entries: [Int] { all.withLock { $0.map { (try? $0.get().entries) ?? -1 } } }
}

private func temporaryPath() -> String {
    var template = Array("/tmp/shmlru-snapshot-service-XXXXXX".utf8CString)
    let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    return (made.map { String(cString: $0) } ?? "/tmp") + "/store.snap"
}

private func removeSnapshot(_ path: String) {
    unlink(path)
    rmdir(String(path.dropLast("/store.snap".count)))
}

@Suite struct ShmSnapshotServiceTests {
    @Test func snapshotsEveryIntervalWhileServing() async throws {
        let path = temporaryPath()
        defer { removeSnapshot(path) }
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 64, recordSize: 64))
            for n in 0..<10 { try store.set("k\(n)", bytes: [UInt8(n)]) }
            let outcomes = Outcomes()
            let group = ServiceGroup(
                services: [ShmSnapshotService(store: store, path: path, interval: .milliseconds(50), onSnapshot: outcomes.record)],
                logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
            let running = Task { try await group.run() }
            #expect(await eventually { outcomes.count >= 2 }, "no periodic snapshots")
            try store.set("later", bytes: [1])
            let seen = outcomes.count
            #expect(await eventually { outcomes.count >= seen + 2 })
            #expect(try ShmStore.inspectSnapshot(at: path).entries == 11)
            await group.triggerGracefulShutdown()
            try await running.value
            #expect(outcomes.entries.allSatisfy { $0 == 10 || $0 == 11 }, "\(outcomes.entries)")
        }
    }

    @Test func takesALastSnapshotOnGracefulShutdownBeforeTheStoreIsReleased() async throws {
        let path = temporaryPath()
        defer { removeSnapshot(path) }
        try await withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 64, recordSize: 64))
            let outcomes = Outcomes()
            // Shut down last first: the snapshot service, then the segments service.
            let group = ServiceGroup(
                services: [
                    ShmSegmentsService(store: store),
                    ShmSnapshotService(store: store, path: path, interval: .seconds(3_600), onSnapshot: outcomes.record),
                ],
                logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
            let running = Task { try await group.run() }
            for n in 0..<20 { try store.set("k\(n)", bytes: [UInt8(n)]) }
            #expect(outcomes.count == 0 && access(path, F_OK) != 0, "a snapshot before the interval")
            await group.triggerGracefulShutdown()
            try await running.value
            #expect(outcomes.entries == [20])
            let summary = try ShmStore.inspectSnapshot(at: path)
            #expect(summary.entries == 20 && summary.damage == nil)
            #expect(!ShmRegion.exists(key: key), "the segments service released the store after the snapshot")
        }
    }
}
#endif  // Lifecycle
