// One of two unrelated programs that share a cache through an ftok path key:
// the producer creates a persistent cache and writes to it, then exits; the
// consumer (Examples/CacheConsumer), started later by anyone, finds it by the
// same path, reads what the producer wrote, and removes it.
//
//     CacheProducer [--path PATH] [--id N] [--replace] [NAME=VALUE ...]
//
// PATH (default /tmp/shmlru-peers.key) is created if missing: ftok needs an
// existing file, and the key is derived from its inode and device, with N (1...255,
// default 1). The cache outlives this process (`persistent: true`). Besides the
// entries (each under the FNV-1a hash of its name), hash 0 holds the list of
// names, one a line: the convention the consumer relies on. An existing cache
// under that key is an error unless --replace is given.
import Glibc
import ShmLRU

let usage = "usage: CacheProducer [--path PATH] [--id N (1...255)] [--replace] [NAME=VALUE ...]"
let recordSize = 200
let capacity = 64

func fail(_ message: String, status: Int32 = 1) -> Never {
    var line = "CacheProducer: \(message)\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    exit(status)
}

/// FNV-1a, 32 bits: the hash both programs derive from an entry's name.
func fnv1a(_ text: String) -> UInt32 {
    var hash: UInt32 = 0x811c_9dc5
    for byte in text.utf8 { hash = (hash ^ UInt32(byte)) &* 0x0100_0193 }
    return hash
}

var path = "/tmp/shmlru-peers.key"
var id: UInt8 = 1
var replace = false
var entries: [(name: String, value: String)] = []
var arguments = CommandLine.arguments.dropFirst()
while let argument = arguments.popFirst() {
    switch argument {
    case "--path":
        guard let value = arguments.popFirst(), !value.isEmpty else { fail("--path needs a file path\n\(usage)", status: 2) }
        path = value
    case "--id":
        guard let value = arguments.popFirst().flatMap({ UInt8($0) }), value != 0 else { fail("--id needs 1...255\n\(usage)", status: 2) }
        id = value
    case "--replace":
        replace = true
    case "-h", "--help":
        print(usage)
        exit(0)
    default:
        guard let eq = argument.firstIndex(of: "="), eq != argument.startIndex else {
            fail("bad argument '\(argument)'\n\(usage)", status: 2)
        }
        entries.append((String(argument[..<eq]), String(argument[argument.index(after: eq)...])))
    }
}
if entries.isEmpty {
    entries = [
        ("greeting", "hello from the producer"),
        ("producer-pid", String(getpid())),
        ("answer", "42"),
        ("motto", "two programs, one cache, no sockets"),
    ]
}
for entry in entries {
    guard !entry.name.contains("\n") else { fail("a name may not contain a newline", status: 2) }
    guard fnv1a(entry.name) != 0 else { fail("name '\(entry.name)' hashes to 0, which holds the list of names", status: 2) }
    guard entry.value.utf8.count <= recordSize else {
        fail("the value of '\(entry.name)' has \(entry.value.utf8.count) bytes; a record holds \(recordSize)", status: 2)
    }
}
let manifest = entries.map(\.name).joined(separator: "\n")
guard manifest.utf8.count <= recordSize else { fail("the list of names exceeds \(recordSize) bytes", status: 2) }

// ftok needs an existing file.
let fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0o644)
guard fd >= 0 else { fail("cannot create the key file \(path): \(String(cString: strerror(errno)))") }
close(fd)

do throws(ShmError) {
    let key = try ShmKey(path: path, id: id)
    print("CacheProducer (pid \(getpid())): key \(key) from ftok(\"\(path)\", \(id))")
    if ShmRegion.exists(key: key) {
        guard replace else {
            fail("a segment already has key \(key): run CacheConsumer to read and remove it, or pass --replace")
        }
        do {
            _ = try ShmLRU.probe(key: key)
        } catch {
            fail("key \(key) belongs to a segment that is not a ShmLRU cache (\(error.detail ?? error.description)); not replacing it")
        }
        try ShmRegion.remove(key: key)
        print("removed the earlier cache under \(key) (--replace)")
    }
    let cache = try ShmLRU.create(key: key, recordSize: recordSize, capacity: capacity, persistent: true)
    do {
        try cache.set(0, manifest)
        for entry in entries {
            let result = try cache.set(fnv1a(entry.name), entry.value)
            print("set \(entry.name) (hash \(fnv1a(entry.name)), offset \(result.offset)) = \(entry.value)")
        }
    } catch {
        try? cache.region.remove()  // do not leave a half-written cache behind
        throw error
    }
    print("wrote \(entries.count) \(entries.count == 1 ? "entry" : "entries") to a persistent cache of \(capacity) records of \(recordSize) bytes")
    print("exiting; the cache stays. Next: CacheConsumer\(path == "/tmp/shmlru-peers.key" ? "" : " --path \(path)")\(id == 1 ? "" : " --id \(id)")")
} catch {
    fail(error.description)
}
