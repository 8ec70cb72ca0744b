import Glibc
@testable import ShmLRU
import ShmLRUTestSupport
import Testing

/// Lent reads (`ShmStore.withBytes`): the value lent without allocating, one
/// whole version of it, never torn or another key's, also while another process
/// rewrites it.
extension StoreReadTests {
    struct Thrown: Error {}

    @Test func withBytesLendsTheValue() throws {
        for promotion in [ShmLRU.Promotion.atMostEvery(.seconds(1)), .onEveryRead] {
            try withStoreKey { key in
                let store = try ShmStore.create(key: key, configuration: .init(capacity: 8, recordSize: 4096, promotion: promotion))
                try store.set("k", bytes: [1, 2, 3, 4, 5])
                try store.set("empty", bytes: [])
                let long = (0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 7) }  // longer than the stack buffer
                try store.set("long", bytes: long)
                #expect(try store.withBytes("k") { Array($0) } == [1, 2, 3, 4, 5])
                #expect(try store.withBytes("empty") { $0.count } == 0)
                #expect(try store.withBytes("long") { Array($0) } == long)
                var called = false
                #expect(try store.withBytes("absent") { _ in called = true } == nil)
                #expect(!called, "the body is not called for an absent key")
                #expect(throws: Thrown.self) { try store.withBytes("k") { _ -> Int in throw Thrown() } }
                try store.detach()
                expectError(.detached) { _ = try store.withBytes("k") { $0.count } }
            }
        }
    }

    @Test func withBytesLendsSpilledValues() throws {
        try withStoreKey { key in
            let store = try ShmStore.create(key: key, configuration: .init(memory: 4 << 20, maxValueSize: 64 * 1024))
            for length in [0, 100, 900, 5_000, 40_000] {
                let value = (0..<length).map { UInt8(truncatingIfNeeded: $0 &+ length) }
                try store.set("v\(length)", bytes: value)
                #expect(try store.withBytes("v\(length)") { Array($0) } == value)
                #expect(try store.bytes("v\(length)") == value)
            }
        }
    }

    /// Another process rewrites two keys that share probe hashes, round after
    /// round, with values of changing lengths (inline, and in memory mode
    /// spilled values shorter and longer than the stack buffer), while this one
    /// reads them with `withBytes`, `bytes` and `bytes(into:)`: every value lent
    /// is whole and its key's, rounds never go back, and the keys, present
    /// throughout, never miss.
    @Test func withBytesNeverLendsATornOrForeignValue() throws {
        let names = Array(probeSharingNames(count: 2))
        let configurations: [(ShmStore.Configuration, spread: Int)] = [
            // Few spare records: a freed record is soon rewritten, under a reader that may still be copying it.
            (.init(capacity: 6, recordSize: 512), 400),
            (.init(memory: 4 << 20, maxValueSize: 8192), 3_000),
        ]
        for (configuration, spread) in configurations {
            try withStoreKey { key in
                let store = try ShmStore.create(key: key, configuration: configuration)
                for name in names { try store.set(name, bytes: lentValue(name: name, round: 0, spread: spread)) }
                let rounds = 100_000
                let writer = try spawnHelper(["store-rewrite-loop", key.description, String(rounds), String(spread)] + names)
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 8192, alignment: 16)
                defer { buffer.deallocate() }
                var reads = 0, misses = 0, bad: [String] = []
                var last = [Int](repeating: 0, count: names.count)
                func check(_ round: Int?, _ index: Int, _ how: String) {
                    guard let round else { return bad.append("\(how) \(names[index]): not a whole value of the key") }
                    if round < last[index] { bad.append("\(how) \(names[index]): round \(round) after \(last[index])") }
                    last[index] = round
                }
                while reads < 5_000_000, bad.count < 5 {
                    for (index, name) in names.enumerated() {
                        switch reads % 3 {
                        case 0:
                            let round = try store.withBytes(name) { wholeLentValueRound($0, name: name, spread: spread) ?? -1 }
                            if let round { check(round < 0 ? nil : round, index, "withBytes") } else { misses += 1 }
                        case 1:
                            if let bytes = try store.bytes(name) {
                                check(bytes.withUnsafeBytes { wholeLentValueRound($0, name: name, spread: spread) }, index, "bytes")
                            } else { misses += 1 }
                        default:
                            if let count = try store.bytes(name, into: buffer) {
                                check(wholeLentValueRound(UnsafeRawBufferPointer(rebasing: buffer[0..<count]), name: name, spread: spread), index, "into")
                            } else { misses += 1 }
                        }
                    }
                    reads += 1
                    if reads % 256 == 0, try store.contains("done") || processState(writer.pid) == "Z" { break }
                }
                let run = writer.wait()
                #expect(run.status == 0, "\(run.errorOutput)")
                #expect(bad.isEmpty, "\(bad)")
                #expect(misses == 0, "\(misses) misses of a present key in \(reads) reads")
                #expect(reads > 100)
                for name in names {
                    #expect(try store.withBytes(name) { wholeLentValueRound($0, name: name, spread: spread) } == rounds)
                }
                #expect(try store.verify().isClean)
            }
        }
    }
}
