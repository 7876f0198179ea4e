import Foundation
import GatewayProtocol
import TranscriptLog

/// One event as the CLI shows it, built from a gateway `event` frame or from a transcript log record.
struct EventView: Sendable {
    /// Session id.
    var session: String
    /// Per-session seq; `nil` for an ephemeral event (a delta).
    var seq: UInt64?
    /// Publisher's message id.
    var id: String
    /// Event kind, e.g. `chat.message`.
    var kind: String
    /// Publisher's subject.
    var sub: String
    /// Publisher's role.
    var role: String
    /// Event time in Unix milliseconds, if the timestamp could be read.
    var timestampMs: Int64?
    /// The raw `ts` text of a frame (shown when it cannot be parsed).
    var timestampText: String
    /// The event's `data`: raw JSON bytes, exactly as published.
    var data: [UInt8]

    /// Whether the event is ephemeral (no seq: deltas and `ephemeral: true` publishes).
    var isEphemeral: Bool { seq == nil }

    /// Builds a view of a stored record.
    /// - Parameters:
    ///   - record: A record read from the log.
    init(record: TranscriptRecord) {
        session = record.session
        seq = record.seq
        id = record.id
        kind = record.kind
        sub = record.sub
        role = record.role
        timestampMs = record.timestampMs
        timestampText = RFC3339.format(milliseconds: record.timestampMs)
        data = record.data
    }

    /// Builds a view from parts (frames).
    init(
        session: String, seq: UInt64?, id: String, kind: String, sub: String, role: String, timestampText: String,
        data: [UInt8]
    ) {
        self.session = session
        self.seq = seq
        self.id = id
        self.kind = kind
        self.sub = sub
        self.role = role
        self.timestampText = timestampText
        self.timestampMs = RFC3339.parse(timestampText)
        self.data = data
    }

    /// The event as the gateway's `event` frame (the same bytes `tail --json` prints for it).
    /// - Returns: One JSON object; `data` spliced byte-exact.
    func frameText() -> String {
        var out: [UInt8] = []
        ServerFrame.appendEvent(
            into: &out, session: session, seq: seq, id: id, kind: kind, sub: sub, role: role,
            timestampMs: timestampMs ?? 0, data: data)
        return String(decoding: out, as: UTF8.self)
    }

    /// `data.text` when `data` is an object whose `text` member is a string (chat messages), else `nil`.
    /// - Returns: The unescaped text (still untrusted: escape before printing).
    func chatText() -> String? {
        stringMember("text")
    }

    /// A string member of `data` when `data` is an object, else `nil`.
    /// - Parameters:
    ///   - key: Member name.
    /// - Returns: The unescaped string.
    func stringMember(_ key: String) -> String? {
        guard let first = data.first(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0A && $0 != 0x0D }),
            first == UInt8(ascii: "{")
        else { return nil }
        return data.withUnsafeBytes { raw -> String? in
            guard case .success(let object) = JSONFields.dataScanner.scanObject(raw),
                let member = object.member(key, in: raw), member.type == .string
            else { return nil }
            return JSONScanner.decodeString(raw, range: member.range)
        }
    }

    /// A non-negative integer member of `data` when `data` is an object, else `nil`.
    /// - Parameters:
    ///   - key: Member name.
    /// - Returns: The value.
    func integerMember(_ key: String) -> UInt64? {
        guard let first = data.first(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0A && $0 != 0x0D }),
            first == UInt8(ascii: "{")
        else { return nil }
        return data.withUnsafeBytes { raw -> UInt64? in
            guard case .success(let object) = JSONFields.dataScanner.scanObject(raw),
                let member = object.member(key, in: raw), member.type == .number,
                case .success(let value) = JSONScanner.decodeUInt64(raw, range: member.range)
            else { return nil }
            return value
        }
    }
}

/// A frame from the gateway, decoded as far as the CLI needs it.
enum ServerMessage: Sendable {
    /// `welcome`: authenticated.
    case welcome(sub: String, role: String)
    /// `joined`: subscribed; replay (if `since` was given) and live events follow.
    case joined(Joined)
    /// `event`: one durable or ephemeral event.
    case event(EventView)
    /// `error`: a refused frame.
    case error(code: String, message: String)
    /// `presence` (v1.1): a subject's first connection joined the session, or its last one left.
    case presence(session: String, action: String, sub: String, role: String)
    /// `left`: the subscription ended; `reason` is set when the gateway ended it (v1.1: `forbidden`, `reset`).
    case left(session: String, reason: String?)
    /// Anything else (`ack`, `pong`, future frame types).
    case other(type: String)

    /// The fields of a `joined` frame.
    struct Joined: Sendable {
        /// Session id.
        var session: String
        /// The session's head when the join was processed.
        var head: UInt64
        /// The log's epoch.
        var epoch: String
        /// Set when events after `since` were removed by retention: the oldest seq still held.
        var trimmedFirst: UInt64?
        /// Set when the epoch differed or `since` was past the head: the client must drop what it holds.
        var reset: Bool
        /// The presence list (v1.1), when the join asked for it: (sub, role, conns).
        var presence: [(sub: String, role: String, conns: UInt64)]? = nil
    }

    /// Decodes one text message from the gateway.
    /// - Parameters:
    ///   - text: The message.
    /// - Returns: The decoded frame, or `nil` if it is not a JSON object with a string `type` (or a known frame
    ///   lacks a required field).
    static func decode(_ text: String) -> ServerMessage? {
        let bytes = Array(text.utf8)
        return bytes.withUnsafeBytes { raw -> ServerMessage? in
            guard case .success(let object) = JSONFields.frameScanner.scanObject(raw) else { return nil }
            let fields = JSONFields(raw: raw, object: object)
            guard let type = fields.string("type") else { return nil }
            switch type {
            case "welcome":
                return .welcome(sub: fields.string("sub") ?? "", role: fields.string("role") ?? "")
            case "joined":
                guard let session = fields.string("session"), let head = fields.uint("head") else { return nil }
                return .joined(
                    Joined(
                        session: session, head: head, epoch: fields.string("epoch") ?? "",
                        trimmedFirst: fields.bool("trimmed") == true ? fields.uint("first") : nil,
                        reset: fields.bool("reset") == true, presence: fields.presenceList()))
            case "presence":
                guard let session = fields.string("session"), let action = fields.string("action"),
                    let sub = fields.string("sub"), let role = fields.string("role")
                else { return nil }
                return .presence(session: session, action: action, sub: sub, role: role)
            case "left":
                guard let session = fields.string("session") else { return nil }
                return .left(session: session, reason: fields.string("reason"))
            case "event":
                guard let session = fields.string("session"), let kind = fields.string("kind"),
                    let data = fields.rawValue("data")
                else { return nil }
                var sub = ""
                var role = ""
                if let from = fields.rawValue("from"), from.first == UInt8(ascii: "{") {
                    from.withUnsafeBytes { fromRaw in
                        if case .success(let fromObject) = JSONFields.frameScanner.scanObject(fromRaw) {
                            let f = JSONFields(raw: fromRaw, object: fromObject)
                            sub = f.string("sub") ?? ""
                            role = f.string("role") ?? ""
                        }
                    }
                }
                return .event(
                    EventView(
                        session: session, seq: fields.uint("seq"), id: fields.string("id") ?? "", kind: kind,
                        sub: sub, role: role, timestampText: fields.string("ts") ?? "", data: data))
            case "error":
                return .error(code: fields.string("code") ?? "", message: fields.string("message") ?? "")
            default:
                return .other(type: type)
            }
        }
    }
}

/// Typed access to the top-level members of a scanned JSON object.
struct JSONFields {
    /// Scanner for gateway frames: generous bounds (the gateway's own limits are configurable).
    static let frameScanner = JSONScanner(maxDepth: 1_024, maxMembers: 4_096)
    /// Scanner for event `data` objects.
    static let dataScanner = JSONScanner(maxDepth: 1_024, maxMembers: 1_000_000)

    /// The scanned bytes.
    let raw: UnsafeRawBufferPointer
    /// The scan result.
    let object: JSONObject

    /// A string member, unescaped.
    func string(_ key: String) -> String? {
        guard let m = object.member(key, in: raw), m.type == .string else { return nil }
        return JSONScanner.decodeString(raw, range: m.range)
    }

    /// A non-negative integer member.
    func uint(_ key: String) -> UInt64? {
        guard let m = object.member(key, in: raw), m.type == .number,
            case .success(let v) = JSONScanner.decodeUInt64(raw, range: m.range)
        else { return nil }
        return v
    }

    /// A boolean member.
    func bool(_ key: String) -> Bool? {
        guard let m = object.member(key, in: raw), m.type == .bool, let first = m.range.first, first < raw.count else {
            return nil
        }
        return raw[first] == UInt8(ascii: "t")
    }

    /// The `presence` array of a `joined` frame: its entries with a string `sub` and `role` (conns 0 when absent).
    func presenceList() -> [(sub: String, role: String, conns: UInt64)]? {
        guard let m = object.member("presence", in: raw), m.type == .array,
            let array = try? JSONSerialization.jsonObject(with: Data(raw[m.range])) as? [Any]
        else { return nil }
        return array.compactMap { element in
            guard let entry = element as? [String: Any], let sub = entry["sub"] as? String,
                let role = entry["role"] as? String
            else { return nil }
            return (sub, role, (entry["conns"] as? NSNumber)?.uint64Value ?? 0)
        }
    }

    /// The raw bytes of any member's value.
    func rawValue(_ key: String) -> [UInt8]? {
        guard let m = object.member(key, in: raw), m.range.lowerBound >= 0, m.range.upperBound <= raw.count else {
            return nil
        }
        return Array(raw[m.range])
    }
}
