import Glibc
import ShmLRU
import ShmLRUTestSupport

/// Commands for the tests of stores sized by memory (values of any size).
let memoryCommands: [String: HelperCommand] = [
    "mem-check": memCheck,
    "mem-churn": memChurn,
    "mem-replace": memReplace,
    "mem-set-fault": memSetFault,
]

/// The value stored for key number `id`, version `version`: self-describing
/// (its key, version and length, and bytes derived from them).
func memValue(id: UInt32, version: UInt32, length: Int) -> [UInt8] { encodeValue(hash: id, version: version, length: length) }

/// A log-uniform length in 64...65536.
func memLength(_ random: inout SplitMix64) -> Int {
    let exponent = 6 + Double(random.next() % 10_001) / 1_000  // 6 ... 16
    return min(65_536, max(64, Int(pow(2.0, exponent))))
}

/// mem-check KEY NAME ID LENGTH  → version=… (the value is whole, of key ID, LENGTH bytes) or miss=1
func memCheck(_ arguments: [String]) throws {
    let store = try ShmStore.attach(key: try keyArgument(arguments, 0))
    let name = try argument(arguments, 1, "NAME")
    let id: UInt32 = try intArgument(arguments, 2, "ID", as: UInt32.self)
    let length: Int = try intArgument(arguments, 3, "LENGTH")
    guard let bytes = try store.bytes(name) else {
        emit("miss", 1)
        return
    }
    guard bytes.count == max(12, length), let version = decodeValue(bytes, hash: id) else {
        throw HelperFailure(message: "\(name): \(bytes.count) bytes, not a whole value of key \(id) and length \(length)")
    }
    emit("version", version)
}

/// mem-churn KEY SEED OPS KEYS
///
/// Random sets (log-uniform 64 B...64 KiB, self-describing), gets (each value
/// read must be whole and its own key's) and removes over keys m0..<KEYS,
/// shared with other churning processes. Prints counts; exits 1 on a bad read.
func memChurn(_ arguments: [String]) throws {
    let store = try ShmStore.attach(key: try keyArgument(arguments, 0))
    var random = SplitMix64(seed: try intArgument(arguments, 1, "SEED", as: UInt64.self))
    let operations: Int = try intArgument(arguments, 2, "OPS")
    let keys: UInt32 = try intArgument(arguments, 3, "KEYS", as: UInt32.self)
    var sets = 0, hits = 0, misses = 0, removes = 0
    var buffer = [UInt8](repeating: 0, count: 70_000)
    for step in 0..<operations {
        let id = UInt32(random.next() % UInt64(keys))
        let name = "m\(id)"
        switch random.next() % 10 {
        case 0..<4:
            try store.set(name, bytes: memValue(id: id, version: UInt32(truncatingIfNeeded: step), length: memLength(&random)))
            sets += 1
        case 4:
            if try store.remove(name) { removes += 1 }
        case 5:
            let count = try buffer.withUnsafeMutableBytes { try store.bytes(name, into: $0) }
            if let count {
                guard decodeValue(Array(buffer[0..<count]), hash: id) != nil else {
                    throw HelperFailure(message: "\(name): read into a buffer a torn or foreign value of \(count) bytes")
                }
                hits += 1
            } else {
                misses += 1
            }
        default:
            if let bytes = try store.bytes(name) {
                guard decodeValue(bytes, hash: id) != nil else {
                    throw HelperFailure(message: "\(name): read a torn or foreign value of \(bytes.count) bytes")
                }
                hits += 1
            } else {
                misses += 1
            }
        }
    }
    emit("sets", sets)
    emit("hits", hits)
    emit("misses", misses)
    emit("removes", removes)
}

/// mem-replace KEY NAME ID ROUNDS LENGTH  → rounds=…
///
/// Replaces NAME ROUNDS times by whole values of key ID, versions 1...ROUNDS,
/// alternating LENGTH and LENGTH + 1000 bytes (so chunks are freed and reused).
func memReplace(_ arguments: [String]) throws {
    let store = try ShmStore.attach(key: try keyArgument(arguments, 0))
    let name = try argument(arguments, 1, "NAME")
    let id: UInt32 = try intArgument(arguments, 2, "ID", as: UInt32.self)
    let rounds: Int = try intArgument(arguments, 3, "ROUNDS")
    let length: Int = try intArgument(arguments, 4, "LENGTH")
    for round in 1...rounds {
        try store.set(name, bytes: memValue(id: id, version: UInt32(round), length: length + (round & 1) * 1000))
    }
    emit("rounds", rounds)
}

/// mem-set-fault KEY SPEC NAME ID VERSION LENGTH
///
/// Arms fault injection (SPEC as SHMLRU_FAULT_INJECTION) and sets NAME to a
/// whole value: killed at the point, it never prints.
func memSetFault(_ arguments: [String]) throws {
    let spec = try argument(arguments, 1, "SPEC")
    if spec != "-" { setenv("SHMLRU_FAULT_INJECTION", spec, 1) }
    let store = try ShmStore.attach(key: try keyArgument(arguments, 0))
    let name = try argument(arguments, 2, "NAME")
    let id: UInt32 = try intArgument(arguments, 3, "ID", as: UInt32.self)
    let version: UInt32 = try intArgument(arguments, 4, "VERSION", as: UInt32.self)
    let length: Int = try intArgument(arguments, 5, "LENGTH")
    try store.set(name, bytes: memValue(id: id, version: version, length: length))
    emit("set", 1)
}
