/// One subscription of a connection to a session.
///
/// The cursor model (docs/architecture.md, "Replay and live"): `nextSeq` is the next durable seq this
/// subscriber needs. A live event is queued only when its seq equals `nextSeq`; a subscriber that is behind
/// (`catchingUp`) is fed from the log by the replay pump until it reaches the head, then turns live. This
/// makes the switch-over gapless and duplicate-free whatever order commits and joins interleave in.
///
/// A class shared by the connection's table and the session's member list, so fan-out walks members without
/// hashing the session id or the connection id per delivery. Service thread only.
final class Subscription {
    let session: String
    unowned let connection: Connection
    var nextSeq: UInt64
    var catchingUp: Bool
    /// Whether this subscription receives presence frames (`join` with `"presence": true`, v1.1 §2).
    var presence = false
    /// Set by a `join`: the token-stream snapshots are still to be sent, once the replay is queued and the
    /// subscription turns live (protocol v1.1 §3).
    var snapshotPending = false
    /// Cluster mode: for each stream of another node in this subscription's snapshot, the stream's length (bytes)
    /// the snapshot held; a pushed delta ending at or below it is already in the snapshot and is skipped. Cleared
    /// per stream by the first delta past it (deltas of a stream arrive in order). Empty outside a snapshot.
    var streamFloors: [StreamKey: Int] = [:]

    init(session: String, connection: Connection, nextSeq: UInt64, catchingUp: Bool) {
        self.session = session
        self.connection = connection
        self.nextSeq = nextSeq
        self.catchingUp = catchingUp
    }
}
