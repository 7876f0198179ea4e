import CLWS
import GatewayProtocol
import Logging
import Prometheus

/// Everything that goes out to a WebSocket peer: queueing under the outbound cap, the coalesced write in
/// `SERVER_WRITEABLE`, and closes. Service thread only; one per server.
///
/// Backpressure policy (docs/architecture.md, "Backpressure and limits"): a durable frame that does not fit
/// closes the connection with 4009 (it resumes with `since`); an ephemeral one evicts older ephemerals or is
/// dropped; replies (acks, errors, pongs) may use twice the cap.
final class ConnectionIO {
    private let outboundCap: Int
    private let metrics: GatewayMetrics
    private let logger: Logger
    private let pre = Int(CLWS_PRE)
    /// The coalescing buffer: `LWS_PRE` headroom plus up to 256 KiB of frames (grown for one larger frame).
    private var scratch: UnsafeMutableRawPointer
    private var scratchCapacity: Int
    /// Write pacing under load (adaptive flush interval per connection).
    let pacer: WritePacer
    /// Socket writes (`lws_write` calls) and the frames they carried since the last ``takeWriteCounts()``.
    private var writes = 0
    private var framesWritten = 0

    /// Bytes queued to every connection together, and their budget (`limits.total_outbound_bytes`; 0 = none).
    let ledger = OutboundLedger()
    private let totalCap: Int
    /// Called when a queued frame put the total over its budget: the server closes the largest queues.
    var onOverBudget: () -> Void = {}

    /// Close codes after which nothing queued is worth sending.
    static let urgentCloses: Set<UInt16> = [1003, 1009, 4000, 4001, 4008, 4009]

    init(outboundCap: Int, totalCap: Int = 0, pacingMaxNs: UInt64 = 0, metrics: GatewayMetrics, logger: Logger) {
        self.outboundCap = outboundCap
        self.totalCap = totalCap
        pacer = WritePacer(maxIntervalNs: pacingMaxNs)
        self.metrics = metrics
        self.logger = logger
        scratchCapacity = Int(CLWS_PRE) + 256 * 1024
        scratch = UnsafeMutableRawPointer.allocate(byteCount: scratchCapacity, alignment: 16)
        pacer.onDue = { [unowned self] conn in self.requestNow(conn) }
    }

    deinit {
        scratch.deallocate()
    }

    /// Queues one frame for `conn`, enforcing the outbound cap: a durable frame that does not fit closes the
    /// connection with 4009 (it resumes with `since`); an ephemeral one evicts older ephemerals or is dropped.
    /// Returns false if the frame was not queued.
    @discardableResult
    func send(_ conn: Connection, _ payload: [UInt8], ephemeral: Bool = false, control: Bool = false, opcode: UInt8 = 1) -> Bool {
        if conn.phase == .closing { return false }
        // Replies (acks, errors, pongs) may use twice the cap, so a burst of acks does not cut off a client
        // that reads; beyond that even replies count as falling behind (a ping flood without reading).
        let cap = outboundCap
        let limit = control ? 2 * cap : cap
        if conn.queuedBytes + payload.count > limit {
            if ephemeral {
                if !conn.outbound.evictEphemeral(toFit: payload.count, cap: cap) {
                    metrics.ephemeralDropped.increment()
                    return false
                }
            } else if !conn.outbound.evictEphemeral(toFit: payload.count, cap: limit) {
                // Durable frames never wait behind deltas: queued ephemeral frames go first, then 4009.
                metrics.slowConsumerCloses.increment()
                logger.info(
                    "slow consumer closed",
                    metadata: ["connection.id": "\(conn.id)", "queued.bytes": "\(conn.queuedBytes)"])
                close(conn, code: 4009, reason: "too slow: outbound buffer full; reconnect and resume with since", urgent: true)
                return false
            }
        }
        conn.enqueue(OutboundFrame(payload: payload, ephemeral: ephemeral, opcode: opcode))
        requestWrite(conn)
        if totalCap > 0 && ledger.total > totalCap { onOverBudget() }
        return true
    }

    /// Queues an error frame (a reply: may use twice the cap) and counts it by code.
    func sendError(_ conn: Connection, _ code: ErrorCode, _ message: String, ref: String?, session: String? = nil) {
        metrics.error(code.rawValue)
        send(conn, Wire.error(code: code, message: message, ref: ref, session: session), control: true)
    }

    /// Asks lws for a WRITEABLE callback of `conn` (once until it comes), unless the pacer holds it back because
    /// the socket was written less than one flush interval ago (then the pacer asks when the interval has passed).
    func requestWrite(_ conn: Connection) {
        if conn.writeRequested || conn.paced { return }
        if pacer.holdBack(conn) { return }
        requestNow(conn)
    }

    private func requestNow(_ conn: Connection) {
        if !conn.writeRequested {
            conn.writeRequested = true
            lws_callback_on_writable(conn.wsi)
        }
    }

    /// Whether the queues together are over `limits.total_outbound_bytes`.
    var isOverBudget: Bool { totalCap > 0 && ledger.total > totalCap }

    /// Socket writes and frames written since the last call (flushed to metrics on the housekeeping tick).
    func takeWriteCounts() -> (writes: Int, frames: Int) {
        defer { writes = 0; framesWritten = 0 }
        return (writes, framesWritten)
    }

    /// Requests a close of `conn` from anywhere on the service thread. With `urgent`, queued frames are
    /// dropped; otherwise they are flushed first.
    func close(_ conn: Connection, code: UInt16, reason: String, urgent: Bool) {
        if conn.phase == .closing && conn.pendingClose != nil { return }
        conn.phase = .closing
        conn.pendingClose = (code, reason)
        if urgent { conn.dropQueue() }
        requestNow(conn)
        // The close frame goes out in WRITEABLE; a peer that never drains its socket would never get there,
        // so lws drops the connection after a grace period (bounded memory and file descriptors).
        lws_set_timeout(conn.wsi, PENDING_TIMEOUT_USER_OK, 5)
    }

    /// Closes `conn` from inside its own callback: sets the close frame and tells lws to close (returns -1,
    /// the callback's answer).
    func closeNow(_ conn: Connection, code: UInt16, reason: String) -> Int32 {
        conn.phase = .closing
        conn.pendingClose = (code, reason)
        metrics.closed(code)
        var bytes = Array(reason.utf8.prefix(120))
        bytes.withUnsafeMutableBufferPointer { b in
            lws_close_reason(conn.wsi, lws_close_status(rawValue: UInt32(code)), b.baseAddress, b.count)
        }
        return -1
    }

    /// SERVER_WRITEABLE: coalesces everything queued (up to 256 KiB) into one buffer, each frame with its own
    /// WebSocket header, and hands it to lws in one `lws_write(LWS_WRITE_HTTP)` (== LWS_WRITE_RAW, a C macro:
    /// the bytes go out as they are): one send() per socket per loop turn. Returns the callback's answer
    /// (-1 closes the connection); the caller refills replay and asks for the next WRITEABLE.
    func write(_ conn: Connection) -> Int32 {
        conn.writeRequested = false
        if let pc = conn.pendingClose, !conn.hasQueued {
            return closeNow(conn, code: pc.code, reason: pc.reason)
        }
        let limit = 256 * 1024
        var off = pre
        var frames = 0
        while let frame = conn.outbound.first {
            let payloadCount = frame.payload.count
            let need = 10 + payloadCount
            if off > pre && off - pre + need > limit { break }
            ensureScratch(off + need)
            off += CLWS_frame_header(
                scratch.advanced(by: off).assumingMemoryBound(to: UInt8.self), UInt32(frame.opcode), UInt64(payloadCount))
            frame.payload.withUnsafeBytes { p in
                if let base = p.baseAddress { (scratch + off).copyMemory(from: base, byteCount: payloadCount) }
            }
            off += payloadCount
            frames += 1
            conn.outbound.removeFirst()
        }
        conn.outbound.compact()
        if off > pre {
            writes += 1
            framesWritten += frames
            conn.lastWriteNs = pacer.nowNs
            let n = lws_write(conn.wsi, scratch.advanced(by: pre).assumingMemoryBound(to: UInt8.self), off - pre, LWS_WRITE_HTTP)
            if n < 0 { return -1 }
        }
        return 0
    }

    private func ensureScratch(_ bytes: Int) {
        guard bytes > scratchCapacity else { return }
        let newCapacity = max(bytes, scratchCapacity * 2)
        let p = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 16)
        p.copyMemory(from: scratch, byteCount: scratchCapacity)
        scratch.deallocate()
        scratch = p
        scratchCapacity = newCapacity
    }
}
