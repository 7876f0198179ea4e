import GatewayProtocol

/// Server frames as payload bytes (JSON text) ready for the outbound queue.
enum Wire {
    static func welcome(conn: String, sub: String, role: String, exp: Int64) -> [UInt8] {
        encode(.welcome(conn: conn, sub: sub, role: role, exp: exp))
    }
    static func joined(
        session: String, head: UInt64, epoch: String, trimmedFirst: UInt64?, reset: Bool, presence: [PresenceEntry]?
    ) -> [UInt8] {
        encode(.joined(session: session, head: head, epoch: epoch, trimmedFirst: trimmedFirst, reset: reset, presence: presence))
    }
    static func left(session: String, reason: String? = nil) -> [UInt8] { encode(.left(session: session, reason: reason)) }
    static func refreshed(exp: Int64) -> [UInt8] { encode(.refreshed(exp: exp)) }
    static func presence(session: String, action: String, sub: String, role: String) -> [UInt8] {
        encode(.presence(session: session, action: action, sub: sub, role: role))
    }
    static func ack(id: String, session: String, seq: UInt64?, duplicate: Bool) -> [UInt8] {
        encode(.ack(id: id, session: session, seq: seq, duplicate: duplicate))
    }
    static func pong(id: String?) -> [UInt8] { encode(.pong(id: id)) }
    static func error(code: ErrorCode, message: String, ref: String?, session: String? = nil) -> [UInt8] {
        encode(.error(code: code, message: message, ref: ref, session: session))
    }

    private static func encode(_ frame: ServerFrame) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(128)
        frame.append(to: &out)
        return out
    }
}
