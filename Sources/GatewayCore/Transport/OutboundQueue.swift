/// One outbound frame: the JSON payload, shared (copy-on-write, never copied) by every subscriber queue.
struct OutboundFrame {
    var payload: [UInt8]
    var ephemeral: Bool
    /// WebSocket opcode: 1 text (every gateway frame), 2 binary (diagnostic echo only).
    var opcode: UInt8 = 1
}

/// A connection's frames waiting for `SERVER_WRITEABLE`, bounded by ``bytes`` against the configured cap
/// (the policy when full is ``ConnectionIO/send(_:_:ephemeral:control:opcode:)``'s). Service thread only.
///
/// Frames are consumed from ``head`` (no shifting per frame); the consumed prefix is dropped in
/// ``compact()`` once it dominates, so a frame costs amortised O(1).
struct OutboundQueue {
    private(set) var frames: [OutboundFrame] = []
    /// Index of the next frame to write.
    private(set) var head = 0
    /// Payload bytes queued and not yet written.
    private(set) var bytes = 0

    var isEmpty: Bool { head == frames.count }

    mutating func append(_ frame: OutboundFrame) {
        frames.append(frame)
        bytes += frame.payload.count
    }

    /// The next frame to write, if any.
    var first: OutboundFrame? { head < frames.count ? frames[head] : nil }

    /// Marks the next frame written.
    mutating func removeFirst() {
        bytes -= frames[head].payload.count
        head += 1
    }

    /// Drops queued ephemeral frames, oldest first, until `needed` more bytes fit under `cap`.
    /// Returns true if the space was made.
    mutating func evictEphemeral(toFit needed: Int, cap: Int) -> Bool {
        guard bytes + needed > cap else { return true }
        // Drop nothing unless dropping can make the room.
        var ephemeralBytes = 0
        for i in head..<frames.count where frames[i].ephemeral { ephemeralBytes += frames[i].payload.count }
        guard bytes - ephemeralBytes + needed <= cap else { return false }
        var kept: [OutboundFrame] = []
        kept.reserveCapacity(frames.count - head)
        var remaining = bytes
        for i in head..<frames.count {
            let f = frames[i]
            if f.ephemeral && remaining + needed > cap {
                remaining -= f.payload.count
                continue
            }
            kept.append(f)
        }
        frames = kept
        head = 0
        bytes = remaining
        return remaining + needed <= cap
    }

    mutating func removeAll() {
        frames.removeAll()
        head = 0
        bytes = 0
    }

    /// Compacts the array once its consumed prefix dominates (amortised O(1) per frame).
    mutating func compact() {
        if head == frames.count {
            frames.removeAll(keepingCapacity: frames.count <= 1024)
            head = 0
        } else if head > 64 && head * 2 > frames.count {
            frames.removeFirst(head)
            head = 0
        }
    }
}
