// Two processes at once: the bench spawns itself twice in worker mode
// (posix_spawn), waits until both have attached and generated their streams,
// then releases them together by closing a pipe both are blocked reading (EOF
// reaches every reader at once). Throughput = total ops / (last end - first start).
import CShm
import Glibc
import ShmLRU

/// What a worker needs to run one cell's loop.
struct WorkerJob: Sendable {
    var store: StoreKind
    var key: ShmKey
    var capacity: Int
    var workload: Workload
    var ops: Int
    var seed: UInt64
    var insertBase: UInt64
    var insertStep: UInt64
    var insertPhase: UInt64
    var intervalNanoseconds: Int64

    var arguments: [String] {
        [
            "worker", store.rawValue, String(key.unsignedValue), String(capacity), workload.rawValue, String(ops), String(seed),
            String(insertBase), String(insertStep), String(insertPhase), String(intervalNanoseconds),
        ]
    }

    init(
        store: StoreKind, key: ShmKey, capacity: Int, workload: Workload, ops: Int, seed: UInt64, insertBase: UInt64,
        insertStep: UInt64, insertPhase: UInt64, intervalNanoseconds: Int64
    ) {
        self.store = store
        self.key = key
        self.capacity = capacity
        self.workload = workload
        self.ops = ops
        self.seed = seed
        self.insertBase = insertBase
        self.insertStep = insertStep
        self.insertPhase = insertPhase
        self.intervalNanoseconds = intervalNanoseconds
    }

    init?(arguments a: [String]) {
        guard a.count == 11, a[0] == "worker", let store = StoreKind(rawValue: a[1]), let key = UInt32(a[2]),
            let capacity = Int(a[3]), let workload = Workload(rawValue: a[4]), let ops = Int(a[5]), let seed = UInt64(a[6]),
            let base = UInt64(a[7]), let step = UInt64(a[8]), let phase = UInt64(a[9]), let interval = Int64(a[10])
        else { return nil }
        self.init(
            store: store, key: ShmKey(key), capacity: capacity, workload: workload, ops: ops, seed: seed, insertBase: base,
            insertStep: step, insertPhase: phase, intervalNanoseconds: interval)
    }
}

enum WorkerFD {
    /// The read end of the release pipe, in the worker.
    static let release: Int32 = 3
}

/// Worker mode: attach, build the stream, say "ready", wait for the release, run, report.
func workerMain(_ job: WorkerJob) -> Int32 {
    let value = ValueBuffer()
    let zipf = job.workload == .mixed ? Zipf(n: job.capacity, theta: Spec.zipfTheta) : nil
    let stream = KeyStream.make(
        job.workload, capacity: job.capacity, ops: job.ops, seed: job.seed, zipf: zipf, insertBase: job.insertBase,
        insertStep: job.insertStep, insertPhase: job.insertPhase)
    var version = job.seed << 32
    func waitForRelease() {
        writeAll(1, "ready\n")
        var byte: UInt8 = 0
        while true {
            let n = read(WorkerFD.release, &byte, 1)
            if n < 0 && errno == EINTR { continue }
            break  // EOF: released (a byte would also release)
        }
    }
    do {
        let result: LoopResult
        switch job.store {
        case .floor, .dictionary:
            let region = try ShmRegion.attach(key: job.key)
            guard region.byteCount >= job.capacity * Spec.recordSize else {
                writeAll(2, "worker: floor segment too small\n")
                return 1
            }
            result = try region.withUnsafeMutableBytes { bytes -> LoopResult in
                let base = bytes.baseAddress!
                prefault(bytes)
                if job.store == .floor {
                    var store = FloorStore(base: base)
                    waitForRelease()
                    return runLoop(&store, job.workload, stream, value: value, version: &version)
                } else {
                    var store = DictionaryStore(base: base, capacity: job.capacity)
                    waitForRelease()
                    return runLoop(&store, job.workload, stream, value: value, version: &version)
                }
            }
            _ = try? region.detach()
        case .lruExact, .lruInterval:
            let cache = try ShmLRU.attach(
                key: job.key, recordSize: Spec.recordSize, options: lruOptions(job.store, intervalNanoseconds: job.intervalNanoseconds))
            try cache.region.withUnsafeMutableBytes { prefault($0) }
            var store = LRUStore(cache: cache)
            waitForRelease()
            result = runLoop(&store, job.workload, stream, value: value, version: &version)
            _ = try? cache.detach()
        }
        writeAll(1, "done \(result.start) \(result.end) \(result.ops) \(result.errors)\n")
        return result.errors == 0 ? 0 : 1
    } catch {
        writeAll(2, "worker \(job.store.rawValue): \(error)\n")
        return 1
    }
}

/// A spawned worker: its pid and the read end of its stdout.
struct SpawnedWorker {
    let pid: pid_t
    let output: Int32

    func readLine() -> String? {
        var bytes: [UInt8] = []
        var byte: UInt8 = 0
        while true {
            let n = read(output, &byte, 1)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            if byte == 10 { return String(decoding: bytes, as: UTF8.self) }
            bytes.append(byte)
        }
        return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self)
    }

    /// Waits for the exit; returns the exit code (128 + signal when killed).
    func wait() -> Int32 {
        close(output)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }
}

struct BenchFailure: Error, CustomStringConvertible { var description: String }

/// This executable's path (to spawn it again in worker mode).
func selfExecutable() -> String {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard n > 0 else { return CommandLine.arguments[0] }
    return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Spawns this executable with `arguments`, its stdout a pipe this process reads
/// (and, given `releaseFD`, that descriptor as the worker's fd 3, WorkerFD.release).
func spawnWorker(_ arguments: [String], releaseFD: Int32? = nil) throws(BenchFailure) -> SpawnedWorker {
    var out: [Int32] = [0, 0]
    guard closeOnExecPipe(&out) else { throw BenchFailure(description: "pipe2: errno \(errno)") }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    // dup2 clears close-on-exec on the target; every other pipe end stays closed in the child.
    posix_spawn_file_actions_adddup2(&actions, out[1], 1)
    if let releaseFD { posix_spawn_file_actions_adddup2(&actions, releaseFD, WorkerFD.release) }
    let executable = selfExecutable()
    let argv = ([executable] + arguments).map { strdup($0) } + [nil]
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, executable, &actions, nil, argv, environ)
    posix_spawn_file_actions_destroy(&actions)
    argv.forEach { free($0) }
    close(out[1])
    guard rc == 0 else {
        close(out[0])
        throw BenchFailure(description: "posix_spawn(\(executable)): errno \(rc)")
    }
    return SpawnedWorker(pid: pid, output: out[0])
}

/// Spawns the workers of `jobs`, releases them together, and returns each one's loop result.
func runTogether(_ jobs: [WorkerJob]) throws(BenchFailure) -> [LoopResult] {
    try runTogether(argumentLists: jobs.map(\.arguments), label: "\(jobs[0].store.rawValue) \(jobs[0].workload.rawValue)")
}

/// Spawns this executable once per argument list (a worker mode that prints
/// "ready", waits on fd 3, runs, prints "done START END OPS ERRORS"), releases
/// them together, and returns each one's loop result.
func runTogether(argumentLists: [[String]], label: String) throws(BenchFailure) -> [LoopResult] {
    var release: [Int32] = [0, 0]
    guard closeOnExecPipe(&release) else { throw BenchFailure(description: "pipe2: errno \(errno)") }
    var workers: [SpawnedWorker] = []
    var releaseOpen = true
    defer {
        if releaseOpen { close(release[1]) }
        close(release[0])
    }
    for arguments in argumentLists {
        do {
            workers.append(try spawnWorker(arguments, releaseFD: release[0]))
        } catch {
            for worker in workers { _ = kill(worker.pid, SIGKILL); _ = worker.wait() }
            throw error
        }
    }
    var failure: String? = nil
    for worker in workers where worker.readLine() != "ready" {
        failure = "a worker did not get ready"
    }
    close(release[1])  // release: every worker sees EOF at once
    releaseOpen = false
    var results: [LoopResult] = []
    for worker in workers {
        let line = worker.readLine() ?? ""
        let parts = line.split(separator: " ")
        if parts.count == 5, parts[0] == "done", let start = UInt64(parts[1]), let end = UInt64(parts[2]),
            let ops = Int(parts[3]), let errors = Int(parts[4])
        {
            results.append(LoopResult(start: start, end: end, ops: ops, errors: errors))
        } else {
            failure = failure ?? "a worker reported '\(line)'"
        }
        let status = worker.wait()
        if status != 0 { failure = failure ?? "a worker exited with status \(status)" }
    }
    if let failure { throw BenchFailure(description: failure) }
    if getenv("BENCH_DEBUG") != nil {
        let first = results.map(\.start).min() ?? 0
        writeAll(2, "  workers \(label): " + results.map { "start +\(fmt(Double($0.start - first) / 1e6, 2)) ms, \(fmt(Double($0.nanoseconds) / Double($0.ops), 1)) ns/op" }.joined(separator: "; ") + "\n")
    }
    return results
}

/// Total ops / (last end - first start), in ops per second.
func throughput(_ results: [LoopResult]) -> Double {
    let first = results.map(\.start).min() ?? 0
    let last = results.map(\.end).max() ?? 0
    let ops = results.reduce(0) { $0 + $1.ops }
    return last > first ? Double(ops) * 1e9 / Double(last - first) : 0
}

func writeAll(_ fd: Int32, _ text: String) {
    var text = text
    text.withUTF8 { buffer in
        var offset = 0
        while offset < buffer.count {
            let n = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            offset += n
        }
    }
}

/// A pipe whose ends are closed in spawned children (unless dup2'd onto another fd).
func closeOnExecPipe(_ fds: inout [Int32]) -> Bool {
    guard pipe(&fds) == 0 else { return false }
    for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    return true
}

/// Maps every page of a freshly attached segment into this process (a
/// compare-and-swap of each page's first word with itself: a write fault that
/// changes nothing, and that the optimiser cannot drop as it would drop an
/// atomic add of 0), so that page faults are part of attaching, not of the timed
/// loop. The parent's pages were mapped by its preload.
func prefault(_ bytes: UnsafeMutableRawBufferPointer) {
    guard let base = bytes.baseAddress else { return }
    var offset = 0
    while offset + 4 <= bytes.count {
        let word = (base + offset).assumingMemoryBound(to: UInt32.self)
        _ = cshm_cas_u32(word, cshm_load_relaxed_u32(word), cshm_load_relaxed_u32(word))
        offset += 4096
    }
}
