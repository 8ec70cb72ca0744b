// The timed loops. One per workload, generic over the store (specialised by the
// optimiser), reading pre-generated streams through unchecked buffers.
import CShm
import ShmLRU

/// What one timed loop did: its start and end on CLOCK_MONOTONIC (one clock for
/// every process), how many operations, and how many went wrong.
struct LoopResult: Sendable {
    var start: UInt64
    var end: UInt64
    var ops: Int
    var errors: Int
    var nanoseconds: UInt64 { end &- start }
}

/// Runs `workload` over `stream` on `store`. `version` numbers the values written.
/// Never inlined, so that a profiler can count it alone (`--toggle-collect=*runLoop*`).
@inline(never)
func runLoop<S: BenchStore>(
    _ store: inout S, _ workload: Workload, _ stream: KeyStream, value: ValueBuffer, version: inout UInt64
) -> LoopResult {
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: Spec.recordSize, alignment: 16)
    defer { buffer.deallocate() }
    var errors = 0
    var start: UInt64 = 0
    var end: UInt64 = 0
    let count = stream.count
    stream.indices.withUnsafeBufferPointer { indices in
        stream.keys.withUnsafeBufferPointer { keys in
            stream.isSet.withUnsafeBufferPointer { isSet in
                let indices = indices.baseAddress!
                let keys = keys.baseAddress!
                switch workload {
                case .getHit:
                    start = _monotonicNanoseconds()
                    for i in 0..<count {
                        let key = keys[i]
                        if !store.get(indices[i], key, into: buffer) || valueKey(buffer) != key { errors &+= 1 }
                    }
                    end = _monotonicNanoseconds()
                case .setUpdate:
                    (start, end) = writeLoop(count, indices, keys, value, &version, &errors) { store.update($0, $1, $2) }
                case .mixed:
                    let isSet = isSet.baseAddress!
                    var v = version
                    start = _monotonicNanoseconds()
                    for i in 0..<count {
                        let key = keys[i]
                        if isSet[i] != 0 {
                            v &+= 1
                            value.stamp(version: v, key: key)
                            if !store.update(indices[i], key, value.pointer) { errors &+= 1 }
                        } else {
                            if !store.get(indices[i], key, into: buffer) || valueKey(buffer) != key { errors &+= 1 }
                        }
                    }
                    end = _monotonicNanoseconds()
                    version = v
                case .insertEvict:
                    (start, end) = writeLoop(count, indices, keys, value, &version, &errors) { store.insert($0, $1, $2) }
                }
            }
        }
    }
    return LoopResult(start: start, end: end, ops: count, errors: errors)
}

/// The write workloads' loop (set-update, insert-evict): each key's value stamped
/// with the next version and written by `write`; returns the start and end times.
/// Always inlined into `runLoop`, `write` with it: the timed loop is the same code
/// as when each workload had its own copy.
@inline(__always)
private func writeLoop(
    _ count: Int, _ indices: UnsafePointer<UInt32>, _ keys: UnsafePointer<UInt32>, _ value: ValueBuffer, _ version: inout UInt64,
    _ errors: inout Int, _ write: (UInt32, UInt32, UnsafeRawPointer) -> Bool
) -> (start: UInt64, end: UInt64) {
    var v = version
    let start = _monotonicNanoseconds()
    for i in 0..<count {
        let key = keys[i]
        v &+= 1
        value.stamp(version: v, key: key)
        if !write(indices[i], key, value.pointer) { errors &+= 1 }
    }
    let end = _monotonicNanoseconds()
    version = v
    return (start, end)
}
