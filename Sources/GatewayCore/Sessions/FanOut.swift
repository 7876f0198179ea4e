/// Fan-out of one event to the live subscribers of its session: the same frame bytes (a shared,
/// copy-on-write `[UInt8]`) queued to every subscriber, never re-encoded. Service thread only.
///
/// Durable events follow the cursor model (docs/architecture.md, "Replay and live"): a subscriber gets the
/// event only when its seq is the one it needs next; one that is catching up is left to the replay pump.
final class FanOut {
    private let table: SessionTable
    private let io: ConnectionIO
    private let replay: ReplayPump
    /// Deliveries since the last ``takeCounts()`` (flushed to metrics on the housekeeping tick).
    private var durable = 0
    private var ephemeral = 0

    init(table: SessionTable, io: ConnectionIO, replay: ReplayPump) {
        self.table = table
        self.io = io
        self.replay = replay
    }

    /// A committed durable event (after its publisher's ack was queued).
    func durable(session: String, seq: UInt64, frame: [UInt8]) {
        guard let live = table.live[session] else { return }
        live.lastEventMs = WallClock.nowMs()
        for sub in live.subscribers.values where !sub.catchingUp {
            if seq == sub.nextSeq {
                sub.nextSeq += 1
                if io.send(sub.connection, frame) { durable += 1 }
            } else if seq > sub.nextSeq {
                // A gap (cannot happen in order, but never deliver out of order): catch up from the store.
                sub.catchingUp = true
                sub.connection.catchingUpCount += 1
                replay.pump(sub.connection)
            }
        }
    }

    /// The session's committed head moved to `head` without frames (cluster mode: a resubscription or a periodic
    /// check found events this node did not see): live subscribers behind it catch up from the store.
    func headAdvanced(session: String, head: UInt64) {
        guard let live = table.live[session] else { return }
        for sub in live.subscribers.values where !sub.catchingUp && sub.nextSeq <= head {
            sub.catchingUp = true
            sub.connection.catchingUpCount += 1
            replay.pump(sub.connection)
        }
    }

    /// An ephemeral event: to live subscribers only, dropped (counted) where it does not fit.
    func ephemeral(session: String, frame: [UInt8]) {
        guard let live = table.live[session] else { return }
        for sub in live.subscribers.values where !sub.catchingUp {
            if io.send(sub.connection, frame, ephemeral: true) { ephemeral += 1 }
        }
    }

    /// An ephemeral event another node fanned out (cluster mode). A token-stream delta is skipped for a subscriber
    /// whose snapshot already held it (``Subscription/streamFloors``).
    func ephemeral(session: String, frame: [UInt8], stream: StreamPosition?) {
        guard let stream else { return ephemeral(session: session, frame: frame) }
        guard let live = table.live[session] else { return }
        for sub in live.subscribers.values where !sub.catchingUp {
            if !sub.streamFloors.isEmpty, let floor = sub.streamFloors[stream.key] {
                if stream.endOffset <= floor { continue }
                sub.streamFloors[stream.key] = nil
            }
            if io.send(sub.connection, frame, ephemeral: true) { ephemeral += 1 }
        }
    }

    /// Durable and ephemeral deliveries since the last call.
    func takeCounts() -> (durable: Int, ephemeral: Int) {
        defer { durable = 0; ephemeral = 0 }
        return (durable, ephemeral)
    }
}
