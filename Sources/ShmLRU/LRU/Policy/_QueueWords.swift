// The header words of the two-queue frame (a small queue or window before the
// main queue, and a ghost of hashes): S3-FIFO's, and those TinyLFU adds on the
// same frame. Their offsets are in `_Layout.H`; `_Segment` reads and writes
// them by these names, under the lock.

extension _ListState {
    /// S3-FIFO: the small queue's last record (none: empty).
    var smallTail: Int { _Layout.H.smallTail }
    /// S3-FIFO: records in the small queue.
    var smallCount: Int { _Layout.H.smallCount }
    /// S3-FIFO: ghost insertions, wrapping.
    var ghostClock: Int { _Layout.H.ghostClock }
    /// S3-FIFO: 1 once it has evicted (until then a full small queue admits to main).
    var s3Evicted: Int { _Layout.H.s3Evicted }
    /// TinyLFU: the window's target size (adapted by the mini caches, `_TinyLFUMinis`).
    var windowTarget: Int { _Layout.H.windowTarget }
    /// TinyLFU: sketch increments since its last ageing.
    var sketchAdds: Int { _Layout.H.sketchAdds }
}
