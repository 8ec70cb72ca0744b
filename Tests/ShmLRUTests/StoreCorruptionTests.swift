import Glibc
@testable import ShmLRU
import ShmLRUTestSupport
import Testing

/// The seeded mutator on the store segment (issue 11, finding 14): header, lock
/// table, waiter table and change log mutated, then attach, listen, read the
/// log, set / get / remove and lock. Each input gives a typed error at attach or
/// runs to the end; a crash, an out-of-bounds access or an untyped failure is a
/// finding. `make fuzz` drives the same harness with libFuzzer.
@Suite(.serialized) struct StoreCorruptionTests {
    @Test(arguments: [false, true]) func seededMutatorOnTheStoreSegment(memory: Bool) throws {
        let inputs = relStress ? 20_000 : memory ? 800 : 1_500
        let seed = UInt64.random(in: 1...UInt64.max)
        let harness = try _StoreCorruptionHarness(memory: memory)
        var random = SplitMix64(seed: seed)
        var rejected: [String: Int] = [:]
        var attached = 0
        for index in 0..<inputs {
            var input: [UInt8]
            switch index % 8 {
            case 0:  // random bytes over the whole header and beyond
                input = [UInt8.random(in: 0...255, using: &random) & 0xFC | 2]
                    + (0..<Int.random(in: 1...4096, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            case 1:  // random bytes at a random offset
                input = [UInt8.random(in: 0...255, using: &random) | 3]
                    + (0..<Int.random(in: 6...300, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            default:  // 1...10 structured patches
                input = [UInt8.random(in: 0...255, using: &random) & 0xFC]
                    + (0..<(9 * Int.random(in: 1...10, using: &random))).map { _ in UInt8.random(in: 0...255, using: &random) }
            }
            let outcome = input.withUnsafeBytes { bytes in
                Result { () throws(_CorruptionHarness.Finding) in try harness.run(bytes) }
            }
            switch outcome {
            case .success(.rejected(let code)): rejected[code.rawValue, default: 0] += 1
            case .success(.attached): attached += 1
            case .failure(let finding): Issue.record("input \(index) (seed \(seed)): \(finding); input prefix \(input.prefix(40))")
            }
        }
        relReport("store-segment mutator\(memory ? " (sized by memory)" : "") (seed \(seed)): \(inputs) inputs, 0 crashes; rejected at attach \(rejected), attached and exercised \(attached)")
        #expect(attached > 0 && !rejected.isEmpty, "the mutator should reach both outcomes")
    }
}
