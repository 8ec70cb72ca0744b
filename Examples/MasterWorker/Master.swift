import Glibc
import ShmLRU
import Synchronization

/// Set by SIGINT/SIGTERM in the master: its waits stop, and it cleans up.
let interrupted = Atomic<Bool>(false)

private let me = "master"
private let recordSize = 250

func runMaster(_ arguments: [String]) -> Int32 {
    var workerCount = 2
    var failingWorker: Int?
    var index = 0
    while index < arguments.count {
        let argument = arguments[index]
        let value = index + 1 < arguments.count ? Int(arguments[index + 1]) : nil
        switch argument {
        case "--workers" where value.map { (1...8).contains($0) } == true: workerCount = value!
        case "--fail-worker" where value != nil: failingWorker = value
        case "-h", "--help":
            print("usage: MasterWorker [--workers N (1...8, default 2)] [--fail-worker K (tests: worker K crashes)]")
            return 0
        default:
            sayError(me, "usage: MasterWorker [--workers N (1...8, default 2)] [--fail-worker K]; bad argument '\(argument)'")
            return 2
        }
        index += 2
    }
    if let failingWorker, !(1...workerCount).contains(failingWorker) {
        sayError(me, "--fail-worker must name a worker in 1...\(workerCount)")
        return 2
    }
    signal(SIGPIPE, SIG_IGN)  // a dead worker's pipe gives EPIPE, not death
    signal(SIGINT) { _ in interrupted.store(true, ordering: .relaxed) }
    signal(SIGTERM) { _ in interrupted.store(true, ordering: .relaxed) }

    var run = MasterRun(workerCount: workerCount, failingWorker: failingWorker)
    let status: Int32
    do {
        try run.main()
        status = 0
    } catch {
        say(me, "FAILED: \(error.message)")
        sayError(me, "FAILED: \(error.message)")
        status = 1
    }
    // Clean up, whatever happened: stop the workers, detach, and check that no
    // segment of ours is left on the machine.
    for worker in run.workers where worker.exitStatus == nil || status != 0 {
        let exit = worker.stop()
        if status != 0 { say(me, "worker \(worker.id) (pid \(worker.pid)) \(describeStatus(exit))") }
    }
    let ids = Set(run.createdIDs)
    Shm.detachAll()
    let left = ShmRegion.list().filter { ids.contains($0.id) }
    if left.isEmpty {
        say(me, "cleaned up: none of the \(ids.count) segments created here is left")
    } else {
        say(me, "segments left behind: \(left.map { "\($0.key) (id \($0.id))" }.joined(separator: ", "))")
        return 1
    }
    if status == 0 { say(me, "done: every check passed") }
    return status
}

private struct MasterRun {
    let workerCount: Int
    let failingWorker: Int?
    var workers: [WorkerProcess] = []
    var createdIDs: [Int32] = []

    init(workerCount: Int, failingWorker: Int?) {
        self.workerCount = workerCount
        self.failingWorker = failingWorker
    }

    private func check(_ condition: Bool, _ message: @autoclosure () -> String) throws(ExampleFailure) {
        guard condition else { throw ExampleFailure(message()) }
    }

    mutating func main() throws(ExampleFailure) {
        say(me, "ShmLRU master/worker example: pid \(getpid()), \(workerCount) worker(s)")

        // --- Regions (shm-typed-array) ---
        // Creating a key twice fails; getting a key nobody created fails.
        guard let a = Shm.create(10, .float32) else { throw ExampleFailure("create: \(Shm.get_last_reason(0))") }
        createdIDs.append(a.id)
        say(me, "created a Float region of 10 elements under key \(a.key)")
        do {
            _ = try ShmRegion.create(key: a.key, count: 10, of: Float.self)
            throw ExampleFailure("creating key \(a.key) twice succeeded")
        } catch let error as ShmError {
            try check(error.code == .exists, "creating key \(a.key) twice: \(error)")
            say(me, "creating the same key again fails, as it must: \(error)")
        } catch let error as ExampleFailure {
            throw error
        } catch {
            throw ExampleFailure("\(error)")
        }
        var unused = ShmKey(UInt32.random(in: 1...0xFFFF_FFFE))
        while ShmRegion.exists(key: unused) { unused = ShmKey(UInt32.random(in: 1...0xFFFF_FFFE)) }
        try check(Shm.get(unused) == nil, "Shm.get(\(unused)) found a segment")
        say(me, "Shm.get(\(unused)) -> nil: no segment has that key")

        guard let bufRegion = Shm.create(4096), let arrRegion = Shm.create(1_000_000, .float32) else {
            throw ExampleFailure("create: \(Shm.get_last_reason(0))")
        }
        createdIDs += [bufRegion.id, arrRegion.id]
        let buf = bufRegion.array(of: UInt8.self)
        let arr = arrRegion.array(of: Float.self)
        try check(arr.count == 1_000_000 && arrRegion.byteCount == 4_000_000, "arr has \(arr.count) elements")
        buf[0] = 1
        arr[0] = 10.0
        say(me, "buf: key \(bufRegion.key), \(buf.count) UInt8; arr: key \(arrRegion.key), \(arr.count) Float (\(arrRegion.byteCount) bytes)")
        say(me, "Set buf[0]=\(buf[0]) arr[0]=\(arr[0])")

        // --- The LRU (shm-typed-lru) ---
        guard let lruRegion = Shm.create(1_000_000) else { throw ExampleFailure("create: \(Shm.get_last_reason(0))") }
        createdIDs.append(lruRegion.id)
        let key = lruRegion.key
        guard let cache = Shm.initLRU(key, recordSize, 10_000) else {
            throw ExampleFailure("initLRU: \(Shm.get_last_reason(key))")
        }
        say(me, "initLRU(\(key), \(recordSize), 10000) -> \(cache) records (the LRU uses the first 10000 bytes)")
        let cache2 = Shm.initLRU(key, recordSize, 10_000)
        try check(cache2 == cache, "a second initLRU gave \(String(describing: cache2))")
        say(me, "initLRU again in this process -> \(cache2!) records: the same cache, not a new one")
        say(me, "segment size: \(Shm.getSegmentSize(key) ?? -1) bytes")

        var expected: [UInt32: String] = [:]
        func set(_ hash: UInt32, _ value: String) throws(ExampleFailure) -> Int {
            guard let offset = Shm.set(key, hash, value) else {
                throw ExampleFailure("set(\(hash)): \(Shm.get_last_reason(key))")
            }
            expected[hash] = value
            return offset
        }

        let hash: UInt32 = 134
        var offset = try set(hash, "this is at test")
        say(me, "set(\(hash), \"this is at test\") -> offset \(offset)")
        try check(Shm.get_el(key, offset) == "this is at test", "get_el(\(offset))")
        say(me, "get_el(\(offset)) -> \(Shm.get_el(key, offset)!)")
        let firstOffset = offset
        offset = try set(hash, "we test different this time")
        try check(offset == firstOffset, "an update moved the record from \(firstOffset) to \(offset)")
        say(me, "set(\(hash), \"we test different this time\") -> offset \(offset): updated in place")
        try check(Shm.get_el(key, offset) == "we test different this time", "get_el after update")
        say(me, "get_el(\(offset)) -> \(Shm.get_el(key, offset)!)")

        var hash2: UInt32 = 136
        offset = try set(hash2, "we wolly gollies abren")
        say(me, "set(\(hash2), \"we wolly gollies abren\") -> offset \(offset); get_el -> \(Shm.get_el(key, offset) ?? "nil")")
        try check(Shm.del_el(key, offset), "del_el(\(offset)): \(Shm.get_last_reason(key))")
        expected[hash2] = nil
        say(me, "del_el(\(offset)) -> deleted")
        let afterDelete = Shm.get_el(key, offset)
        try check(afterDelete == nil, "get_el of a deleted record gave \(afterDelete!)")
        say(me, "get_el(\(offset)) after the delete -> nil (\(Shm.get_last_reason(key)))")
        try check(Shm.get_el_hash(key, hash2) == nil, "hash \(hash2) still found after delete")

        var hashes: [UInt32] = []
        for i in 0..<10 {
            hash2 += 1
            hashes.append(hash2)
            _ = try set(hash2, "GEEE \(i) wolly gollies abren")
        }
        say(me, "set 10 more hashes: \(hashes.map(String.init).joined(separator: ", "))")
        for h in hashes {
            let value = Shm.get_el_hash(key, h)
            try check(value == expected[h], "get_el_hash(\(h)) -> \(value ?? "nil")")
            say(me, "fetching after adding >> hash[\(h)]: value[\(value!)]")
        }
        try dump(key, backwards: false)

        // Three random reads: each read makes its record the most recently used.
        var order = try dumpedHashes(key, backwards: false)
        for h in hashes.shuffled().prefix(3) {
            let value = Shm.get_el_hash(key, h)
            try check(value == expected[h], "get_el_hash(\(h))")
            order.removeAll { $0 == h }
            order.insert(h, at: 0)
            say(me, "read hash[\(h)]: value[\(value!)] (now the most recently used)")
        }
        let forward = try dump(key, backwards: false)
        try check(forward == order, "the LRU order is \(forward), expected \(order)")
        say(me, "-----------------------------------------------")
        let backward = try dump(key, backwards: true)
        try check(backward == forward.reversed(), "the backwards dump is not the forward one reversed")
        say(me, "the backwards dump is the forward one reversed, and the reads moved their records to the head")

        // --- Workers: real processes, this binary in worker mode ---
        let executable = try selfExecutable()
        for id in 1...workerCount {
            workers.append(
                try WorkerProcess(executable: executable, id: id, failAt: failingWorker == id ? "lru-reload" : nil))
        }
        say(me, "spawned \(workerCount) worker(s) of \(executable): \(workers.map { "pid \($0.pid)" }.joined(separator: ", "))")

        for worker in workers {
            let reply = try worker.request("shm \(bufRegion.key) \(arrRegion.key)")
            try checkTyped(reply, worker: worker, buf: buf[0], arr: arr[0])
        }
        let allHashes = ([hash] + hashes).map(String.init).joined(separator: ",")
        for worker in workers {
            let reply = try worker.request("lru \(key) \(recordSize) \(allHashes)")
            try checkValues(reply, worker: worker, expected: expected, hashes: [hash] + hashes)
        }
        say(me, "every worker read every hash")

        // Every process is attached: remove the keys now. The memory stays until
        // the last process detaches, and nothing can outlive us, even if all of
        // us are killed from here on.
        for region in [a, bufRegion, arrRegion, lruRegion] {
            do { try region.remove() } catch { throw ExampleFailure("remove: \(error)") }
        }
        say(me, "all attached: segments marked for removal (they go with the last detach)")

        var deleted: [UInt32] = []
        for h in hashes.shuffled().prefix(3).sorted() {
            try check(Shm.del_key(key, h), "del_key(\(h)): \(Shm.get_last_reason(key))")
            expected[h] = nil
            deleted.append(h)
            say(me, "deleted \(h)")
        }
        for worker in workers {
            let reply = try worker.request("lru-reload \(allHashes)")
            try checkValues(reply, worker: worker, expected: expected, hashes: [hash] + hashes)
        }
        say(me, "every worker sees \(deleted.map(String.init).joined(separator: ", ")) gone and the other \(expected.count) hashes in place")

        for round in 0..<3 {
            buf[0] += 1
            arr[0] /= 2
            say(me, "\(round) Set buf[0]=\(buf[0]) arr[0]=\(arr[0])")
            for worker in workers {
                try checkTyped(try worker.request("typed \(round)"), worker: worker, buf: buf[0], arr: arr[0])
            }
        }
        for worker in workers {
            _ = try worker.request("exit")
            let status = worker.stop()
            try check(status == 0, "worker \(worker.id) \(describeStatus(status))")
        }
        say(me, "every worker exited 0")
    }

    /// Prints the dump one record a line and returns its hashes in order.
    @discardableResult
    private func dump(_ key: ShmKey, backwards: Bool) throws(ExampleFailure) -> [UInt32] {
        guard let json = Shm.debug_dump_list(key, backwards) else {
            throw ExampleFailure("debug_dump_list: \(Shm.get_last_reason(key))")
        }
        say(me, "debug_dump_list(\(key)\(backwards ? ", backwards" : "")):\n" + recordPerLine(json))
        return try dumpedHashes(key, backwards: backwards)
    }

    private func dumpedHashes(_ key: ShmKey, backwards: Bool) throws(ExampleFailure) -> [UInt32] {
        guard let json = Shm.debug_dump_list(key, backwards) else {
            throw ExampleFailure("debug_dump_list: \(Shm.get_last_reason(key))")
        }
        // Each record has `"hash":N`; values cannot contain that unescaped quote pattern.
        return json.split(separator: "\"hash\":").dropFirst().compactMap { UInt32($0.prefix { $0.isNumber }) }
    }

    private func checkTyped(
        _ reply: [(key: String, value: String)], worker: WorkerProcess, buf: UInt8, arr: Float
    ) throws(ExampleFailure) {
        let fields = Dictionary(reply, uniquingKeysWith: { first, _ in first })
        try check(
            fields["buf0"] == String(buf) && fields["arr0"].flatMap(Float.init) == arr,
            "worker \(worker.id) read buf[0]=\(fields["buf0"] ?? "?") arr[0]=\(fields["arr0"] ?? "?"); the master wrote \(buf), \(arr)")
    }

    private func checkValues(
        _ reply: [(key: String, value: String)], worker: WorkerProcess, expected: [UInt32: String], hashes: [UInt32]
    ) throws(ExampleFailure) {
        let fields = Dictionary(reply, uniquingKeysWith: { first, _ in first })
        for h in hashes {
            guard let field = fields[String(h)] else { throw ExampleFailure("worker \(worker.id) did not report hash \(h)") }
            let seen = field == "-" ? nil : hexDecode(Substring(field))
            try check(
                seen == expected[h],
                "worker \(worker.id) read hash \(h) as \(seen.map { "\"\($0)\"" } ?? "missing"); expected \(expected[h].map { "\"\($0)\"" } ?? "missing")")
        }
    }
}

/// The path of this executable (the workers run it again).
private func selfExecutable() throws(ExampleFailure) -> String {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard n > 0 else { throw ExampleFailure("readlink(/proc/self/exe): \(String(cString: strerror(errno)))") }
    return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
