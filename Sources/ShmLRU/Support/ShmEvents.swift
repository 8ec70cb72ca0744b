import Synchronization

/// Something an operator must see: a recovery after a dead lock holder, a lock
/// timeout, a refused attach. Delivered to the observers added with
/// ``ShmEvents/addObserver(_:)`` (the ShmLRULogging and ShmLRUMetrics products
/// install theirs); the library itself logs nothing.
public struct ShmEvent: Sendable, Hashable, CustomStringConvertible {
    /// What happened.
    public enum Kind: String, Sendable, Hashable, CaseIterable {
        /// A process died holding a segment's lock; this process took it over and
        /// rebuilt the structure (every fully written entry stays).
        case recoveredFromDeadHolder
        /// An operation found the structure inconsistent and rebuilt it.
        case repairedInconsistency
        /// A lock (a segment's, or a store key's) was not free before the timeout.
        case lockTimeout
        /// A store key's lock was granted after its holder died while holding it.
        case keyLockHolderDied
        /// A store key's lock call had to wait for another holder; `waited` says how long.
        case keyLockWaited
        /// `attach` refused a segment: not a cache or store of this version, a
        /// damaged header, or no permission.
        case attachRefused
    }

    /// What happened.
    public var kind: Kind
    /// The segment's key, when known.
    public var key: ShmKey?
    /// The call that met it, e.g. `ShmLRU.attach(key: 0x5eed)`.
    public var operation: String
    /// More about it (the error's detail), if any.
    public var detail: String?
    /// How long a lock call waited (`keyLockWaited`, `lockTimeout` of a store key), if known.
    public var waited: Duration?

    /// An event; the library creates them, tests and integrations may too.
    public init(_ kind: Kind, key: ShmKey?, operation: String, detail: String? = nil, waited: Duration? = nil) {
        self.kind = kind
        self.key = key
        self.operation = operation
        self.detail = detail
        self.waited = waited
    }

    /// `kind operation: detail`.
    public var description: String {
        "\(kind.rawValue) \(operation)" + (detail.map { ": " + $0 } ?? "")
    }
}

/// The process-wide list of event observers. Empty by default: emitting an event
/// then costs one atomic load, and events happen only on slow paths (a recovery,
/// a timeout, a refused attach, a key lock that waited), never on a hit.
///
///     let id = ShmEvents.addObserver { event in print(event) }
///     …
///     ShmEvents.removeObserver(id)
///
/// An observer runs on the thread that met the event, sometimes while that
/// thread holds a segment's lock: it must return quickly and must not call into
/// ShmLRU.
public enum ShmEvents {
    /// Identifies an added observer, for ``removeObserver(_:)``.
    public struct ObserverID: Sendable, Hashable {
        let value: UInt64
    }

    private static let observers = Mutex<(next: UInt64, list: [(UInt64, @Sendable (ShmEvent) -> Void)])>((1, []))
    private static let active = Atomic<Bool>(false)

    /// Adds an observer of every event of this process; returns its id.
    @discardableResult
    public static func addObserver(_ observer: @escaping @Sendable (ShmEvent) -> Void) -> ObserverID {
        observers.withLock { state in
            let id = state.next
            state.next &+= 1
            state.list.append((id, observer))
            active.store(true, ordering: .releasing)
            return ObserverID(value: id)
        }
    }

    /// Removes an observer; later events no longer reach it.
    public static func removeObserver(_ id: ObserverID) {
        observers.withLock { state in
            state.list.removeAll { $0.0 == id.value }
            active.store(!state.list.isEmpty, ordering: .releasing)
        }
    }

    /// Hands an event to every observer (built only when there is one).
    @inline(__always)
    static func _emit(_ event: @autoclosure () -> ShmEvent) {
        guard active.load(ordering: .acquiring) else { return }
        _deliver(event())
    }

    @inline(never)
    static func _deliver(_ event: ShmEvent) {
        let list = observers.withLock { $0.list }
        for (_, observer) in list { observer(event) }
    }

    /// An attach failure worth an operator's attention (not a plain `.notFound`).
    static func _emitIfRefused(_ error: ShmError, key: ShmKey) {
        switch error.code {
        case .incompatibleSegment, .corrupted, .permissionDenied, .readOnly:
            _emit(ShmEvent(.attachRefused, key: key, operation: error.operation, detail: error.detail ?? error.description))
        default: break
        }
    }
}
