import TranscriptLog
import Glibc
import Prometheus
import GatewayConfig
import GatewayAuth

/// Identifies one WebSocket connection for its lifetime; never reused within a process.
struct ConnectionID: Hashable, Sendable, CustomStringConvertible {
    var raw: UInt64
    var description: String { "c" + String(raw, radix: 36) }
}

/// Where a connection is in the hello/welcome handshake of the protocol.
enum ConnectionPhase {
    /// Upgraded; waiting for `hello` (auth deadline running).
    case awaitingHello
    /// `hello` received; the token is being verified off the service thread.
    case authenticating
    /// `welcome` sent.
    case active
    /// A close was requested; nothing more is processed from this peer.
    case closing
}

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

    init(session: String, connection: Connection, nextSeq: UInt64, catchingUp: Bool) {
        self.session = session
        self.connection = connection
        self.nextSeq = nextSeq
        self.catchingUp = catchingUp
    }
}

/// One outbound frame: the JSON payload, shared (copy-on-write, never copied) by every subscriber queue.
struct OutboundFrame {
    var payload: [UInt8]
    var ephemeral: Bool
    /// WebSocket opcode: 1 text (every gateway frame), 2 binary (diagnostic echo only).
    var opcode: UInt8 = 1
}

/// A WebSocket connection's state. Owned by the lws service thread only (no locks): created in
/// `ESTABLISHED`, released in `CLOSED`; `wsi` is valid exactly in between.
final class Connection {
    let id: ConnectionID
    let wsi: OpaquePointer
    let listenerTLS: Bool
    let echo: Bool
    var phase: ConnectionPhase = .awaitingHello
    var principal: Principal?
    /// Token from `Authorization: Bearer` on the upgrade request (used if `hello` has none).
    var headerToken: String?
    var origin: String?
    let openedNs: UInt64

    var subscriptions: [String: Subscription] = [:]
    /// Sessions with `catchingUp == true`, for the replay pump.
    var catchingUpCount = 0

    // Outbound queue: frames waiting for WRITEABLE; bounded by `queuedBytes` against the configured cap.
    var queue: [OutboundFrame] = []
    var queueHead = 0
    var queuedBytes = 0
    var writeRequested = false
    var pendingClose: (code: UInt16, reason: String)?

    // Inbound: fragment reassembly (bounded by the max message size).
    var rx: [UInt8] = []
    var rxTooBig = false
    var rxIsBinary = false
    var rxDiscarded = 0

    // Rate limiting.
    var bucket: TokenBucket?
    var strikes = 0
    var countedForSub = false

    init(id: ConnectionID, wsi: OpaquePointer, listenerTLS: Bool, echo: Bool, nowNs: UInt64) {
        self.id = id
        self.wsi = wsi
        self.listenerTLS = listenerTLS
        self.echo = echo
        self.openedNs = nowNs
    }

    var hasQueued: Bool { queueHead < queue.count }

    func enqueue(_ frame: OutboundFrame) {
        queue.append(frame)
        queuedBytes += frame.payload.count
    }

    /// Drops queued ephemeral frames, oldest first, until `needed` more bytes fit under `cap`.
    /// Returns true if the space was made.
    func evictEphemeral(toFit needed: Int, cap: Int) -> Bool {
        guard queuedBytes + needed > cap else { return true }
        // Drop nothing unless dropping can make the room.
        var ephemeralBytes = 0
        for i in queueHead..<queue.count where queue[i].ephemeral { ephemeralBytes += queue[i].payload.count }
        guard queuedBytes - ephemeralBytes + needed <= cap else { return false }
        var kept: [OutboundFrame] = []
        kept.reserveCapacity(queue.count - queueHead)
        var bytes = queuedBytes
        for i in queueHead..<queue.count {
            let f = queue[i]
            if f.ephemeral && bytes + needed > cap {
                bytes -= f.payload.count
                continue
            }
            kept.append(f)
        }
        queue = kept
        queueHead = 0
        queuedBytes = bytes
        return bytes + needed <= cap
    }

    func dropQueue() {
        queue.removeAll()
        queueHead = 0
        queuedBytes = 0
    }

    /// Compacts the queue array once its consumed prefix dominates (amortised O(1) per frame).
    func compactQueue() {
        if queueHead == queue.count {
            queue.removeAll(keepingCapacity: queue.count <= 1024)
            queueHead = 0
        } else if queueHead > 64 && queueHead * 2 > queue.count {
            queue.removeFirst(queueHead)
            queueHead = 0
        }
    }
}

/// A token bucket (rate per second, burst), refilled lazily from a monotonic clock.
struct TokenBucket {
    let rate: Double
    let burst: Double
    var tokens: Double
    var lastNs: UInt64

    init(ratePerSecond: Double, burst: Int, nowNs: UInt64) {
        rate = ratePerSecond
        self.burst = Double(max(1, burst))
        tokens = self.burst
        lastNs = nowNs
    }

    mutating func take(nowNs: UInt64) -> Bool {
        if nowNs > lastNs {
            tokens = min(burst, tokens + Double(nowNs - lastNs) / 1e9 * rate)
            lastNs = nowNs
        }
        if tokens >= 1 {
            tokens -= 1
            return true
        }
        return false
    }
}
