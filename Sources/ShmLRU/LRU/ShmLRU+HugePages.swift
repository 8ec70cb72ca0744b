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
        guard hugePages else {
            return try create(
                key: key, recordSize: recordSize, capacity: capacity, index: index, permissions: permissions,
                persistent: persistent, options: options)
        }
        let operation = "ShmLRU.create(key: \(key.map(\.description) ?? "random"), recordSize: \(recordSize), capacity: \(capacity), hugePages: true)"
        guard let layout = _Layout(recordSize: recordSize, capacity: capacity, indexKind: index) else {
            throw ShmError(
                .invalidSize, operation,
                detail: "recordSize must be in 1...\(_Layout.maxRecordSize), capacity in 1...\(_Layout.maxCapacity)")
        }
        let region = try ShmRegion.create(
            key: key, byteCount: layout.totalSize, permissions: permissions, persistent: persistent, hugePages: true)
        do {
            return try ShmLRU(initializing: region, layout: layout, zeroFilled: true, options: options)
        } catch {
            try? region.remove()
            _ = try? region.detach()
            throw error
        }
    }
}
