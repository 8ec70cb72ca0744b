// The second of two unrelated programs sharing a cache through an ftok path key
// (see Examples/CacheProducer): started after the producer has exited, it finds
// the cache by the same path, prints every entry the producer wrote, and then
// removes the cache, unless --keep is given.
//
//     CacheConsumer [--path PATH] [--id N] [--keep]
//
// PATH defaults to /tmp/shmlru-peers.key, N to 1, as for the producer. The key
// file is left in place (it is only a name). Exit status: 0 when the cache was
// found and read, 1 when there is no key file or no cache, or the segment under
// that key is not a ShmLRU cache; 2 for bad arguments.
import Glibc
import ShmLRU

let usage = "usage: CacheConsumer [--path PATH] [--id N (1...255)] [--keep]"

func fail(_ message: String, status: Int32 = 1) -> Never {
    var line = "CacheConsumer: \(message)\n"
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
var keep = false
var arguments = CommandLine.arguments.dropFirst()
while let argument = arguments.popFirst() {
    switch argument {
    case "--path":
        guard let value = arguments.popFirst(), !value.isEmpty else { fail("--path needs a file path\n\(usage)", status: 2) }
        path = value
    case "--id":
        guard let value = arguments.popFirst().flatMap({ UInt8($0) }), value != 0 else { fail("--id needs 1...255\n\(usage)", status: 2) }
        id = value
    case "--keep":
        keep = true
    case "-h", "--help":
        print(usage)
        exit(0)
    default:
        fail("bad argument '\(argument)'\n\(usage)", status: 2)
    }
}

let key: ShmKey
do {
    key = try ShmKey(path: path, id: id)
} catch where error.code == .notFound {
    fail("no key file \(path): run CacheProducer first")
} catch {
    fail(error.description)
}
print("CacheConsumer (pid \(getpid())): key \(key) from ftok(\"\(path)\", \(id))")

let cache: ShmLRU
do {
    cache = try ShmLRU.attach(key: key, options: ShmLRU.Options(attachWait: .milliseconds(200)))
} catch where error.code == .notFound {
    fail("no cache under key \(key): run CacheProducer first")
} catch where error.code == .incompatibleSegment || error.code == .corrupted {
    fail("the segment under key \(key) is not a ShmLRU cache (\(error.detail ?? error.description)); left alone")
} catch {
    fail(error.description)
}

do throws(ShmError) {
    print("found a cache of \(cache.count) records (\(cache.capacity) x \(cache.recordSize) bytes)")
    guard let manifest = try cache.string(0) else {
        fail("the cache has no list of names under hash 0: not written by CacheProducer?")
    }
    let names = manifest.split(separator: "\n").map(String.init)
    var found = 0
    for name in names {
        if let value = try cache.string(fnv1a(name)) {
            print("\(name) = \(value)")
            found += 1
        } else {
            print("\(name): missing (evicted or deleted since)")
        }
    }
    print("read \(found) of the \(names.count) entries the producer wrote")
    if keep {
        print("kept the cache (--keep); remove it with: CacheConsumer\(path == "/tmp/shmlru-peers.key" ? "" : " --path \(path)") or shm-lru rm \(key)")
    } else {
        try cache.region.remove()
        print("removed the cache \(key): it goes when the last process detaches (now)")
    }
} catch {
    fail(error.description)
}
