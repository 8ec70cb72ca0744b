import CShm
import Glibc
@testable import ShmLRU
import ShmLRUTestSupport
import Testing

/// Regression tests for issue 11 on the cache and its handles: each test is
/// named after its finding and failed on the code before the fix.
@Suite(.serialized) struct LRUHardeningTests {
    /// Finding 4: a writer stopped (SIGSTOP) inside its critical section, with
    /// the index sequence odd (mid-delete) or a record's sequence odd (mid-write),
    /// made every lock-free read wait out the lock timeout and throw. Now a read
    /// never waits for the lock: it answers (a hit, or at worst a miss). The
    /// writer is a helper stopped at a fault-injection point; the cache here has a
    /// 3 s lock timeout, and every read must return without `.lockTimeout`.
    @Test(arguments: [("index.shifting", "remove"), ("record.torn", "set")])
    func stoppedWriterDoesNotMakeLockFreeReadsWait(point: String, operation: String) throws {
        try withKey { key in
            let cache = try ShmLRU.create(key: key, recordSize: 64, capacity: 16, index: .shared)
            for hash: UInt32 in 1...8 { try cache.set(hash, encodeValue(hash: hash, version: 1, length: 24)) }
            let arguments = operation == "set" ? ["set", "2", "9", "40"] : ["remove", "2"]
            let writer = try spawnHelper(["rel-op", key.description, "\(point)@1:stop"] + arguments)
            defer {
                writer.kill(SIGKILL)
                _ = writer.wait()
            }
            #expect(eventually(timeout: .seconds(30)) { processState(writer.pid) == "T" }, "the writer never stopped at \(point)")
            let reader = try ShmLRU.attach(
                key: key, options: .init(promotion: .atMostEvery(.milliseconds(5)), lockTimeout: .seconds(3)))
            var hits = 0
            for round in 0..<3 {
                for hash: UInt32 in 1...8 {
                    do {
                        if let bytes = try reader.bytes(hash) {
                            #expect(decodeValue(bytes, hash: hash) != nil, "round \(round): hash \(hash) read torn")
                            hits += 1
                        }
                    } catch {
                        Issue.record("\(point): a lock-free read of \(hash) threw \(error) while the writer is stopped")
                    }
                }
            }
            // Mid-write of one record, the others are not moving: they still hit.
            if point == "record.torn" { #expect(hits >= 3 * 7, "\(hits) hits") }
        }
    }

    /// Finding 5: `detach()` racing an operation of another thread used to unmap
    /// the segment under it (SIGSEGV). Now the handle is marked detached first
    /// (later operations throw `.detached`), locked operations in flight are
    /// waited for, and the mapping is replaced by zero pages, never left unmapped.
    /// A helper races two threads against a detach, 150 rounds for each kind.
    @Test(arguments: ["exact", "interval", "store"])
    func detachRacingOperationsDoesNotReadUnmappedMemory(kind: String) throws {
        try withStoreKey { key in
            var keep: AnyObject
            if kind == "store" {
                keep = try ShmStore.create(key: key, configuration: .init(capacity: 64, recordSize: 64))
            } else {
                keep = try ShmLRU.create(key: key, recordSize: 64, capacity: 64, index: .shared)
            }
            defer { _ = keep }
            let run = try runHelper(["detach-race", key.description, kind, relStress ? "1000" : "150"])
            #expect(run.status == 0, "status \(run.status): \(run.errorOutput.prefix(2000))")
            #expect(run.values["rounds"] != nil)
        }
    }

    /// Finding 5, listeners: `ShmRegion.detachAll()` detaches a store behind its
    /// back; its pump notices, ends the listeners, and never reads unmapped memory
    /// (in a helper: detachAll detaches everything of its process).
    @Test func detachAllEndsListenersWithoutUnmappingUnderThePump() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(capacity: 16, recordSize: 64))
            defer { try? store.detach() }
            let run = try runHelper(["store-listen-detach-all", key.description])
            #expect(run.status == 0, "status \(run.status): \(run.errorOutput)")
            #expect(run.values["ended"] == "1")
            #expect(run.values["afterwards"] == "detached")
        }
    }
}

/// The state letter of a process (/proc/PID/stat): R, S, T (stopped)…
func processState(_ pid: pid_t) -> Character? {
    guard let file = fopen("/proc/\(pid)/stat", "r") else { return nil }
    defer { fclose(file) }
    var buffer = [CChar](repeating: 0, count: 512)
    guard fgets(&buffer, Int32(buffer.count), file) != nil else { return nil }
    let line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    guard let close = line.lastIndex(of: ")") else { return nil }
    return line[line.index(after: close)...].first { $0 != " " }
}
