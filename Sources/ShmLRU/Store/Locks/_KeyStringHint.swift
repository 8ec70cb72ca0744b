import Synchronization

// The by-key lock path's first hint: the lock slot of the last key, found again
// by the caller's `String` value itself (issue 27: an uncontended lock + unlock
// by key within a few CAS pairs).
//
// `_LockTable.lastHint` skips the key's hash and probe but still reads the key's
// UTF-8 bytes and compares them with the slot's, most of what a by-key lock
// costs over a `KeyLock`. This hint skips that too. A `String` is two words:
// two strings whose words are equal are the same small string (its bytes are in
// the words) or share one storage object, which is immutable while more than one
// value refers to it. The hint keeps the string it was written for (`kept`), so
// that storage is never freed and reused while the hint's words name it: a
// caller's key with the same words is that very key. (A key equal in content
// but held in another storage object just misses, and takes the byte path.)
//
// Readers take the words and the slot with no lock, under a seqlock (`version`,
// odd while a writer changes them; Boehm's fences). Writers take `kept`'s mutex
// only if it is free (a lock call never waits for it: a busy one just leaves the
// hint as it is); they are rare: the lock table writes the hint only when its byte path found
// the key in `lastHint`'s slot (the same key locked twice in a row without this
// hint), never on a probe, so that a workload of many keys pays nothing. A slot
// from this hint is checked by its binding generation, like every other hint,
// before and after its lock word is read.

/// A hint keyed by a key's `String` words (see above). The hint's meaning is the
/// lock table's (`_LockTable.Hint`; 0: none).
struct _KeyStringHint: ~Copyable {
    private let version = Atomic<UInt64>(0)
    private let word0 = Atomic<UInt64>(0)
    private let word1 = Atomic<UInt64>(0)
    private let hint = Atomic<UInt64>(0)
    /// The string the words are of, kept alive; the writers' mutex.
    private let kept = Mutex<String>("")

    init() {}

    /// The two words of `key` (nil where a String is not two 64-bit words).
    @inline(__always) private static func words(_ key: String) -> (UInt64, UInt64)? {
        #if _pointerBitWidth(_64)
        return unsafeBitCast(key, to: (UInt64, UInt64).self)
        #else
        return nil
        #endif
    }

    /// The hint written for `key`'s very value; 0 when it was written for another
    /// (or is being written).
    @inline(__always) func hint(for key: String) -> UInt64 {
        guard let (w0, w1) = Self.words(key) else { return 0 }
        let before = version.load(ordering: .acquiring)
        let (a, b, value) = (word0.load(ordering: .relaxed), word1.load(ordering: .relaxed), hint.load(ordering: .relaxed))
        atomicMemoryFence(ordering: .acquiring)
        guard before & 1 == 0, version.load(ordering: .relaxed) == before, a == w0, b == w1 else { return 0 }
        return value
    }

    /// Makes `value` the hint of `key` (keeping `key`, releasing the previous one
    /// after the version moved on, so no reader can match its words any more),
    /// unless another thread is writing the hint: then nothing (never waits).
    func remember(_ key: String, _ value: UInt64) {
        guard let (w0, w1) = Self.words(key) else { return }
        _ = kept.withLockIfAvailable { kept in
            let before = version.load(ordering: .relaxed)
            version.store(before &+ 1, ordering: .relaxed)
            atomicMemoryFence(ordering: .releasing)
            word0.store(w0, ordering: .relaxed)
            word1.store(w1, ordering: .relaxed)
            hint.store(value, ordering: .relaxed)
            version.store(before &+ 2, ordering: .releasing)
            kept = key
        }
    }
}
