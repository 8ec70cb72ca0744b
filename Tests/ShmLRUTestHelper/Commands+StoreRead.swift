import Glibc
import ShmLRU
import ShmLRUTestSupport

/// Commands for the tests of the store's lock-free reads and decoded cache.
let storeReadCommands: [String: HelperCommand] = [
    "store-read-hammer": storeReadHammer,
    "store-coherence-writer": storeCoherenceWriter,
    "store-coherence-reader": storeCoherenceReader,
    "store-update-loop": storeUpdateLoop,
    "store-rewrite-loop": storeRewriteLoop,
]

/// The names the hammer uses: pairs sharing probe hashes, and a few plain ones.
func hammerNames(_ store: ShmStore) -> [String] {
    probeSharingNames(count: 16, hash: store._recordHash) + (0..<8).map { "plain-\($0)" }
}

/// store-read-hammer KEY WRITER OPS  → random set (Codable) / get(as:) / bytes /
/// contains / remove over `hammerNames(store)`, with other processes doing the same.
/// Every value read (through the decoded cache or not) must be whole and for its
/// key. Prints sets, hits, misses, removes, l1hits.
func storeReadHammer(_ arguments: [String]) throws {
    let store = try ShmStore.attach(key: try keyArgument(arguments, 0))
    let writer: Int = try intArgument(arguments, 1, "WRITER")
    let operations: Int = try intArgument(arguments, 2, "OPS")
    let names = hammerNames(store)
    var random = SplitMix64(seed: UInt64(writer) &* 7_919 &+ 17)
    var sets = 0, hits = 0, misses = 0, removes = 0
    for step in 0..<operations {
        let name = names[Int.random(in: 0..<names.count, using: &random)]
        switch Int.random(in: 0..<20, using: &random) {
        case 0..<7:
            try store.set(name, StoreProbeValue(name: name, writer: writer, step: step))
            sets += 1
        case 7..<14:
            if let value = try store.get(name, as: StoreProbeValue.self) {
                guard value.isWhole(for: name) else { throw HelperFailure(message: "get(\(name)) returned \(value)") }
                hits += 1
            } else {
                misses += 1
            }
        case 14..<17:
            if let bytes = try store.bytes(name) {
                let value = try JSONStoreCodec().decode(StoreProbeValue.self, from: bytes.withUnsafeBytes { UnsafeRawBufferPointer($0) })
                guard value.isWhole(for: name) else { throw HelperFailure(message: "bytes(\(name)) held \(value)") }
                hits += 1
            } else {
                misses += 1
            }
        case 17..<19:
            _ = try store.contains(name)
        default:
            if try store.remove(name) { removes += 1 }
        }
    }
    emit("sets", sets)
    emit("hits", hits)
    emit("misses", misses)
    emit("removes", removes)
    emit("l1hits", store.decodedCacheStats.hits)
}

/// The value the coherence writer stores in round `round`.
struct CoherenceValue: Codable, Equatable {
    var round: Int
    var text: String
    init(round: Int) {
        self.round = round
        text = String(repeating: "r\(round)-", count: 1 + round % 40)
    }
    var isWhole: Bool { self == CoherenceValue(round: round) }
}

/// store-coherence-writer KEY ROUNDS READERS  → for each round r: sets "c" to
/// round r's value, then "turn" to r, then waits until every reader has set
/// "ack-i" to r. Prints rounds.
func storeCoherenceWriter(_ arguments: [String]) throws {
    let store = try ShmStore.attach(key: try keyArgument(arguments, 0))
    let rounds: Int = try intArgument(arguments, 1, "ROUNDS")
    let readers: Int = try intArgument(arguments, 2, "READERS")
    for round in 1...rounds {
        try store.set("c", CoherenceValue(round: round))
        try store.set("turn", round)
        let deadline = ContinuousClock.now + .seconds(60)
        for reader in 0..<readers {
            while try store.get("ack-\(reader)", as: Int.self) ?? 0 < round {
                guard ContinuousClock.now < deadline else { throw HelperFailure(message: "reader \(reader) stuck before round \(round)") }
                sched_yield()
            }
        }
    }
    emit("rounds", rounds)
}

/// store-coherence-reader KEY INDEX ROUNDS  → reads "turn" and "c" through the
/// decoded cache until the last round: a value of "c" read after "turn" showed r
/// must be round r's or r+1's (the writer sets "c" before "turn", and waits for
/// every ack before the next round), whole, and never older than one read
/// before. Acks each round. Prints reads, l1hits.
func storeCoherenceReader(_ arguments: [String]) throws {
    let store = try ShmStore.attach(key: try keyArgument(arguments, 0))
    let index: Int = try intArgument(arguments, 1, "INDEX")
    let rounds: Int = try intArgument(arguments, 2, "ROUNDS")
    var acked = 0
    var lastSeen = 0
    var reads = 0
    var deadline = ContinuousClock.now + .seconds(60)
    while acked < rounds {
        let turn = try store.get("turn", as: Int.self) ?? 0
        if let value = try store.get("c", as: CoherenceValue.self) {
            reads += 1
            guard value.isWhole else { throw HelperFailure(message: "torn value \(value)") }
            guard value.round >= turn, value.round <= turn + 1 else {
                throw HelperFailure(message: "turn \(turn) but c is round \(value.round): stale")
            }
            guard value.round >= lastSeen else { throw HelperFailure(message: "c went back from \(lastSeen) to \(value.round)") }
            lastSeen = value.round
        } else if turn > 0 {
            throw HelperFailure(message: "c missing at turn \(turn)")
        }
        if turn > acked {
            try store.set("ack-\(index)", turn)
            acked = turn
            deadline = ContinuousClock.now + .seconds(60)
        }
        guard ContinuousClock.now < deadline else { throw HelperFailure(message: "no new turn after \(acked)") }
    }
    emit("reads", reads)
    emit("l1hits", store.decodedCacheStats.hits)
}

/// store-update-loop KEY NAME COUNT  → sets NAME to 1, 2, … COUNT (each an
/// update of a present key: a fresh record switched in by the index), then sets
/// "done". Prints updates.
func storeUpdateLoop(_ arguments: [String]) throws {
    let store = try ShmStore.attach(key: try keyArgument(arguments, 0))
    guard arguments.count > 1 else { throw HelperFailure(message: "usage: store-update-loop KEY NAME COUNT") }
    let name = arguments[1]
    let count: Int = try intArgument(arguments, 2, "COUNT")
    for value in 1...max(1, count) { try store.set(name, value) }
    try store.set("done", true)
    emit("updates", count)
}

/// store-rewrite-loop KEY COUNT SPREAD NAME...  → rounds 1...COUNT: sets each
/// NAME to `lentValue(name:round:spread:)` (bytes of varying length), then sets
/// "done". Prints rounds.
func storeRewriteLoop(_ arguments: [String]) throws {
    let store = try ShmStore.attach(key: try keyArgument(arguments, 0))
    let count: Int = try intArgument(arguments, 1, "COUNT")
    let spread: Int = try intArgument(arguments, 2, "SPREAD")
    let names = Array(arguments.dropFirst(3))
    guard !names.isEmpty else { throw HelperFailure(message: "usage: store-rewrite-loop KEY COUNT SPREAD NAME...") }
    for round in 1...max(1, count) {
        for name in names { try store.set(name, bytes: lentValue(name: name, round: round, spread: spread)) }
    }
    try store.set("done", true)
    emit("rounds", count)
}
