import Glibc
import ShmLRU
import Testing

// Runs the built example programs as a user would (`make example`,
// `make example-peers`) and checks what they print, their exit codes, and that
// they leave no segment behind.

/// Runs one of the package's executables to completion.
func runProduct(_ name: String, _ arguments: [String]) throws -> HelperRun {
    let path = productsDirectory() + "/" + name
    try #require(access(path, X_OK) == 0, "\(path) is missing: build every product first (`swift build --build-tests`)")
    return try SpawnedProcess(path, arguments).wait()
}

/// The segment keys an example printed (`0x…` words), to check them gone and to
/// remove them should the example have failed to.
private func printedKeys(_ output: String) -> Set<ShmKey> {
    var keys = Set<ShmKey>()
    for word in output.split(whereSeparator: { " ,():[]\"".contains($0) }) where word.hasPrefix("0x") {
        if let key = ShmKey(parsing: String(word)), !key.isPrivate { keys.insert(key) }
    }
    return keys
}

/// A fresh directory under /tmp, removed with its files after `body`.
private func withTemporaryDirectory<R>(_ body: (String) throws -> R) throws -> R {
    var template = Array("/tmp/shmlru-test-XXXXXX".utf8CString)
    let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    try #require(made != nil, "mkdtemp failed")
    let directory = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    defer {
        if let dir = opendir(directory) {
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
                if name != "." && name != ".." { unlink(directory + "/" + name) }
            }
            closedir(dir)
        }
        rmdir(directory)
    }
    return try body(directory)
}

/// Records an issue naming `what` when no line matches (without printing every line).
private func expectLine(
    _ lines: [String], _ what: String, sourceLocation: SourceLocation = #_sourceLocation,
    where predicate: (String) -> Bool
) {
    let found = lines.contains(where: predicate)
    #expect(found, "no line \(what)", sourceLocation: sourceLocation)
}

/// Records an issue when `text` lacks (or, with `absent`, has) `part`, quoting only `part`.
func expectContains(
    _ text: String, _ part: String, absent: Bool = false, sourceLocation: SourceLocation = #_sourceLocation
) {
    let found = text.contains(part)
    #expect(found != absent, "\(absent ? "unexpected" : "missing"): \(part)", sourceLocation: sourceLocation)
}

/// Counts the matching lines.
private func count(_ lines: [String], where predicate: (String) -> Bool) -> Int {
    lines.filter(predicate).count
}

@Suite struct ExampleTests {
    // MARK: MasterWorker

    @Test func masterWorkerRunsTheSeedScenario() throws {
        let run = try runProduct("MasterWorker", [])
        let keys = printedKeys(run.output)
        defer { for key in keys { try? ShmRegion.remove(key: key) } }
        #expect(run.status == 0, "stderr: \(run.errorOutput)")
        let lines = run.output.split(separator: "\n").map(String.init)

        // The master's LRU steps, as the seed's script does them.
        expectLine(lines, "about creating a key twice") { $0.contains("creating the same key again fails") && $0.contains("exists") }
        expectLine(lines, "about an unused key") { $0.hasPrefix("[master] Shm.get(") && $0.hasSuffix("-> nil: no segment has that key") }
        expectLine(lines, "about an update in place") { $0.contains("updated in place") }
        expectLine(lines, "about a read after delete") { $0.contains("after the delete -> nil") }
        let fetched = count(lines) { $0.hasPrefix("[master] fetching after adding >> hash[") }
        #expect(fetched == 10)
        expectLine(lines, "separating the dumps") { $0 == "[master] -----------------------------------------------" }
        expectLine(lines, "of a backwards dump") { $0.contains("\"order\":\"leastRecentFirst\"") }

        // Both workers read all 11 hashes, then see exactly the 3 deleted ones gone.
        let deleted = Set(lines.compactMap { line -> String? in
            line.hasPrefix("[master] deleted ") ? String(line.dropFirst("[master] deleted ".count)) : nil
        })
        #expect(deleted.count == 3)
        for worker in 1...2 {
            let prefix = "[worker \(worker)] "
            let read = count(lines) { $0.hasPrefix(prefix + "CHILD >> hash[") && $0.contains("value[") }
            #expect(read == 11, "worker \(worker) read \(read) hashes")
            let missing = Set(lines.compactMap { line -> String? in
                guard line.hasPrefix(prefix + "CHILD AFTER RELOAD >> hash["), line.contains("]: missing") else { return nil }
                return String(line.dropFirst((prefix + "CHILD AFTER RELOAD >> hash[").count).prefix { $0 != "]" })
            })
            #expect(missing == deleted, "worker \(worker) missed \(missing), master deleted \(deleted)")
            let kept = count(lines) { $0.hasPrefix(prefix + "CHILD AFTER RELOAD >> hash[") && $0.contains("value[") }
            #expect(kept == 8, "worker \(worker) found \(kept) hashes after reload")
            // The typed regions: the values the master set, read by the worker.
            for (round, (buf, arr)) in [(2, "5.0"), (3, "2.5"), (4, "1.25")].enumerated() {
                expectLine(lines, "[master] \(round) Set buf[0]=\(buf) arr[0]=\(arr)") { $0 == "[master] \(round) Set buf[0]=\(buf) arr[0]=\(arr)" }
                expectLine(lines, prefix + "\(round) Get buf[0]=\(buf) arr[0]=\(arr)") { $0 == prefix + "\(round) Get buf[0]=\(buf) arr[0]=\(arr)" }
            }
        }
        let last = lines.last
        #expect(last == "[master] done: every check passed")
        #expect(keys.count >= 4)
        for key in keys { #expect(!ShmRegion.exists(key: key), "segment \(key) left behind") }
    }

    @Test func masterWorkerReportsAFailedWorkerAndCleansUp() throws {
        let run = try runProduct("MasterWorker", ["--fail-worker", "2"])
        let keys = printedKeys(run.output)
        defer { for key in keys { try? ShmRegion.remove(key: key) } }
        #expect(run.status == 1)
        expectContains(run.output, "[master] FAILED: worker 2 (pid ")
        expectContains(run.output, "failed during 'lru-reload': it exited with status 3")
        #expect(run.errorOutput.contains("FAILED: worker 2"))
        expectContains(run.output, "[worker 1] detachAll()")  // the healthy worker is asked to exit
        expectContains(run.output, "[master] cleaned up: none of the 4 segments created here is left")
        expectContains(run.output, "done: every check passed", absent: true)
        #expect(keys.count >= 4)
        for key in keys { #expect(!ShmRegion.exists(key: key), "segment \(key) left behind") }
    }

    @Test func masterWorkerWithOneAndThreeWorkers() throws {
        for count in [1, 3] {
            let run = try runProduct("MasterWorker", ["--workers", String(count)])
            let keys = printedKeys(run.output)
            defer { for key in keys { try? ShmRegion.remove(key: key) } }
            #expect(run.status == 0, "\(run.errorOutput)")
            expectContains(run.output, "[worker \(count)] CHILD AFTER RELOAD")
            expectContains(run.output, "[worker \(count + 1)]", absent: true)
        }
    }

    @Test(arguments: [["--workers", "0"], ["--workers", "9"], ["--fail-worker", "3"], ["--bogus"]])
    func masterWorkerRejectsBadArguments(_ arguments: [String]) throws {
        let run = try runProduct("MasterWorker", arguments)
        #expect(run.status == 2)
        #expect(run.errorOutput.contains("usage") || run.errorOutput.contains("--fail-worker must"), "\(run.errorOutput)")
        #expect(run.output.isEmpty, "nothing created: \(run.output)")
    }

    // MARK: CacheProducer / CacheConsumer

    @Test func consumerStartedLaterFindsWhatTheProducerWrote() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/cache.key"
            let produced = try runProduct("CacheProducer", ["--path", path, "--id", "7", "city=Lyon", "river=Rhône"])
            let key = try ShmKey(path: path, id: 7)  // the producer created the file
            defer { try? ShmRegion.remove(key: key) }
            #expect(produced.status == 0, "\(produced.errorOutput)")
            #expect(produced.output.contains("key \(key) from ftok(\"\(path)\", 7)"))
            // The producer has exited; its cache is still there.
            let summary = try ShmLRU.probe(key: key)
            #expect(summary.count == 3)  // two entries and the list of names
            #expect(summary.attachCount == 0)

            let kept = try runProduct("CacheConsumer", ["--path", path, "--id", "7", "--keep"])
            #expect(kept.status == 0, "\(kept.errorOutput)")
            #expect(kept.output.contains("city = Lyon\n"))
            #expect(kept.output.contains("river = Rhône\n"))
            #expect(kept.output.contains("read 2 of the 2 entries"))
            #expect(ShmRegion.exists(key: key))

            let consumed = try runProduct("CacheConsumer", ["--path", path, "--id", "7"])
            #expect(consumed.status == 0, "\(consumed.errorOutput)")
            #expect(consumed.output.contains("city = Lyon\n"))
            #expect(consumed.output.contains("removed the cache \(key)"))
            #expect(!ShmRegion.exists(key: key))

            let again = try runProduct("CacheConsumer", ["--path", path, "--id", "7"])
            #expect(again.status == 1)
            #expect(again.errorOutput.contains("no cache under key \(key): run CacheProducer first"))
        }
    }

    @Test func producerDefaultsAndReplace() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/k"
            let first = try runProduct("CacheProducer", ["--path", path])
            let key = try ShmKey(path: path)
            defer { try? ShmRegion.remove(key: key) }
            #expect(first.status == 0, "\(first.errorOutput)")
            #expect(first.output.contains("set greeting"))

            let refused = try runProduct("CacheProducer", ["--path", path, "x=1"])
            #expect(refused.status == 1)
            #expect(refused.errorOutput.contains("a segment already has key \(key)"))
            #expect(try ShmLRU.attach(key: key).string(0)?.contains("greeting") == true, "the first cache is untouched")

            let replaced = try runProduct("CacheProducer", ["--path", path, "--replace", "x=1"])
            #expect(replaced.status == 0, "\(replaced.errorOutput)")
            let consumed = try runProduct("CacheConsumer", ["--path", path])
            #expect(consumed.status == 0)
            #expect(consumed.output.contains("x = 1\n"))
            #expect(!consumed.output.contains("greeting"))
            #expect(!ShmRegion.exists(key: key))
        }
    }

    @Test func peersRefuseAForeignSegmentAndMissingFiles() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/k"
            let missing = try runProduct("CacheConsumer", ["--path", path])
            #expect(missing.status == 1)
            #expect(missing.errorOutput.contains("no key file \(path): run CacheProducer first"))

            // Another program's segment under the same ftok key.
            let fd = open(path, O_CREAT | O_WRONLY, 0o644)
            try #require(fd >= 0)
            close(fd)
            let key = try ShmKey(path: path)
            defer { try? ShmRegion.remove(key: key) }
            let foreign = try ShmRegion.create(key: key, byteCount: 4096)
            try foreign.withUnsafeMutableBytes { bytes in for i in bytes.indices { bytes[i] = UInt8.random(in: 1...255) } }
            let before = foreign.withUnsafeBytes { Array($0) }

            let consumer = try runProduct("CacheConsumer", ["--path", path])
            #expect(consumer.status == 1)
            #expect(consumer.errorOutput.contains("is not a ShmLRU cache"))
            let producer = try runProduct("CacheProducer", ["--path", path, "--replace"])
            #expect(producer.status == 1)
            #expect(producer.errorOutput.contains("not a ShmLRU cache"))
            #expect(ShmRegion.exists(key: key))
            #expect(foreign.withUnsafeBytes { Array($0) } == before, "the foreign segment was written")
        }
    }

    @Test(arguments: [
        ("CacheProducer", ["--id", "0"]), ("CacheProducer", ["novalue"]), ("CacheProducer", ["--path"]),
        ("CacheConsumer", ["--bogus"]), ("CacheConsumer", ["--id", "256"]),
    ])
    func peersRejectBadArguments(_ product: String, _ arguments: [String]) throws {
        let run = try runProduct(product, arguments)
        #expect(run.status == 2)
        #expect(run.errorOutput.contains("usage:") || run.errorOutput.contains("--id needs"), "\(run.errorOutput)")
    }

    @Test func producerRefusesAValueTooLargeBeforeCreatingAnything() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/k"
            let run = try runProduct("CacheProducer", ["--path", path, "big=" + String(repeating: "x", count: 201)])
            #expect(run.status == 2)
            #expect(run.errorOutput.contains("has 201 bytes; a record holds 200"))
            if let key = try? ShmKey(path: path) {
                #expect(!ShmRegion.exists(key: key))
            }
        }
    }
}
