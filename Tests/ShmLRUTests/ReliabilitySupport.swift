import CShm
import Glibc
import ShmLRU
import Testing

/// `make stress` sets SHMLRU_STRESS=1: more kills, the 8 x 60 s soak.
let relStress = getenv("SHMLRU_STRESS") != nil

/// The helper's self-describing value (Tests/ShmLRUTestHelper/Support.swift
/// `encodeValue`): hash, version, length, then bytes derived from all three.
func relValue(hash: UInt32, version: UInt32, length: Int) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: max(length, 12))
    withUnsafeBytes(of: hash.littleEndian) { bytes.replaceSubrange(0..<4, with: $0) }
    withUnsafeBytes(of: version.littleEndian) { bytes.replaceSubrange(4..<8, with: $0) }
    withUnsafeBytes(of: UInt32(bytes.count).littleEndian) { bytes.replaceSubrange(8..<12, with: $0) }
    for i in 12..<bytes.count { bytes[i] = UInt8(truncatingIfNeeded: hash &+ version &+ UInt32(i)) }
    return bytes
}

/// The version of a whole value for `hash`, or nil if it is torn or another key's.
func relVersion(_ bytes: [UInt8], hash: UInt32) -> UInt32? {
    guard bytes.count >= 12 else { return nil }
    func word(_ at: Int) -> UInt32 {
        UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16 | UInt32(bytes[at + 3]) << 24
    }
    guard word(0) == hash, Int(word(8)) == bytes.count else { return nil }
    let version = word(4)
    for i in 12..<bytes.count where bytes[i] != UInt8(truncatingIfNeeded: hash &+ version &+ UInt32(i)) { return nil }
    return version
}

/// Reads every hash below `hashes`; each value must be whole and its own.
/// Returns how many were present.
@discardableResult
func relCheckAllValues(_ cache: ShmLRU, hashes: UInt32, _ context: String) throws -> Int {
    var present = 0
    for hash in 0..<hashes {
        if let bytes = try cache.bytes(hash) {
            #expect(relVersion(bytes, hash: hash) != nil, "\(context): hash \(hash) read torn or foreign: \(bytes.prefix(16))")
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
    func requestStop() throws {
        try region.withUnsafeMutableBytes { cshm_store_release_u32($0.baseAddress!.assumingMemoryBound(to: UInt32.self), 1) }
    }
}

/// Two fresh keys (cache and control), both removed afterwards.
func relWithKeys<R>(_ body: (ShmKey, ShmKey) throws -> R) throws -> R {
    try withKey { first in try withKey { second in try body(first, second) } }
}

func relNow() -> UInt64 { cshm_monotonic_ns() }

/// Prints a figure for the report (visible in `swift test` output).
func relReport(_ text: String) { print("[reliability] \(text)") }
