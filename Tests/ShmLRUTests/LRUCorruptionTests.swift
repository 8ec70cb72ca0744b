import Glibc
import ShmLRU
import Testing

/// No byte found in a segment may crash the process: random words written over
/// the list state, the index and the records, then random operations. Run in a
/// helper process so that a trap or a hang shows as its exit status.
@Suite struct LRUCorruptionTests {
    @Test(arguments: [UInt64(1), 2, 3])
    func corruptedStructureNeverCrashes(_ seed: UInt64) throws {
        try withKey { key in
            let fuzz = try spawnHelper(["lru-corrupt-fuzz", key.description, String(seed), "150"])
            // A failure guard against a hang, not a timing assertion.
            let guardTask = HangGuard.start(pid: fuzz.pid, seconds: 120)
            let run = fuzz.wait()
            guardTask.cancel()
            #expect(run.status == 0, "seed \(seed): \(run.errorOutput.prefix(3000))")
            #expect(run.values["repaired"] == "150")
            #expect(Int(run.values["errors"] ?? "") ?? 0 > 0, "the corruption was noticed")
        }
    }
}

/// Kills a process that outlives a generous deadline (a hang guard).
enum HangGuard {
    final class Guard: @unchecked Sendable {
        private var cancelled = false
        private let lock = HangGuardLock()
        func cancel() { lock.withLock { cancelled = true } }
        var isCancelled: Bool { lock.withLock { cancelled } }
    }

    static func start(pid: pid_t, seconds: Int) -> Guard {
        let guardObject = Guard()
        var thread = pthread_t()
        let box = Unmanaged.passRetained(GuardBox(guardObject, pid, seconds)).toOpaque()
        pthread_create(&thread, nil, { raw in
            let box = Unmanaged<GuardBox>.fromOpaque(raw!).takeRetainedValue()
            let deadline = time(nil) + box.seconds
            while time(nil) < deadline {
                if box.guardObject.isCancelled { return nil }
                usleep(10_000)
            }
            if !box.guardObject.isCancelled { kill(box.pid, SIGKILL) }
            return nil
        }, box)
        pthread_detach(thread)
        return guardObject
    }

    final class GuardBox {
        let guardObject: Guard
        let pid: pid_t
        let seconds: Int
        init(_ guardObject: Guard, _ pid: pid_t, _ seconds: Int) {
            self.guardObject = guardObject
            self.pid = pid
            self.seconds = seconds
        }
    }
}

/// A pthread mutex, for the guard flag.
final class HangGuardLock: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    init() { pthread_mutex_init(&mutex, nil) }
    deinit { pthread_mutex_destroy(&mutex) }
    func withLock<R>(_ body: () -> R) -> R {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return body()
    }
}
