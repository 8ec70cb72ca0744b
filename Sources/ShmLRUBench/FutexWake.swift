import CShm
import Glibc
import ShmLRU

// The machine's floor under a lock hand-off: one process wakes another sleeping
// in FUTEX_WAIT on a word of a shared segment, with nothing else on the path (no
// lock table, no queue). A round: the sleeper marks itself about to sleep and
// sleeps while the turn word is not its own; the waker sees the mark, lets it
// reach the kernel, notes the time in the segment, gives the turn and wakes it;
// the woken process notes how long after that it runs. Roles swap each round.
// On bare metal this is a few µs; under a hypervisor a cross-CPU wake-up costs
// what the hypervisor's inter-processor interrupt costs, which the lock hand-off
// pays too: the section prints the hand-off as a multiple of this floor.

private enum FutexWord {
    static let turn = 0  // UInt32: which process may run (0 or 1)
    static let givenAt = 8  // UInt64: monotonic ns when the turn was given
    static let sleeping = 16  // UInt32 per process (16, 20): 1 while it is about to sleep or asleep
}

/// Runs `rounds` wake-ups each way; prints and returns the median and p99 in µs.
func measureFutexWake(rounds: Int) throws -> (median: Double, p99: Double) {
    let region = try ShmRegion.create(byteCount: 64)
    defer { try? region.remove() }
    let worker = try spawnWorker(["futex-wake", region.key.description, "\(rounds)"])
    let mine = try region.withUnsafeMutableBytes { futexRounds($0.baseAddress!, me: 0, rounds: rounds) }
    let line = worker.readLine() ?? ""
    _ = worker.wait()
    let theirs = line.split(separator: " ").compactMap { UInt64($0) }
    guard theirs.count == rounds else { throw BenchFailure(description: "futex wake: the other process failed") }
    let all = (mine + theirs).sorted()
    let median = Double(all[all.count / 2]) / 1000
    let p99 = Double(all[min(all.count - 1, all.count * 99 / 100)]) / 1000
    print("  futex wake-up between two processes (the floor, \(all.count) wake-ups): median \(fmt(median, 1)) µs, p99 \(fmt(p99, 1)) µs")
    return (median, p99)
}

/// The second process: `futex-wake REGIONKEY ROUNDS`; prints its wake-up times (ns).
func futexWakeMain(_ arguments: [String]) -> Int32 {
    guard arguments.count == 3, let key = ShmKey(parsing: arguments[1]), let rounds = Int(arguments[2]), rounds > 0 else { return 2 }
    do {
        let region = try ShmRegion.attach(key: key)
        let times = try region.withUnsafeMutableBytes { futexRounds($0.baseAddress!, me: 1, rounds: rounds) }
        writeAll(1, times.map(String.init).joined(separator: " ") + "\n")
        return 0
    } catch {
        writeAll(2, "futex-wake: \(error)\n")
        return 1
    }
}

/// Process 0 starts holding the turn and gives it first; each process is woken
/// `rounds` times and returns how long each wake-up took.
private func futexRounds(_ base: UnsafeMutableRawPointer, me: UInt32, rounds: Int) -> [UInt64] {
    let turn = (base + FutexWord.turn).assumingMemoryBound(to: UInt32.self)
    let mySleeping = (base + FutexWord.sleeping + 4 * Int(me)).assumingMemoryBound(to: UInt32.self)
    let otherSleeping = (base + FutexWord.sleeping + 4 * Int(1 - me)).assumingMemoryBound(to: UInt32.self)
    let givenAt = (base + FutexWord.givenAt).assumingMemoryBound(to: UInt64.self)
    let other = 1 - me
    var times: [UInt64] = []
    times.reserveCapacity(rounds)
    func give() {
        // Wait until the other is about to sleep, then give it time to get into the kernel.
        let deadline = _monotonicNanoseconds() &+ 5_000_000_000
        while cshm_load_acquire_u32(otherSleeping) != 1, _monotonicNanoseconds() < deadline { sched_yield() }
        let settle = _monotonicNanoseconds() &+ 20_000
        while _monotonicNanoseconds() < settle {}
        cshm_store_release_u64(givenAt, _monotonicNanoseconds())
        cshm_store_release_u32(turn, other)
        _ = cshm_futex_wake(turn, 1)
    }
    func sleepForTurn() {
        cshm_store_release_u32(mySleeping, 1)
        while cshm_load_acquire_u32(turn) != me { _ = cshm_futex_wait(turn, other, 1_000_000_000) }
        let now = _monotonicNanoseconds()
        cshm_store_release_u32(mySleeping, 0)
        times.append(now &- cshm_load_acquire_u64(givenAt))
    }
    for _ in 0..<rounds {
        if me == 0 {
            give()
            sleepForTurn()
        } else {
            sleepForTurn()
            give()
        }
    }
    return times
}
