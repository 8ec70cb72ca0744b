extension ShmLRU {
    /// Creates a cache in a segment of huge pages (see `ShmRegion.create(…, hugePages:)`):
    /// at a million records and more, each random read then misses the TLB far
    /// less often (a 2 MiB page covers ~7,000 records of 250 bytes, a 4 KiB page
    /// fewer than 15). Attaching is unchanged.
    ///
    /// - Throws: `.hugePagesUnavailable` when too few huge pages are free (reserve
    ///   them in /proc/sys/vm/nr_hugepages); otherwise as `create(key:recordSize:capacity:…)`.
    public static func create(
        key: ShmKey? = nil, recordSize: Int, capacity: Int, index: IndexKind = .shared,
        permissions: UInt16 = 0o600, persistent: Bool = false, options: Options = Options(), hugePages: Bool
    ) throws(ShmError) -> ShmLRU {
        try _create(
            key: key, recordSize: recordSize, capacity: capacity, index: index, permissions: permissions,
            persistent: persistent, options: options, hugePages: hugePages)
    }
}
