// Error codes of the keyed store and its per-key locks (`ShmError.Code` is open to new codes).

extension ShmError.Code {
    /// Every hash a key may use (its stable hash and the next `probeLimit - 1`) is
    /// taken by other keys: the key cannot be stored until one of them goes.
    public static let keyCollision = ShmError.Code(rawValue: "keyCollision")
    /// `unlock` with a token that does not hold the key's lock (wrong, or stale: the
    /// lock was released, or taken over after this holder was presumed dead).
    public static let lockNotHeld = ShmError.Code(rawValue: "lockNotHeld")
    /// A value could not be encoded, or the stored bytes could not be decoded as the asked type.
    public static let codingFailed = ShmError.Code(rawValue: "codingFailed")
    /// The operation was cancelled (an async lock wait whose task was cancelled).
    public static let cancelled = ShmError.Code(rawValue: "cancelled")
}
