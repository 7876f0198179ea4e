/// One outbound frame: the JSON payload, shared (copy-on-write, never copied) by every subscriber queue.
struct OutboundFrame {
    var payload: [UInt8]
    var ephemeral: Bool
    /// WebSocket opcode: 1 text (every gateway frame), 2 binary (diagnostic echo only).
    var opcode: UInt8 = 1
    /// Evicted from its queue (ephemeral only): skipped when writing.
    var dropped = false
}

/// A connection's frames waiting for `SERVER_WRITEABLE`, bounded by ``bytes`` against the configured cap
/// (the policy when full is ``ConnectionIO/send(_:_:ephemeral:control:opcode:)``'s). Service thread only.
///
/// Frames are consumed from ``head`` (no shifting per frame); the consumed prefix is dropped in
/// ``compact()`` once it dominates, so a frame costs amortised O(1). Evicting ephemeral frames is amortised O(1)
/// too: queued ephemeral bytes are counted as frames come and go, an evicted frame is marked dropped in place
/// (its payload released) and skipped when writing, and eviction resumes where the last one stopped (every frame
/// before that point is durable or already dropped), so each frame is visited by eviction at most once.
struct OutboundQueue {
    private(set) var frames: [OutboundFrame] = []
    /// Index of the next frame to write; never a dropped frame.
    private(set) var head = 0
    /// Payload bytes queued and not yet written (dropped frames excluded).
    private(set) var bytes = 0
    /// The part of ``bytes`` in ephemeral frames.
    private(set) var ephemeralBytes = 0
    /// Eviction resumes here: no live ephemeral frame lies in `head..<evictFrom`.
    private var evictFrom = 0
    /// Frames visited by eviction so far (tests check it stays linear in the frames queued).
    private(set) var evictionVisits = 0

    var isEmpty: Bool { head == frames.count }

    /// The frames still to be written, in order (tests).
    var pending: [OutboundFrame] { frames[head...].filter { !$0.dropped } }

    mutating func append(_ frame: OutboundFrame) {
        frames.append(frame)
        bytes += frame.payload.count
        if frame.ephemeral { ephemeralBytes += frame.payload.count }
    }

    /// The next frame to write, if any.
    var first: OutboundFrame? { head < frames.count ? frames[head] : nil }

    /// Marks the next frame written.
    mutating func removeFirst() {
        let n = frames[head].payload.count
        bytes -= n
        if frames[head].ephemeral { ephemeralBytes -= n }
        head += 1
        skipDropped()
    }

    private mutating func skipDropped() {
        while head < frames.count && frames[head].dropped { head += 1 }
    }

    /// Drops queued ephemeral frames, oldest first, until `needed` more bytes fit under `cap`.
    /// Returns true if the space was made; drops nothing when dropping every ephemeral frame would not be enough.
    mutating func evictEphemeral(toFit needed: Int, cap: Int) -> Bool {
        guard bytes + needed > cap else { return true }
        guard bytes - ephemeralBytes + needed <= cap else { return false }
        var i = max(evictFrom, head)
        while bytes + needed > cap && i < frames.count {
            evictionVisits += 1
            if frames[i].ephemeral && !frames[i].dropped {
                let n = frames[i].payload.count
                bytes -= n
                ephemeralBytes -= n
                frames[i].dropped = true
                frames[i].payload = []
            }
            i += 1
        }
        evictFrom = i
        skipDropped()
        return bytes + needed <= cap
    }

    mutating func removeAll() {
        frames.removeAll()
        head = 0
        bytes = 0
        ephemeralBytes = 0
        evictFrom = 0
    }

    /// Compacts the array once its consumed prefix dominates (amortised O(1) per frame).
    mutating func compact() {
        if head == frames.count {
            frames.removeAll(keepingCapacity: frames.count <= 1024)
            head = 0
            evictFrom = 0
        } else if head > 64 && head * 2 > frames.count {
            frames.removeFirst(head)
            evictFrom = max(0, evictFrom - head)
            head = 0
        }
    }
}
