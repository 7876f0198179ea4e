/// A frame sent by the gateway (protocol-v1.md, "Frames from the gateway"), encoded straight to bytes.
///
/// Encoding appends to a caller-owned `[UInt8]`. To leave room for lws (`LWS_PRE`) and a WebSocket header in front of
/// the payload, start from a buffer that already holds that many bytes, e.g.
/// `var buf = [UInt8](repeating: 0, count: headroom)`, or use ``encoded(headroom:)``; the payload then starts at offset
/// `headroom` and the transport can write the header in place without copying the payload.
///
/// Field order is fixed and matches the contract's examples, so the output is deterministic and testable byte-for-byte.
/// The event frame is not a case here: it splices the stored `data` bytes, so it has its own entry point,
/// ``appendEvent(into:session:seq:id:kind:sub:role:timestampMs:data:)``.
public enum ServerFrame: Sendable, Equatable {
    /// `{"type":"welcome","conn":C,"sub":S,"role":R}` plus `"exp":X` (v1.1 §1: the token's expiry, Unix seconds).
    case welcome(conn: String, sub: String, role: String, exp: Int64? = nil)
    /// `{"type":"joined","session":S,"head":H,"epoch":E}`, plus `"trimmed":true,"first":F` when `trimmedFirst` is set,
    /// `"reset":true` when `reset` is true and `"presence":[...]` when the join asked for presence (v1.1 §2).
    case joined(session: String, head: UInt64, epoch: String, trimmedFirst: UInt64?, reset: Bool, presence: [PresenceEntry]? = nil)
    /// `{"type":"left","session":S}` plus `"reason":R` when the gateway ended the subscription (v1.1 §5).
    case left(session: String, reason: String? = nil)
    /// `{"type":"refreshed","exp":X}` (v1.1 §1).
    case refreshed(exp: Int64)
    /// `{"type":"presence","session":S,"action":"join"|"leave","sub":U,"role":R}` (v1.1 §2).
    case presence(session: String, action: String, sub: String, role: String)
    /// `{"type":"ack","id":I,"session":S}` plus `"seq":N` for durable events and `"duplicate":true` for re-publishes.
    case ack(id: String, session: String, seq: UInt64?, duplicate: Bool)
    /// `{"type":"pong"}` or `{"type":"pong","id":I}`.
    case pong(id: String?)
    /// `{"type":"error","code":C,"message":M}` plus `"ref":I` when the refused frame had a readable id, and
    /// `"session":S` when the refused frame was about one session (join, leave, publish), so a client can
    /// match an error to its request.
    case error(code: ErrorCode, message: String, ref: String?, session: String? = nil)

    /// Appends this frame's JSON text to `buffer`.
    /// - Parameter buffer: The buffer to append to (its existing bytes, e.g. headroom, are kept).
    /// - Returns: The number of bytes appended.
    @discardableResult
    public func append(to buffer: inout [UInt8]) -> Int {
        let start = buffer.count
        switch self {
        case .welcome(let conn, let sub, let role, let exp):
            JSONWriter.appendRaw("{\"type\":\"welcome\",\"conn\":", to: &buffer)
            JSONWriter.appendString(conn, to: &buffer)
            JSONWriter.appendRaw(",\"sub\":", to: &buffer)
            JSONWriter.appendString(sub, to: &buffer)
            JSONWriter.appendRaw(",\"role\":", to: &buffer)
            JSONWriter.appendString(role, to: &buffer)
            if let exp {
                JSONWriter.appendRaw(",\"exp\":", to: &buffer)
                JSONWriter.appendInt(exp, to: &buffer)
            }
        case .refreshed(let exp):
            JSONWriter.appendRaw("{\"type\":\"refreshed\",\"exp\":", to: &buffer)
            JSONWriter.appendInt(exp, to: &buffer)
        case .presence(let session, let action, let sub, let role):
            JSONWriter.appendRaw("{\"type\":\"presence\",\"session\":", to: &buffer)
            JSONWriter.appendString(session, to: &buffer)
            JSONWriter.appendRaw(",\"action\":", to: &buffer)
            JSONWriter.appendString(action, to: &buffer)
            JSONWriter.appendRaw(",\"sub\":", to: &buffer)
            JSONWriter.appendString(sub, to: &buffer)
            JSONWriter.appendRaw(",\"role\":", to: &buffer)
            JSONWriter.appendString(role, to: &buffer)
        case .joined(let session, let head, let epoch, let trimmedFirst, let reset, let presence):
            JSONWriter.appendRaw("{\"type\":\"joined\",\"session\":", to: &buffer)
            JSONWriter.appendString(session, to: &buffer)
            JSONWriter.appendRaw(",\"head\":", to: &buffer)
            JSONWriter.appendUInt(head, to: &buffer)
            JSONWriter.appendRaw(",\"epoch\":", to: &buffer)
            JSONWriter.appendString(epoch, to: &buffer)
            if let first = trimmedFirst {
                JSONWriter.appendRaw(",\"trimmed\":true,\"first\":", to: &buffer)
                JSONWriter.appendUInt(first, to: &buffer)
            }
            if reset {
                JSONWriter.appendRaw(",\"reset\":true", to: &buffer)
            }
            if let presence {
                JSONWriter.appendRaw(",\"presence\":[", to: &buffer)
                for (i, entry) in presence.enumerated() {
                    if i > 0 { buffer.append(UInt8(ascii: ",")) }
                    JSONWriter.appendRaw("{\"sub\":", to: &buffer)
                    JSONWriter.appendString(entry.sub, to: &buffer)
                    JSONWriter.appendRaw(",\"role\":", to: &buffer)
                    JSONWriter.appendString(entry.role, to: &buffer)
                    JSONWriter.appendRaw(",\"conns\":", to: &buffer)
                    JSONWriter.appendUInt(UInt64(entry.conns), to: &buffer)
                    buffer.append(Byte.closeBrace)
                }
                buffer.append(UInt8(ascii: "]"))
            }
        case .left(let session, let reason):
            JSONWriter.appendRaw("{\"type\":\"left\",\"session\":", to: &buffer)
            JSONWriter.appendString(session, to: &buffer)
            if let reason {
                JSONWriter.appendRaw(",\"reason\":", to: &buffer)
                JSONWriter.appendString(reason, to: &buffer)
            }
        case .ack(let id, let session, let seq, let duplicate):
            JSONWriter.appendRaw("{\"type\":\"ack\",\"id\":", to: &buffer)
            JSONWriter.appendString(id, to: &buffer)
            JSONWriter.appendRaw(",\"session\":", to: &buffer)
            JSONWriter.appendString(session, to: &buffer)
            if let seq {
                JSONWriter.appendRaw(",\"seq\":", to: &buffer)
                JSONWriter.appendUInt(seq, to: &buffer)
            }
            if duplicate {
                JSONWriter.appendRaw(",\"duplicate\":true", to: &buffer)
            }
        case .pong(let id):
            JSONWriter.appendRaw("{\"type\":\"pong\"", to: &buffer)
            if let id {
                JSONWriter.appendRaw(",\"id\":", to: &buffer)
                JSONWriter.appendString(id, to: &buffer)
            }
        case .error(let code, let message, let ref, let session):
            JSONWriter.appendRaw("{\"type\":\"error\",\"code\":\"", to: &buffer)
            // Wire codes are fixed lowercase ASCII: no escaping needed.
            buffer.append(contentsOf: code.rawValue.utf8)
            JSONWriter.appendRaw("\",\"message\":", to: &buffer)
            JSONWriter.appendString(message, to: &buffer)
            if let ref {
                JSONWriter.appendRaw(",\"ref\":", to: &buffer)
                JSONWriter.appendString(ref, to: &buffer)
            }
            if let session {
                JSONWriter.appendRaw(",\"session\":", to: &buffer)
                JSONWriter.appendString(session, to: &buffer)
            }
        }
        buffer.append(Byte.closeBrace)
        return buffer.count - start
    }

    /// Encodes this frame into a new buffer that starts with `headroom` zero bytes.
    /// - Parameter headroom: Bytes to reserve before the payload (e.g. `LWS_PRE` plus the WebSocket header).
    /// - Returns: `headroom` zero bytes followed by the frame's JSON text.
    public func encoded(headroom: Int = 0) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: max(headroom, 0))
        append(to: &buffer)
        return buffer
    }
}

/// One subject in a session's presence list (v1.1 §2): a `sub` with its `role`, and how many of its connections are
/// joined to the session.
public struct PresenceEntry: Sendable, Equatable, Hashable {
    public var sub: String
    public var role: String
    public var conns: Int

    /// Creates an entry.
    /// - Parameters:
    ///   - sub: The subject.
    ///   - role: Its role.
    ///   - conns: Its connections joined to the session (≥ 1).
    public init(sub: String, role: String, conns: Int) {
        self.sub = sub
        self.role = role
        self.conns = conns
    }
}

extension ServerFrame {
    /// Appends a `history` reply (v1.1 §4): `{"type":"history","session":S,"id":I?,"events":[...],"first":F,"head":H}`,
    /// splicing each stored event frame byte for byte.
    /// - Parameters:
    ///   - buffer: The buffer to append to.
    ///   - session: The session id.
    ///   - id: The request's id to echo, if any.
    ///   - events: The event frames (each one complete JSON object), oldest first.
    ///   - first: The oldest seq still held.
    ///   - head: The session's head.
    public static func appendHistory(
        into buffer: inout [UInt8], session: String, id: String?, events: [[UInt8]], first: UInt64, head: UInt64
    ) {
        JSONWriter.appendRaw("{\"type\":\"history\",\"session\":", to: &buffer)
        JSONWriter.appendString(session, to: &buffer)
        if let id {
            JSONWriter.appendRaw(",\"id\":", to: &buffer)
            JSONWriter.appendString(id, to: &buffer)
        }
        JSONWriter.appendRaw(",\"events\":[", to: &buffer)
        for (i, e) in events.enumerated() {
            if i > 0 { buffer.append(UInt8(ascii: ",")) }
            buffer.append(contentsOf: e)
        }
        JSONWriter.appendRaw("],\"first\":", to: &buffer)
        JSONWriter.appendUInt(first, to: &buffer)
        JSONWriter.appendRaw(",\"head\":", to: &buffer)
        JSONWriter.appendUInt(head, to: &buffer)
        buffer.append(Byte.closeBrace)
    }

    /// Appends an event frame to `buffer`, splicing `data` byte for byte.
    ///
    /// Produces `{"type":"event","session":S,"seq":N,"id":I,"kind":K,"from":{"sub":U,"role":R},"ts":T,"data":D}`;
    /// `seq` is omitted when `nil` (ephemeral events). This is the per-event hot path: build the frame once and queue
    /// the same bytes to every subscriber.
    /// - Parameters:
    ///   - buffer: The buffer to append to (its existing bytes, e.g. headroom, are kept).
    ///   - session: The session id.
    ///   - seq: The event's sequence number, or `nil` for an ephemeral event.
    ///   - id: The publisher's message id.
    ///   - kind: The event kind.
    ///   - sub: The publisher's subject (from the JWT).
    ///   - role: The publisher's role (`user`, `agent`, `operator`).
    ///   - timestampMs: When the gateway accepted the event, in Unix milliseconds (rendered as RFC 3339 UTC).
    ///   - data: The raw JSON text of the payload. It must be one valid JSON value (as ``ClientFrame/Publish/data`` is);
    ///     it is copied unchanged, not re-validated or re-escaped.
    /// - Returns: The number of bytes appended.
    @discardableResult
    public static func appendEvent(
        into buffer: inout [UInt8],
        session: String,
        seq: UInt64?,
        id: String,
        kind: String,
        sub: String,
        role: String,
        timestampMs: Int64,
        data: UnsafeRawBufferPointer
    ) -> Int {
        // Size the frame exactly, grow the array once, then write through a pointer (see RawJSONWriter).
        let fixed = 105  // every constant byte of the frame, the 24-byte timestamp included, without seq
        var total = fixed + JSONWriter.escapedLength(session) + JSONWriter.escapedLength(id)
            + JSONWriter.escapedLength(kind) + JSONWriter.escapedLength(sub) + JSONWriter.escapedLength(role) + data.count
        if let seq { total += 7 + JSONWriter.decimalLength(seq) }  // ,"seq":N
        let start = buffer.count
        if buffer.capacity - start < total {
            // Geometric growth: callers append several frames to one buffer.
            buffer.reserveCapacity(max(start + total, buffer.capacity * 2))
        }
        buffer.append(contentsOf: repeatElement(0, count: total))
        buffer.withUnsafeMutableBufferPointer { out in
            guard let base = out.baseAddress else { return }
            var w = RawJSONWriter(pointer: base + start, end: base + start + total)
            w.raw("{\"type\":\"event\",\"session\":")
            w.string(session)
            if let seq {
                w.raw(",\"seq\":")
                w.uint(seq)
            }
            w.raw(",\"id\":")
            w.string(id)
            w.raw(",\"kind\":")
            w.string(kind)
            w.raw(",\"from\":{\"sub\":")
            w.string(sub)
            w.raw(",\"role\":")
            w.string(role)
            w.raw("},\"ts\":\"")
            w.reserve(RFC3339.length)
            RFC3339.write(milliseconds: timestampMs, to: w.pointer)
            w.pointer += RFC3339.length
            w.raw("\",\"data\":")
            w.bytes(data)
            w.byte(Byte.closeBrace)
            // The length arithmetic above and the writes must agree; a mismatch is a bug here, not bad input. Every
            // write is bounds-checked (release too), so a mismatch traps instead of writing out of bounds.
            precondition(w.pointer == base + start + total, "event frame length mismatch")
        }
        return total
    }

    /// Appends an event frame to `buffer`, splicing `data` byte for byte (array convenience).
    /// - Parameters:
    ///   - buffer: The buffer to append to (its existing bytes, e.g. headroom, are kept).
    ///   - session: The session id.
    ///   - seq: The event's sequence number, or `nil` for an ephemeral event.
    ///   - id: The publisher's message id.
    ///   - kind: The event kind.
    ///   - sub: The publisher's subject.
    ///   - role: The publisher's role.
    ///   - timestampMs: When the gateway accepted the event, in Unix milliseconds.
    ///   - data: The raw JSON text of the payload (one valid JSON value), copied unchanged.
    /// - Returns: The number of bytes appended.
    @discardableResult
    public static func appendEvent(
        into buffer: inout [UInt8],
        session: String,
        seq: UInt64?,
        id: String,
        kind: String,
        sub: String,
        role: String,
        timestampMs: Int64,
        data: [UInt8]
    ) -> Int {
        data.withUnsafeBytes {
            appendEvent(
                into: &buffer, session: session, seq: seq, id: id, kind: kind, sub: sub, role: role,
                timestampMs: timestampMs, data: $0
            )
        }
    }

    /// Encodes an event frame into a new buffer that starts with `headroom` zero bytes.
    /// - Parameters:
    ///   - headroom: Bytes to reserve before the payload (e.g. `LWS_PRE` plus the WebSocket header).
    ///   - session: The session id.
    ///   - seq: The event's sequence number, or `nil` for an ephemeral event.
    ///   - id: The publisher's message id.
    ///   - kind: The event kind.
    ///   - sub: The publisher's subject.
    ///   - role: The publisher's role.
    ///   - timestampMs: When the gateway accepted the event, in Unix milliseconds.
    ///   - data: The raw JSON text of the payload (one valid JSON value), copied unchanged.
    /// - Returns: `headroom` zero bytes followed by the frame's JSON text; the payload starts at offset `headroom`.
    public static func encodeEvent(
        headroom: Int,
        session: String,
        seq: UInt64?,
        id: String,
        kind: String,
        sub: String,
        role: String,
        timestampMs: Int64,
        data: [UInt8]
    ) -> [UInt8] {
        let headroom = max(headroom, 0)
        var buffer: [UInt8] = []
        buffer.reserveCapacity(
            headroom + 128 + session.utf8.count + id.utf8.count + kind.utf8.count + sub.utf8.count + role.utf8.count
                + data.count
        )
        buffer.append(contentsOf: repeatElement(0, count: headroom))
        appendEvent(
            into: &buffer, session: session, seq: seq, id: id, kind: kind, sub: sub, role: role,
            timestampMs: timestampMs, data: data
        )
        return buffer
    }
}
