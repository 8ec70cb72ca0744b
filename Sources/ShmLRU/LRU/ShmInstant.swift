import CShm

/// A point on the machine's monotonic clock (`CLOCK_MONOTONIC`), the one clock
/// every process of the machine shares: records' last-use times are these, so a
/// cutoff taken in one process is meaningful in another.
public struct ShmInstant: Comparable, Hashable, Sendable, CustomStringConvertible {
    /// Nanoseconds since the machine booted.
    public var nanoseconds: UInt64

    /// The instant `nanoseconds` after the clock's origin (the machine's boot).
    public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }

    /// The current instant of `CLOCK_MONOTONIC`.
    public static var now: ShmInstant { ShmInstant(nanoseconds: _monotonicNanoseconds()) }

    /// This instant moved by `duration` (clamped at the clock's ends).
    public func advanced(by duration: Duration) -> ShmInstant {
        let delta = _nanoseconds(duration)
        if delta >= 0 {
            let (sum, overflow) = nanoseconds.addingReportingOverflow(UInt64(delta))
            return ShmInstant(nanoseconds: overflow ? .max : sum)
        }
        let magnitude = delta == .min ? UInt64(Int64.max) + 1 : UInt64(-delta)
        return ShmInstant(nanoseconds: nanoseconds > magnitude ? nanoseconds - magnitude : 0)
    }

    /// Whether `lhs` comes before `rhs`.
    public static func < (lhs: ShmInstant, rhs: ShmInstant) -> Bool { lhs.nanoseconds < rhs.nanoseconds }
    /// `ShmInstant(N ns)`.
    public var description: String { "ShmInstant(\(nanoseconds) ns)" }
}
