import CShm
import Glibc

// Segments of huge pages (SHM_HUGETLB). A 1M-record cache spans ~300 MB: on 4 KiB
// pages every random access also misses the TLB (a page walk of its own), and
// transparent huge pages do not cover SysV shared memory unless
// /sys/kernel/mm/transparent_hugepage/shmem_enabled says so. Huge-page segments
// come from the pool reserved in /proc/sys/vm/nr_hugepages (root):
//
//     echo 512 | sudo tee /proc/sys/vm/nr_hugepages   # 512 x 2 MiB = 1 GiB
//
// and the creating user must be root (CAP_IPC_LOCK) or in the group named by
// /proc/sys/vm/hugetlb_shm_group.

extension ShmRegion {
    /// The size of the huge pages `create(…, hugePages: true)` uses (the
    /// system's default, from /proc/meminfo; 2 MiB on x86-64).
    public static var hugePageSize: Int { _meminfo("Hugepagesize:").map { $0 * 1024 } ?? 2 << 20 }

    /// Huge pages reserved and free now (from /proc/meminfo).
    public static var hugePagesFree: Int { _meminfo("HugePages_Free:") ?? 0 }

    /// Creates a segment backed by huge pages, its size rounded up to a whole
    /// number of them (`byteCount` reports the rounded size). Other processes
    /// attach it as usual.
    ///
    /// - Throws: `.hugePagesUnavailable` when the system has too few huge pages
    ///   free (reserve them in /proc/sys/vm/nr_hugepages) or the caller may not
    ///   use them; otherwise as `create(key:byteCount:permissions:persistent:)`.
    public static func create(
        key: ShmKey? = nil, byteCount: Int, permissions: UInt16 = 0o600, persistent: Bool = false, hugePages: Bool
    ) throws(ShmError) -> ShmRegion {
        guard hugePages else { return try create(key: key, byteCount: byteCount, permissions: permissions, persistent: persistent) }
        let page = hugePageSize
        let (padded, overflow) = byteCount.addingReportingOverflow(page - 1)
        guard byteCount > 0, !overflow else {
            throw ShmError(.invalidSize, "create(byteCount: \(byteCount), hugePages: true)", detail: "byteCount must be positive")
        }
        let rounded = padded / page * page
        do {
            return try _create(
                key: key, byteCount: rounded, permissions: permissions, persistent: persistent, extraFlags: _shmHugeTLB)
        } catch where error.errno == ENOMEM || error.errno == EPERM || (error.errno == EINVAL && rounded <= maxByteCount) {
            let needed = rounded / page
            let reserved = _meminfo("HugePages_Total:") ?? 0
            let free = hugePagesFree
            let why =
                error.errno == EPERM
                ? "this user may not use huge pages (root, CAP_IPC_LOCK, or the group in /proc/sys/vm/hugetlb_shm_group)"
                : "\(needed) huge pages of \(page >> 10) KiB needed, \(free) free of \(reserved) reserved"
            throw ShmError(
                .hugePagesUnavailable, "create(key: \(key.map(\.description) ?? "random"), byteCount: \(byteCount), hugePages: true)",
                errno: error.errno, detail: "\(why); reserve more with: echo N > /proc/sys/vm/nr_hugepages (as root)")
        }
    }
}

/// A number field of /proc/meminfo ("Hugepagesize:       2048 kB" -> 2048), or nil.
func _meminfo(_ field: String) -> Int? {
    guard let file = fopen("/proc/meminfo", "r") else { return nil }
    defer { fclose(file) }
    var line = [CChar](repeating: 0, count: 256)
    while fgets(&line, Int32(line.count), file) != nil {
        let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard text.hasPrefix(field) else { continue }
        return Int(text.dropFirst(field.count).split(separator: " ").first ?? "")
    }
    return nil
}

/// shmget's flag for a segment of huge pages (Linux's `SHM_HUGETLB`, 04000; the
/// default huge page size, 2 MiB on x86-64).
let _shmHugeTLB: Int32 = 0o4000
