import Glibc
import ShmLRU

/// Every command, by name: each area keeps its own table in its own file.
let helperCommands: [String: HelperCommand] = coreCommands
    .merging(storeCommands) { first, _ in first }
    .merging(reliabilityCommands) { first, _ in first }
    .merging(exampleCommands) { first, _ in first }

/// Region and core LRU commands.
let coreCommands: [String: HelperCommand] = [
    "region-write-float": regionWriteFloat,
    "region-read-float": regionReadFloat,
    "lru-get": lruGet,
    "lru-set": lruSet,
    "lru-hammer": lruHammer,
]

/// region-write-float KEY INDEX VALUE
func regionWriteFloat(_ arguments: [String]) throws {
    let region = try ShmRegion.attach(key: try keyArgument(arguments, 0))
    let index: Int = try intArgument(arguments, 1, "INDEX")
    guard let value = Float(try argument(arguments, 2, "VALUE")) else { throw HelperFailure(message: "bad VALUE") }
    try region.array(of: Float.self).setElement(value, at: index)
    emit("written", value)
}

/// region-read-float KEY INDEX
func regionReadFloat(_ arguments: [String]) throws {
    let region = try ShmRegion.attach(key: try keyArgument(arguments, 0), readOnly: true)
    let index: Int = try intArgument(arguments, 1, "INDEX")
    emit("value", try region.array(of: Float.self).element(at: index))
}

/// lru-get KEY HASH  → value=… or miss=1
func lruGet(_ arguments: [String]) throws {
    let cache = try ShmLRU.attach(key: try keyArgument(arguments, 0))
    let hash: UInt32 = try intArgument(arguments, 1, "HASH", as: UInt32.self)
    if let value = try cache.string(hash) { emit("value", value) } else { emit("miss", 1) }
}

/// lru-set KEY HASH VALUE  → offset=…
func lruSet(_ arguments: [String]) throws {
    let cache = try ShmLRU.attach(key: try keyArgument(arguments, 0))
    let hash: UInt32 = try intArgument(arguments, 1, "HASH", as: UInt32.self)
    emit("offset", try cache.set(hash, try argument(arguments, 2, "VALUE")).offset)
}

/// lru-hammer KEY SEED OPS HASHES [interval-ms]
///
/// Random set/get/delete over hashes 0..<HASHES, shared with other hammering
/// processes. Every value read must decode as a whole value for its hash
/// (never torn, never another key's). Prints counts.
func lruHammer(_ arguments: [String]) throws {
    let key = try keyArgument(arguments, 0)
    let seed: UInt64 = try intArgument(arguments, 1, "SEED", as: UInt64.self)
    let operations: Int = try intArgument(arguments, 2, "OPS")
    let hashes: UInt32 = try intArgument(arguments, 3, "HASHES", as: UInt32.self)
    let intervalMs: Int = arguments.count > 4 ? try intArgument(arguments, 4, "INTERVAL") : 0
    let options = ShmLRU.Options(promotion: intervalMs > 0 ? .atMostEvery(.milliseconds(intervalMs)) : .onEveryRead)
    let cache = try ShmLRU.attach(key: key, options: options)
    var random = SplitMix64(seed: seed)
    var sets = 0, hits = 0, misses = 0, deletes = 0
    let maxLength = cache.recordSize
    for step in 0..<operations {
        let hash = UInt32.random(in: 0..<hashes, using: &random)
        switch Int.random(in: 0..<10, using: &random) {
        case 0..<4:
            let length = Int.random(in: 12...maxLength, using: &random)
            try cache.set(hash, encodeValue(hash: hash, version: UInt32(truncatingIfNeeded: seed &* 1_000_003 &+ UInt64(step)), length: length))
            sets += 1
        case 4..<9:
            if let bytes = try cache.bytes(hash) {
                guard decodeValue(bytes, hash: hash) != nil else {
                    throw HelperFailure(message: "read a torn or foreign value for hash \(hash): \(bytes.prefix(16))")
                }
                hits += 1
            } else {
                misses += 1
            }
        default:
            if try cache.remove(hash) { deletes += 1 }
        }
    }
    emit("sets", sets)
    emit("hits", hits)
    emit("misses", misses)
    emit("deletes", deletes)
}
