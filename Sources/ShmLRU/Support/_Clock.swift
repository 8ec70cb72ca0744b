import CShm
import Glibc

// The clocks every process of the machine shares, read straight from Swift (no C
// shim needed: clock_gettime is an ordinary libc call, served by the vDSO).

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process of the machine.
@inline(__always)
package func _monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(truncatingIfNeeded: ts.tv_sec) &* 1_000_000_000 &+ UInt64(truncatingIfNeeded: ts.tv_nsec)
}

/// CLOCK_MONOTONIC_COARSE in nanoseconds: the same clock to within a tick, cheaper to read.
@inline(__always)
package func _coarseMonotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
    return UInt64(truncatingIfNeeded: ts.tv_sec) &* 1_000_000_000 &+ UInt64(truncatingIfNeeded: ts.tv_nsec)
}
