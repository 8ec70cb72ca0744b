// Deadline and size arithmetic that saturates instead of trapping: every
// deadline and duration the library computes goes through these (the cache's
// lock timeouts, the store's expiries, its lock and load deadlines).

/// A duration in nanoseconds, saturating at the bounds of Int64.
@inline(__always)
func _nanoseconds(_ duration: Duration) -> Int64 {
    let (seconds, attoseconds) = duration.components
    let (total, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
    if overflow { return seconds < 0 ? .min : .max }
    let (sum, overflow2) = total.addingReportingOverflow(attoseconds / 1_000_000_000)
    if overflow2 { return total < 0 ? .min : .max }
    return sum
}

/// `a + b`, or `UInt64.max` when that overflows (a deadline "never").
@inline(__always)
func _saturatingAdd(_ a: UInt64, _ b: UInt64) -> UInt64 {
    let (sum, overflow) = a.addingReportingOverflow(b)
    return overflow ? .max : sum
}
