import CShm
import Glibc
import Synchronization

// listen(key): every change made by any process (set, also of an unchanged value;
// remove; expiry; eviction) is appended to the change log in the store segment,
// and the log's futex word is bumped. Each store handle runs one pump thread,
// started by its first `listen`, that sleeps on that word (no CPU, no polling),
// reads the new entries and yields each to this process's listeners of its key,
// in log order. The pump runs until the handle is detached or deinitialized; an
// idle pump wakes every 250 ms to notice a detach made behind its back
// (`ShmRegion.detachAll()`), and ends the listeners then.

extension ShmStore {
    /// One change of a key, by any process.
    public struct Change: Sendable, Hashable, CustomStringConvertible {
        /// What happened to the key.
        public enum Kind: Sendable, Hashable {
            /// A set: `bytes` is the new value (also when it did not change).
            case set
            /// Removed by `remove`.
            case removed
            /// Expired (found expired and reclaimed).
            case expired
            /// Evicted to make room in a full store.
            case evicted
            /// This listener fell more than the change log's capacity behind and lost
            /// this many changes (of any key): re-read what it watches.
            case missed(Int)
        }

        /// The key that changed.
        public var key: String
        /// What happened to it.
        public var kind: Kind
        /// The new value of a `.set` (nil otherwise). In a store sized by memory, a
        /// large value (kept in the value heap) that was replaced or evicted before
        /// this process's listener pump read it is delivered as the key's value
        /// when the pump read it (read once; nil if the key was gone by then).
        public var bytes: [UInt8]?
        /// The change's position in the store's change log (increasing).
        public var sequence: UInt64

        /// The new value of a `.set`, decoded from JSON; nil for other kinds.
        public func value<Value: Decodable>(as type: Value.Type = Value.self) throws(ShmError) -> Value? {
            guard let bytes else { return nil }
            return try _decode(Value.self, from: bytes, "ShmStore.Change.value(\"\(key)\")")
        }

        /// `set "key" (N bytes) #sequence`, `removed "key" #sequence`, ….
        public var description: String {
            switch kind {
            case .set: "set \"\(key)\" (\(bytes?.count ?? 0) bytes) #\(sequence)"
            case .removed: "removed \"\(key)\" #\(sequence)"
            case .expired: "expired \"\(key)\" #\(sequence)"
            case .evicted: "evicted \"\(key)\" #\(sequence)"
            case .missed(let count): "missed \(count) change(s) before #\(sequence)"
            }
        }
    }

    /// The changes of one key (or all keys), as an `AsyncSequence`. It ends when the
    /// iterating task is cancelled or the store handle is detached.
    public struct Changes: AsyncSequence, Sendable {
        /// One change.
        public typealias Element = Change
        let stream: AsyncStream<Change>

        /// Iterates the changes; `next()` returns nil once the sequence ends.
        public struct AsyncIterator: AsyncIteratorProtocol {
            var base: AsyncStream<Change>.AsyncIterator
            /// The next change, waiting for it; nil when the task is cancelled or the store detached.
            public mutating func next() async -> Change? { await base.next() }
        }

        /// The iterator (one per sequence: the changes are delivered once).
        public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(base: stream.makeAsyncIterator()) }
    }

    /// The changes of `key` made from now on, by any process (cluster-shared-memory's `listen`).
    /// As many listeners as wanted; each sees every change, in order.
    public func listen(_ key: String) -> Changes { Changes(stream: _hub.add(key: key)) }

    /// The changes of every key made from now on.
    public func listenAll() -> Changes { Changes(stream: _hub.add(key: nil)) }
}

/// This handle's listeners and the pump thread that feeds them.
final class _ListenerHub: @unchecked Sendable {
    struct Listener {
        var key: String?
        var start: UInt64
        var continuation: AsyncStream<ShmStore.Change>.Continuation
    }

    struct State {
        var listeners: [UInt64: Listener] = [:]
        var nextID: UInt64 = 0
        var thread: pthread_t? = nil
        var stopped = false
    }

    /// How long the idle pump sleeps before it checks the handle is still attached.
    static let recheckNanoseconds: Int64 = 250_000_000

    let segment: _StoreSegment
    /// Keeps the store segment mapped while the pump runs.
    let region: ShmRegion
    let state = Mutex(State())
    let stopping = Atomic<Bool>(false)
    /// The store (set once, by its init, before any pump runs): a memory-mode
    /// store's large values are read from its heap (ShmStore+SpilledRead.swift).
    weak var owner: ShmStore?

    init(segment: _StoreSegment, region: ShmRegion) {
        self.segment = segment
        self.region = region
    }

    func add(key: String?) -> AsyncStream<ShmStore.Change> {
        let (stream, continuation) = AsyncStream.makeStream(of: ShmStore.Change.self, bufferingPolicy: .unbounded)
        let added = state.withLock { state -> UInt64? in
            guard !state.stopped, region.isAttached else { return nil }
            let id = state.nextID
            state.nextID += 1
            let start = segment.logHead
            state.listeners[id] = Listener(key: key, start: start, continuation: continuation)
            if state.thread == nil {
                state.thread = _startThread { [self] in pump(from: start) }
            }
            return id
        }
        guard let id = added else {
            continuation.finish()
            return stream
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.listeners.removeValue(forKey: id) }
        }
        return stream
    }

    /// Stops the pump (joining it) and ends every listener's sequence.
    func stop() {
        let (thread, listeners) = state.withLock { state -> (pthread_t?, [Listener]) in
            state.stopped = true
            let thread = state.thread
            state.thread = nil
            let listeners = Array(state.listeners.values)
            state.listeners.removeAll()
            return (thread, listeners)
        }
        if let thread {
            stopping.store(true, ordering: .releasing)
            // Change the word so that a pump about to sleep does not, then wake it.
            _ = cshm_fetch_add_u32(segment.logWordPointer, 1)
            _ = cshm_futex_wake(segment.logWordPointer, Int32.max)
            if pthread_equal(thread, pthread_self()) != 0 { pthread_detach(thread) } else { pthread_join(thread, nil) }
        }
        for listener in listeners { listener.continuation.finish() }
    }

    /// The pump: sleeps on the log word, then hands new entries to the listeners.
    private func pump(from start: UInt64) {
        var cursor = start
        var buffer = [UInt8](repeating: 0, count: segment.layout.recordSize)
        while !stopping.load(ordering: .acquiring) {
            guard region.isAttached else {
                // Detached under the pump (ShmRegion.detachAll()): the mapping is a
                // zero placeholder now, never unmapped memory. End the listeners.
                stop()
                return
            }
            let word = cshm_load_acquire_u32(segment.logWordPointer)
            let head = segment.logHead
            if head == cursor {
                _ = cshm_fetch_add_u32(segment.logWaitersPointer, 1)
                cshm_fence_seq_cst()  // pairs with the appender's: it bumps the word, then reads the waiter count
                if cshm_load_acquire_u32(segment.logWordPointer) == word, !stopping.load(ordering: .acquiring) {
                    // Bounded, so that a detach by other means (detachAll) is noticed.
                    _ = cshm_futex_wait(segment.logWordPointer, word, _ListenerHub.recheckNanoseconds)
                }
                _ = cshm_fetch_add_u32(segment.logWaitersPointer, UInt32.max)  // - 1
                continue
            }
            if head < cursor {  // cannot happen in a sound segment: resynchronize
                cursor = head
                // Listeners added meanwhile started at a (forged) later head: from
                // now on they take every change again.
                state.withLock { state in
                    for (id, listener) in state.listeners where listener.start > head { state.listeners[id]?.start = head }
                }
                continue
            }
            let (changes, missed) = read(from: cursor, to: head, buffer: &buffer)
            cursor = head
            deliver(changes, missed: missed, before: changes.first?.sequence ?? head)
        }
    }

    /// Reads entries `cursor..<head` of the log: the changes still there, and how
    /// many were lost (overwritten before they could be read).
    func read(from start: UInt64, to head: UInt64, buffer: inout [UInt8]) -> (changes: [ShmStore.Change], missed: Int) {
        var cursor = start
        let capacity = UInt64(segment.layout.logCapacity)
        var changes: [ShmStore.Change] = []
        var missed = 0
        // `head` is a shared value (a forged or torn head can be anything): only
        // `head > start` is known here, so every step is checked arithmetic on the
        // distance, and a distance beyond the ring is a gap, never a trap.
        guard head > cursor else { return ([], 0) }
        let distance = head &- cursor
        if distance > capacity {
            missed = Int(clamping: distance &- capacity)
            cursor = head &- capacity
        }
        while cursor < head {
            let sequence = cursor
            let change = buffer.withUnsafeMutableBytes { raw -> ShmStore.Change? in
                guard let (kind, length) = segment.readChange(sequence, into: raw) else { return nil }
                return decode(kind: kind, payload: UnsafeRawBufferPointer(rebasing: raw[0..<length]), sequence: sequence)
            }
            if let change { changes.append(change) } else if missed < Int.max { missed += 1 }
            cursor += 1
        }
        return (changes, missed)
    }

    /// Hands the changes to the listeners. The continuations are called with no
    /// lock held: a listener's `onTermination` (run by the concurrency runtime
    /// while it holds the cancelled task's status lock) takes `state`'s lock, and
    /// `yield` may take that same status lock, so yielding under `state`'s lock
    /// can deadlock against a cancellation. A listener removed after the snapshot
    /// gets at most the changes of this batch, which its finished stream drops.
    private func deliver(_ changes: [ShmStore.Change], missed: Int, before sequence: UInt64) {
        let listeners = state.withLock { state in Array(state.listeners.values) }
        for listener in listeners {
            if missed > 0 {
                listener.continuation.yield(
                    ShmStore.Change(key: listener.key ?? "", kind: .missed(missed), bytes: nil, sequence: sequence))
            }
            for change in changes where change.sequence >= listener.start && (listener.key == nil || listener.key == change.key) {
                listener.continuation.yield(change)
            }
        }
    }

    func decode(kind raw: UInt32, payload: UnsafeRawBufferPointer, sequence: UInt64) -> ShmStore.Change? {
        guard let kind = _ChangeKind(rawValue: raw), let header = _PayloadHeader.read(payload) else { return nil }
        let key = String(decoding: header.key(in: payload), as: UTF8.self)
        switch kind {
        case .set: return ShmStore.Change(key: key, kind: .set, bytes: spilledValue(key, header, payload), sequence: sequence)
        case .removed: return ShmStore.Change(key: key, kind: .removed, bytes: nil, sequence: sequence)
        case .expired: return ShmStore.Change(key: key, kind: .expired, bytes: nil, sequence: sequence)
        case .evicted: return ShmStore.Change(key: key, kind: .evicted, bytes: nil, sequence: sequence)
        }
    }
}
