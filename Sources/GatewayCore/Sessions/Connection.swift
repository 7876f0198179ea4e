import Glibc
import GatewayAuth

/// Identifies one WebSocket connection for its lifetime, or one HTTP API publish until it is answered (the key its
/// commit result comes back under); never reused within a process.
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
    /// Joins waiting for the store (cluster mode); they count against `limits.max_sessions_per_connection`.
    var pendingJoins = 0

    /// Frames waiting for WRITEABLE; bounded against the configured cap by ``ConnectionIO``. Every change of its
    /// bytes is carried to the server-wide ``ledger`` (`limits.total_outbound_bytes`); `didSet` reads no `oldValue`,
    /// so the queue is still mutated in place.
    var outbound = OutboundQueue() {
        didSet {
            let now = outbound.bytes
            ledger.total += now - ledgerBytes
            ledgerBytes = now
        }
    }
    /// What this connection's queue last added to the ledger.
    private var ledgerBytes = 0
    /// Bytes queued to every connection (service thread).
    let ledger: OutboundLedger
    var writeRequested = false
    /// Waiting on the write pacer's list (its WRITEABLE is requested once its flush interval has passed).
    var paced = false
    /// When the socket was last written (monotonic ns; 0: never).
    var lastWriteNs: UInt64 = 0
    /// On the read-budget list of this loop turn (``GatewayServer/serviceMoreReads()``).
    var readAgain = false
    /// Bytes received (estimated on the wire) since the read budget last looked at this connection.
    var rxTurnBytes = 0
    /// Set in `CLOSED`: `wsi` is gone; lists that still hold the connection skip it.
    var released = false
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

    init(id: ConnectionID, wsi: OpaquePointer, listenerTLS: Bool, echo: Bool, nowNs: UInt64, ledger: OutboundLedger) {
        self.ledger = ledger
        self.id = id
        self.wsi = wsi
        self.listenerTLS = listenerTLS
        self.echo = echo
        self.openedNs = nowNs
    }

    var hasQueued: Bool { !outbound.isEmpty }
    var queuedBytes: Int { outbound.bytes }

    func enqueue(_ frame: OutboundFrame) {
        outbound.append(frame)
    }

    func dropQueue() {
        outbound.removeAll()
    }
}

/// The bytes queued to every connection together, for `limits.total_outbound_bytes`. Service thread only.
final class OutboundLedger {
    var total = 0
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

    /// The tokens the bucket holds at `nowNs` (refilled since the last take, at most `burst`).
    func tokens(at nowNs: UInt64) -> Double {
        nowNs > lastNs ? min(burst, tokens + Double(nowNs - lastNs) / 1e9 * rate) : tokens
    }

    mutating func take(nowNs: UInt64) -> Bool {
        if nowNs > lastNs {
            tokens = tokens(at: nowNs)
            lastNs = nowNs
        }
        if tokens >= 1 {
            tokens -= 1
            return true
        }
        return false
    }
}
