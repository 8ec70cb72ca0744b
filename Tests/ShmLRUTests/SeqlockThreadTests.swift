import Dispatch
import Synchronization
import ShmLRU
import ShmLRUTestSupport
import Testing

/// Lock-free readers and locked writers as threads of one process, on one
/// segment: the multi-process tests exercise the same seqlock, but only threads
/// are visible to ThreadSanitizer (`make sanitize`), which must find nothing but
/// the intended racy payload copy (suppressed by name). Every value read is whole.
@Suite struct SeqlockThreadTests {
    @Test func lockFreeReadersNeverSeeTornValues() throws {
        try withKey { key in
            let writer = try ShmLRU.create(key: key, recordSize: 96, capacity: 16)
            let reader = try ShmLRU.attach(key: key, options: ShmLRU.Options(promotion: .atMostEvery(.milliseconds(1))))
            let hashes: UInt32 = 24  // more than the capacity: writers evict and reuse records under the readers
            let failures = Mutex<[String]>([])
            DispatchQueue.concurrentPerform(iterations: 4) { thread in
                var random = SplitMix64(seed: UInt64(thread) &+ 0xC0FFEE)
                for step in 0..<3_000 {
                    let hash = UInt32.random(in: 0..<hashes, using: &random)
                    do {
                        if thread < 2 {
                            let value = encodeValue(hash: hash, version: UInt32(thread * 100_000 + step), length: Int.random(in: 12...96, using: &random))
                            try writer.set(hash, value)
                        } else if let bytes = try reader.bytes(hash), decodeValue(bytes, hash: hash) == nil {
                            failures.withLock { $0.append("thread \(thread): torn or foreign value for \(hash)") }
                        }
                    } catch {
                        failures.withLock { $0.append("thread \(thread): \(error)") }
                    }
                }
            }
            #expect(failures.withLock { $0 }.isEmpty, "\(failures.withLock { $0.prefix(5) })")
            #expect(try writer.verify().isClean)
        }
    }
}
