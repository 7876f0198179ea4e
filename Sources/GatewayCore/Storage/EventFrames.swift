import GatewayProtocol
import TranscriptLog

/// Event frames, encoded once per event (never per subscriber).
enum EventFrames {
    static func event(
        session: String, seq: UInt64?, id: String, kind: String, sub: String, role: String, timestampMs: Int64,
        data: [UInt8]
    ) -> [UInt8] {
        var out: [UInt8] = []
        ServerFrame.appendEvent(
            into: &out, session: session, seq: seq, id: id, kind: kind, sub: sub, role: role,
            timestampMs: timestampMs, data: data)
        return out
    }

    static func durableEvent(_ r: AppendRequest, seq: UInt64) -> [UInt8] {
        event(session: r.session, seq: seq, id: r.id, kind: r.kind, sub: r.sub, role: r.role, timestampMs: r.timestampMs, data: r.data)
    }

    static func record(_ r: TranscriptRecord) -> [UInt8] {
        event(session: r.session, seq: r.seq, id: r.id, kind: r.kind, sub: r.sub, role: r.role, timestampMs: r.timestampMs, data: r.data)
    }
}
