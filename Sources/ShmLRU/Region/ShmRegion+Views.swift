extension ShmRegion {
    /// How many whole elements of `T` the segment holds.
    public func count<T: ShmElement>(of type: T.Type) -> Int {
        byteCount / MemoryLayout<T>.stride
    }

    private func checkAttached(_ operation: @autoclosure () -> String) throws(ShmError) {
        guard _attachment.isAttached else { throw ShmError(.detached, operation()) }
    }

    /// Lends the segment's bytes for reading. The pointer must not escape `body`.
    public func withUnsafeBytes<R, E: Error>(
        _ body: (UnsafeRawBufferPointer) throws(E) -> R
    ) throws(E) -> R where E: Error {
        guard _attachment.isAttached else {
            // The typed throw of `body` cannot carry ShmError; an empty buffer is the honest view.
            return try body(UnsafeRawBufferPointer(start: nil, count: 0))
        }
        return try body(UnsafeRawBufferPointer(start: _attachment.base, count: _attachment.byteCount))
    }

    /// Lends the segment's bytes for writing. The pointer must not escape `body`.
    /// - Throws: `.readOnly` or `.detached` before calling `body`; then whatever `body` throws.
    public func withUnsafeMutableBytes<R>(
        _ body: (UnsafeMutableRawBufferPointer) throws -> R
    ) throws -> R {
        try checkAttached("withUnsafeMutableBytes(key: \(key))")
        guard !isReadOnly else { throw ShmError(.readOnly, "withUnsafeMutableBytes(key: \(key))") }
        return try body(UnsafeMutableRawBufferPointer(start: _attachment.base, count: _attachment.byteCount))
    }

    /// Lends the segment as `count(of: T.self)` elements of `T`, for reading.
    public func withUnsafeBufferPointer<T: ShmElement, R>(
        of type: T.Type, _ body: (UnsafeBufferPointer<T>) throws -> R
    ) throws -> R {
        try checkAttached("withUnsafeBufferPointer(of: \(T.shmTypeName), key: \(key))")
        let typed = UnsafeRawPointer(_attachment.base).assumingMemoryBound(to: T.self)
        return try body(UnsafeBufferPointer(start: typed, count: count(of: T.self)))
    }

    /// Lends the segment as `count(of: T.self)` elements of `T`, for writing.
    public func withUnsafeMutableBufferPointer<T: ShmElement, R>(
        of type: T.Type, _ body: (UnsafeMutableBufferPointer<T>) throws -> R
    ) throws -> R {
        try checkAttached("withUnsafeMutableBufferPointer(of: \(T.shmTypeName), key: \(key))")
        guard !isReadOnly else {
            throw ShmError(.readOnly, "withUnsafeMutableBufferPointer(of: \(T.shmTypeName), key: \(key))")
        }
        let typed = _attachment.base.assumingMemoryBound(to: T.self)
        return try body(UnsafeMutableBufferPointer(start: typed, count: count(of: T.self)))
    }

    /// A typed array view of the segment (`arr[0] = 10`, as with shm-typed-array).
    public func array<T: ShmElement>(of type: T.Type) -> ShmArray<T> {
        ShmArray(region: self)
    }
}

/// The segment seen as an array of `Element`, like the typed arrays of
/// shm-typed-array. Holds its region, so the mapping lives as long as the view.
///
/// The subscript traps on an index out of range, as `Array` does, and on a write
/// to a read-only or detached region; `element(at:)` and `setElement(_:at:)`
/// throw instead.
public struct ShmArray<Element: ShmElement>: RandomAccessCollection, Sendable {
    /// The region the array views.
    public let region: ShmRegion
    /// Zero.
    public var startIndex: Int { 0 }
    /// The element count; 0 once the region is detached.
    public var endIndex: Int { region.isAttached ? region.count(of: Element.self) : 0 }

    init(region: ShmRegion) { self.region = region }

    /// The element at `position` (a plain load: no lock, no ordering with other processes).
    public subscript(position: Int) -> Element {
        get {
            precondition(position >= 0 && position < endIndex, "ShmArray index \(position) out of range 0..<\(endIndex)")
            return UnsafeRawPointer(region._attachment.base).load(
                fromByteOffset: position * MemoryLayout<Element>.stride, as: Element.self)
        }
        nonmutating set {
            precondition(position >= 0 && position < endIndex, "ShmArray index \(position) out of range 0..<\(endIndex)")
            precondition(!region.isReadOnly, "ShmArray: write to a region attached read-only")
            region._attachment.base.storeBytes(
                of: newValue, toByteOffset: position * MemoryLayout<Element>.stride, as: Element.self)
        }
    }

    /// The element at `index`, or `.invalidArgument` / `.detached`.
    public func element(at index: Int) throws(ShmError) -> Element {
        guard region.isAttached else { throw ShmError(.detached, "element(at: \(index))") }
        guard index >= 0 && index < endIndex else {
            throw ShmError(.invalidArgument, "element(at: \(index))", detail: "index out of range 0..<\(endIndex)")
        }
        return self[index]
    }

    /// Stores `value` at `index`, or throws `.invalidArgument`, `.readOnly`, `.detached`.
    public func setElement(_ value: Element, at index: Int) throws(ShmError) {
        guard region.isAttached else { throw ShmError(.detached, "setElement(at: \(index))") }
        guard index >= 0 && index < endIndex else {
            throw ShmError(.invalidArgument, "setElement(at: \(index))", detail: "index out of range 0..<\(endIndex)")
        }
        guard !region.isReadOnly else { throw ShmError(.readOnly, "setElement(at: \(index))") }
        self[index] = value
    }
}
