import CShm
import Glibc
import ShmLRU
import ShmLRUTestSupport
import Testing

/// `make stress` sets SHMLRU_STRESS=1: more kills, the 8 x 60 s soak.
let relStress = getenv("SHMLRU_STRESS") != nil

/// Reads every hash below `hashes`; each value must be whole and its own.
/// Returns how many were present.
@discardableResult
func relCheckAllValues(_ cache: ShmLRU, hashes: UInt32, _ context: String) throws -> Int {
    var present = 0
    for hash in 0..<hashes {
        if let bytes = try cache.bytes(hash) {
            #expect(decodeValue(bytes, hash: hash) != nil, "\(context): hash \(hash) read torn or foreign: \(bytes.prefix(16))")
            present += 1
        }
    }
    return present
}

/// A small region the helpers watch: word 0 = stop flag, word 1 = barrier
/// counter, words 2… = per-hash counters (see Commands+Reliability.swift).
struct RelControl {
    let region: ShmRegion

    init(key: ShmKey, words: Int) throws {
        region = try ShmRegion.create(key: key, byteCount: max(64, words * 4))
    }
    func word(_ index: Int) -> UInt32 {
        region.withUnsafeBytes { cshm_load_acquire_u32($0.baseAddress!.assumingMemoryBound(to: UInt32.self) + index) }
    }
    func setWord(_ index: Int, _ value: UInt32) throws {
        try region.withUnsafeMutableBytes { cshm_store_release_u32($0.baseAddress!.assumingMemoryBound(to: UInt32.self) + index, value) }
    }
    func requestStop() throws {
        try region.withUnsafeMutableBytes { cshm_store_release_u32($0.baseAddress!.assumingMemoryBound(to: UInt32.self), 1) }
    }
}

/// Two fresh keys (cache and control), both removed afterwards.
func relWithKeys<R>(_ body: (ShmKey, ShmKey) throws -> R) throws -> R {
    try withKey { first in try withKey { second in try body(first, second) } }
}

func relNow() -> UInt64 { _monotonicNanoseconds() }

/// Prints a figure for the report (visible in `swift test` output).
func relReport(_ text: String) { print("[reliability] \(text)") }
