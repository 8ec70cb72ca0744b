import CShm

// The writer's side of the seqlocks in a segment (a record's `seq`, the index
// sequence), written once here. A writer holds the segment's lock, so writers
// never race each other; lock-free readers load the sequence, copy, fence, and
// load it again: an odd or changed value makes them retry (see `_Probe`).
//
//   start = seq            (even, or odd if a writer died inside: it stays odd)
//   seq   = start | 1      odd: a write is under way
//   release fence          the odd value is visible before any write below
//   … body writes …
//   seq   = (start | 1) + 1, release: even and new, after every write of the body

/// Runs `body` (the writes) inside the seqlock whose sequence word is `sequence`.
/// Only a holder of the segment's lock may call it.
@inline(__always)
func _seqlockWrite<R, E: Error>(_ sequence: UnsafeMutablePointer<UInt32>, _ body: () throws(E) -> R) throws(E) -> R {
    let start = cshm_load_relaxed_u32(sequence)
    cshm_store_relaxed_u32(sequence, start | 1)
    cshm_fence_release()
    defer { cshm_store_release_u32(sequence, (start | 1) &+ 1) }
    return try body()
}
