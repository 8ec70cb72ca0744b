// The public name of each eviction policy and its code in the segment header
// (`_Layout.H.policy`). A policy's behaviour lives in its own file in this
// folder; `_PolicyDispatch.swift` says how to add one.

extension ShmLRU {
    /// How a full cache chooses what to evict. Chosen when the cache is created
    /// and recorded in the segment: every handle uses the segment's policy.
    public enum EvictionPolicy: String, Sendable, CaseIterable, Codable {
        /// Least recently used (shm-typed-lru's model): exact with
        /// `Promotion.onEveryRead`, CLOCK (second chance) with `.atMostEvery`.
        case lru
        /// SIEVE (Zhang et al., NSDI '24): a FIFO whose hand skips, and unmarks,
        /// records read since it last passed. Hits set one bit, without the lock.
        case sieve
        /// S3-FIFO (Yang et al., SOSP '23): a small FIFO (10 %) that filters
        /// one-hit wonders, a main FIFO with a 2-bit frequency, and a ghost FIFO of
        /// recently evicted hashes. Hits bump the frequency, without the lock.
        case s3fifo
        /// Adaptive W-TinyLFU (Einziger, Friedman, Manes, ACM ToS '17; Caffeine's
        /// mini-simulations) on S3-FIFO's frame: a window CLOCK (10 % to start) in front
        /// of a main CLOCK, both with a 2-bit frequency, and S3-FIFO's ghost of the
        /// hashes the window evicted (a ghost hit joins the main queue). A count-min
        /// sketch of hash frequencies in the segment (8 to 16 bytes per record, aged
        /// every 20 x capacity additions; the ghost 16 to 32 more) admits the window's
        /// oldest unread record only if it is more frequent than the main queue's victim;
        /// the window's size follows four mini caches in the segment (windows of 1,
        /// 10, 30 and 60 %) that replay a hash-sampled share of the requests (at most
        /// 1/64, at least 256 records each: ~3.5 bytes per record at 1M records).
        /// Hits bump the frequency, without the lock, as S3-FIFO's do; a hit on a
        /// sampled key also appends its hash to a lossy ring (one atomic add, one store).
        case tinylfu

        /// The policy `ShmStore` uses unless told otherwise.
        public static let storeDefault: EvictionPolicy = .tinylfu

        /// The policy's code in the segment header.
        var code: UInt32 {
            switch self {
            case .lru: 0
            case .sieve: 1
            case .s3fifo: 2
            case .tinylfu: 3
            }
        }

        init?(code: UInt32) {
            guard let policy = Self.allCases.first(where: { $0.code == code }) else { return nil }
            self = policy
        }
    }

    /// The segment's eviction policy.
    public var policy: EvictionPolicy { _segment.layout.policy }
}
