import Glibc
import ShmLRU
import Testing

// Helpers shared by the core suites (regions and the LRU).

/// Runs `body` and checks that it throws a `ShmError` with `code`; returns the error.
@discardableResult
func expectShmError(
    _ code: ShmError.Code, _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws -> Void
) -> ShmError? {
    do {
        try body()
        Issue.record("expected ShmError.\(code), nothing was thrown. \(comment.map { "\($0)" } ?? "")", sourceLocation: sourceLocation)
        return nil
    } catch let error as ShmError {
        #expect(error.code == code, "\(error) \(comment.map { "\($0)" } ?? "")", sourceLocation: sourceLocation)
        return error
    } catch {
        Issue.record("expected ShmError.\(code), got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// One segment as /proc/sysvipc/shm lists it.
struct KernelSegment {
    var key: UInt32
    var id: Int32
    var mode: UInt32
    var size: UInt64
    var attachCount: Int
}

/// The kernel's listing of the segment with `key`, or nil.
func kernelSegment(_ key: ShmKey) -> KernelSegment? {
    guard let file = fopen("/proc/sysvipc/shm", "r") else { return nil }
    defer { fclose(file) }
    var line = [CChar](repeating: 0, count: 4096)
    var first = true
    while fgets(&line, Int32(line.count), file) != nil {
        if first {
            first = false
            continue
        }
        let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let f = text.split(separator: " ", omittingEmptySubsequences: true)
        guard f.count >= 7, let k = Int32(f[0]), let id = Int32(f[1]), let perms = UInt32(f[2], radix: 8),
            let size = UInt64(f[3]), let nattch = Int(f[6])
        else { continue }
        if UInt32(bitPattern: k) == key.unsignedValue {
            return KernelSegment(key: UInt32(bitPattern: k), id: id, mode: perms & 0o777, size: size, attachCount: nattch)
        }
    }
    return nil
}

