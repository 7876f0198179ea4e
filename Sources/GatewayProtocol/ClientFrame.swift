/// A frame sent by a client, decoded and validated against protocol-v1.md ("Frames from clients", "Rules and limits").
///
/// Decoding is strict about what the contract names and lenient about the rest: unknown fields are ignored so that
/// newer clients keep working, and an explicit `null` in an optional field is treated as absent (as Codable's
/// `decodeIfPresent` does), except for `data`, where `null` is a value.
public enum ClientFrame: Sendable, Equatable {
    /// `{"type":"hello","token":T?}`
    case hello(Hello)
    /// `{"type":"join","session":S,"since":N?,"epoch":E?}`
    case join(Join)
    /// `{"type":"leave","session":S}`
    case leave(Leave)
    /// `{"type":"publish","session":S,"id":I,"kind":K,"data":D,"ephemeral":E?}`
    case publish(Publish)
    /// `{"type":"ping","id":I?}`
    case ping(Ping)
    /// `{"type":"refresh","token":T}` (v1.1 §1)
    case refresh(Refresh)
    /// `{"type":"history","session":S,"before":N?,"limit":L?,"id":I?}` (v1.1 §4)
    case history(History)

    /// The fields of a `hello` frame.
    public struct Hello: Sendable, Equatable {
        /// The JWT, if the client sent one (it may have authenticated with an `Authorization` header instead).
        public var token: String?

        /// Creates a hello frame.
        /// - Parameter token: The JWT, if any.
        public init(token: String?) { self.token = token }
    }

    /// The fields of a `join` frame.
    public struct Join: Sendable, Equatable {
        /// The session to subscribe to (already validated).
        public var session: String
        /// Replay durable events with `seq > since`, if given.
        public var since: UInt64?
        /// The transcript epoch the client last saw, if given (meaningful only with `since`).
        public var epoch: String?
        /// Replay only the last `last` durable events (1-10,000; never together with `since`), v1.1 §4.
        public var last: Int?
        /// Whether the subscription carries presence (`joined.presence` and `presence` frames), v1.1 §2.
        public var presence: Bool

        /// Creates a join frame.
        /// - Parameters:
        ///   - session: The session id.
        ///   - since: The last seq the client holds, if any.
        ///   - epoch: The epoch the client last saw, if any.
        ///   - last: How many of the latest durable events to replay instead of `since`, if any.
        ///   - presence: Whether presence is asked for.
        public init(session: String, since: UInt64?, epoch: String?, last: Int? = nil, presence: Bool = false) {
            self.session = session
            self.since = since
            self.epoch = epoch
            self.last = last
            self.presence = presence
        }
    }

    /// The fields of a `refresh` frame: a new token for the live connection.
    public struct Refresh: Sendable, Equatable {
        /// The new JWT (a non-empty string; verified like a `hello` token).
        public var token: String

        /// Creates a refresh frame.
        /// - Parameter token: The new JWT.
        public init(token: String) { self.token = token }
    }

    /// The fields of a `history` frame: a page of durable events before a seq, without a subscription.
    public struct History: Sendable, Equatable {
        /// The limits of `limit` (v1.1 §4).
        public static let limitRange = 1...500
        /// The default page size.
        public static let defaultLimit = 50

        /// The session to read (already validated).
        public var session: String
        /// Only events with `seq < before` (default: head + 1).
        public var before: UInt64?
        /// At most this many events (1-500, default 50).
        public var limit: Int
        /// The id to echo in the reply, if any.
        public var id: String?

        /// Creates a history frame.
        /// - Parameters:
        ///   - session: The session id.
        ///   - before: The exclusive upper seq bound, if any.
        ///   - limit: The page size.
        ///   - id: The id to echo, if any.
        public init(session: String, before: UInt64?, limit: Int = History.defaultLimit, id: String?) {
            self.session = session
            self.before = before
            self.limit = limit
            self.id = id
        }
    }

    /// The fields of a `leave` frame.
    public struct Leave: Sendable, Equatable {
        /// The session to unsubscribe from (already validated).
        public var session: String

        /// Creates a leave frame.
        /// - Parameter session: The session id.
        public init(session: String) { self.session = session }
    }

    /// The fields of a `publish` frame.
    public struct Publish: Sendable, Equatable {
        /// The target session (already validated).
        public var session: String
        /// The publisher's message id (already validated; the dedupe key with session and `sub`).
        public var id: String
        /// The event kind (already validated).
        public var kind: String
        /// The raw JSON text of `data`, byte for byte as the client sent it (whitespace included).
        public var data: [UInt8]
        /// The `ephemeral` field as sent (`false` when absent). See ``isEphemeral`` for the effective value.
        public var ephemeralFlag: Bool

        /// Creates a publish frame.
        /// - Parameters:
        ///   - session: The session id.
        ///   - id: The publisher's message id.
        ///   - kind: The event kind.
        ///   - data: The raw JSON text of the payload.
        ///   - ephemeralFlag: The `ephemeral` field as sent.
        public init(session: String, id: String, kind: String, data: [UInt8], ephemeralFlag: Bool) {
            self.session = session
            self.id = id
            self.kind = kind
            self.data = data
            self.ephemeralFlag = ephemeralFlag
        }

        /// Whether the event skips storage: the flag is set or the kind ends in `.delta`.
        public var isEphemeral: Bool { FrameKind.isEphemeral(kind: kind, flag: ephemeralFlag) }
    }

    /// The fields of a `ping` frame.
    public struct Ping: Sendable, Equatable {
        /// The id to echo in `pong`, if any. Must be a string (like publish ids) of 1-128 printable characters.
        public var id: String?

        /// Creates a ping frame.
        /// - Parameter id: The id to echo, if any.
        public init(id: String?) { self.id = id }
    }

    /// Decodes and validates one client message.
    ///
    /// Never traps on input. Every refusal is a ``FrameError``: `too_large` for a message over
    /// ``FrameLimits/maxMessageBytes``, otherwise `bad_request` with a message that names the field. The error's `ref`
    /// is the frame's `id` whenever the JSON was well-formed and `id` is a valid id string, whatever the frame type.
    /// - Parameters:
    ///   - bytes: The complete (reassembled) text message.
    ///   - limits: Size and shape limits.
    /// - Returns: The frame, or why it was refused.
    public static func decode(_ bytes: UnsafeRawBufferPointer, limits: FrameLimits) -> Result<ClientFrame, FrameError> {
        decodeFields(bytes, limits: limits, pathSession: nil) { fields throws(FrameError) in try fields.frame() }
    }

    /// Decodes and validates the body of an HTTP publish (`POST /v1/sessions/{S}/events`, protocol v1.1 §6):
    /// `{"id":I,"kind":K,"data":D,"ephemeral":E?}` under the same field rules as a `publish` frame, for the session
    /// named in the path (validated by the caller with ``FieldRules/isValidSessionID(_:)``). Members `type` and
    /// `session` of the body are ignored.
    /// - Parameters:
    ///   - bytes: The complete body.
    ///   - session: The session id from the path.
    ///   - limits: Size and shape limits.
    /// - Returns: The publish, or why it was refused (`too_large`, or `bad_request` naming the field).
    public static func decodePublish(body bytes: UnsafeRawBufferPointer, session: String, limits: FrameLimits)
        -> Result<Publish, FrameError>
    {
        decodeFields(bytes, limits: limits, pathSession: session) { fields throws(FrameError) in try fields.publish() }
    }

    /// Scans `bytes` as one JSON object, files its known members and builds the result with `build`.
    private static func decodeFields<T>(
        _ bytes: UnsafeRawBufferPointer, limits: FrameLimits, pathSession: String?,
        _ build: (Fields) throws(FrameError) -> T
    ) -> Result<T, FrameError> {
        guard bytes.count <= limits.maxMessageBytes else {
            return .failure(FrameError(.tooLarge, "message exceeds \(limits.maxMessageBytes) bytes"))
        }
        let object: JSONObject
        switch JSONScanner(maxDepth: limits.maxDepth, maxMembers: limits.maxMembers).scanObject(bytes) {
        case .success(let scanned): object = scanned
        case .failure(let error): return .failure(FrameError(.badRequest, "malformed JSON: \(error)"))
        }
        var fields = Fields(bytes: bytes)
        fields.pathSession = pathSession
        // One pass over the members fills the slots we know; anything else is ignored (forward compatibility).
        // Keys are matched on their bytes, so no String is built for them.
        for member in object.members {
            member.withKeyBytes(in: bytes) { key in fields.assign(member, toKey: key) }
        }
        // Read the id first so every later error can echo it.
        if let id = fields.id, id.type == .string {
            fields.ref = JSONScanner.withStringBytes(bytes, id) { raw in
                FieldRules.isValidPublisherID(utf8: raw) ? String(decoding: raw, as: UTF8.self) : nil
            }
        }
        do {
            return .success(try build(fields))
        } catch {
            return .failure(error)
        }
    }

    /// Decodes and validates one client message held in an array.
    /// - Parameters:
    ///   - bytes: The complete (reassembled) text message.
    ///   - limits: Size and shape limits.
    /// - Returns: The frame, or why it was refused.
    public static func decode(_ bytes: [UInt8], limits: FrameLimits) -> Result<ClientFrame, FrameError> {
        bytes.withUnsafeBytes { decode($0, limits: limits) }
    }
}

/// Whether `raw` is exactly the ASCII text `name`.
@inline(__always) private func equals(_ raw: UnsafeRawBufferPointer, _ name: StaticString) -> Bool {
    guard raw.count == name.utf8CodeUnitCount else { return false }
    let p = name.utf8Start
    for i in 0..<raw.count where raw[i] != p[i] { return false }
    return true
}

/// The frame types of protocol v1 and v1.1.
private enum FrameType {
    case hello, join, leave, publish, ping, refresh, history
}

/// The known members of one frame, and the field rules applied to them.
private struct Fields {
    let bytes: UnsafeRawBufferPointer
    var type: JSONMember?
    var id: JSONMember?
    var session: JSONMember?
    var kind: JSONMember?
    var data: JSONMember?
    var ephemeral: JSONMember?
    var since: JSONMember?
    var epoch: JSONMember?
    var token: JSONMember?
    var last: JSONMember?
    var presence: JSONMember?
    var before: JSONMember?
    var limit: JSONMember?
    var ref: String?
    /// The session named by an HTTP path: it takes the place of the `session` member.
    var pathSession: String?

    init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    /// Files `member` under its (unescaped) key if the key is one the contract names.
    mutating func assign(_ member: JSONMember, toKey key: UnsafeRawBufferPointer) {
        // Dispatch on length first: it separates all but three keys with one comparison.
        switch key.count {
        case 2: if equals(key, "id") { id = member }
        case 4:
            if equals(key, "type") {
                type = member
            } else if equals(key, "kind") {
                kind = member
            } else if equals(key, "data") {
                data = member
            } else if equals(key, "last") {
                last = member
            }
        case 5:
            if equals(key, "since") {
                since = member
            } else if equals(key, "epoch") {
                epoch = member
            } else if equals(key, "token") {
                token = member
            } else if equals(key, "limit") {
                limit = member
            }
        case 6: if equals(key, "before") { before = member }
        case 7: if equals(key, "session") { session = member }
        case 8: if equals(key, "presence") { presence = member }
        case 9: if equals(key, "ephemeral") { ephemeral = member }
        default: break
        }
    }

    func frame() throws(FrameError) -> ClientFrame {
        guard let type else { throw badRequest("missing field 'type'") }
        guard type.type == .string else { throw badRequest("field 'type' must be a string") }
        // Matching the unescaped bytes means an escaped spelling of a known type (`"\u0070ing"`) is that type.
        let known: FrameType? = JSONScanner.withStringBytes(bytes, type) { raw in
            switch raw.count {
            case 4:
                if equals(raw, "join") { return .join }
                if equals(raw, "ping") { return .ping }
            case 5:
                if equals(raw, "leave") { return .leave }
                if equals(raw, "hello") { return .hello }
            case 7:
                if equals(raw, "publish") { return .publish }
                if equals(raw, "refresh") { return .refresh }
                if equals(raw, "history") { return .history }
            default: break
            }
            return nil
        }
        switch known {
        case .publish: return .publish(try publish())
        case .join: return .join(try join())
        case .leave: return .leave(ClientFrame.Leave(session: try sessionID()))
        case .ping: return .ping(ClientFrame.Ping(id: try pingID()))
        case .hello: return .hello(ClientFrame.Hello(token: try optionalString(token, "token")))
        case .refresh:
            guard let value = try optionalString(token, "token"), !value.isEmpty else {
                throw badRequest("missing field 'token'")
            }
            return .refresh(ClientFrame.Refresh(token: value))
        case .history: return .history(try history())
        case nil:
            // Echo the type only when it is short and harmless, so the message stays small and clean.
            let echo: String? = JSONScanner.withStringBytes(bytes, type) { raw in
                raw.count <= 32 && FieldRules.isValidKind(utf8: raw) ? String(decoding: raw, as: UTF8.self) : nil
            }
            if let echo { throw badRequest("unknown type '\(echo)'") }
            throw badRequest("unknown type")
        }
    }

    func publish() throws(FrameError) -> ClientFrame.Publish {
        let session = try sessionID()
        guard let id else { throw badRequest("missing field 'id'") }
        guard id.type == .string else { throw badRequest("field 'id' must be a string") }
        guard let idValue = validatedString(id, FieldRules.isValidPublisherID(utf8:)) else {
            throw badRequest("field 'id' must be 1-128 printable characters")
        }
        guard let kind else { throw badRequest("missing field 'kind'") }
        guard kind.type == .string else { throw badRequest("field 'kind' must be a string") }
        guard let kindValue = validatedString(kind, FieldRules.isValidKind(utf8:)) else {
            throw badRequest("field 'kind' must be 1-64 characters of a-z 0-9 . _ -")
        }
        guard let data else { throw badRequest("missing field 'data'") }
        var flag = false
        if let ephemeral, ephemeral.type != .null {
            guard ephemeral.type == .bool else { throw badRequest("field 'ephemeral' must be a boolean") }
            // The scanner validated the literal, so its first byte tells true from false.
            flag = bytes[ephemeral.range.lowerBound] == UInt8(ascii: "t")
        }
        return ClientFrame.Publish(
            session: session,
            id: idValue,
            kind: kindValue,
            data: Array(UnsafeRawBufferPointer(rebasing: bytes[data.range])),
            ephemeralFlag: flag
        )
    }

    private func join() throws(FrameError) -> ClientFrame.Join {
        let session = try sessionID()
        let sinceValue = try optionalUInt(since, "since")
        var lastValue: Int? = nil
        if let n = try optionalUInt(last, "last") {
            guard (1...10_000).contains(n) else { throw badRequest("field 'last' must be an integer from 1 to 10000") }
            guard sinceValue == nil else { throw badRequest("fields 'last' and 'since' cannot be used together") }
            lastValue = Int(n)
        }
        return ClientFrame.Join(
            session: session, since: sinceValue, epoch: try optionalString(epoch, "epoch"), last: lastValue,
            presence: try optionalBool(presence, "presence") ?? false)
    }

    private func history() throws(FrameError) -> ClientFrame.History {
        let session = try sessionID()
        let beforeValue = try optionalUInt(before, "before")
        var limitValue = ClientFrame.History.defaultLimit
        if let n = try optionalUInt(limit, "limit") {
            guard n >= 1 && n <= UInt64(ClientFrame.History.limitRange.upperBound) else {
                throw badRequest("field 'limit' must be an integer from 1 to \(ClientFrame.History.limitRange.upperBound)")
            }
            limitValue = Int(n)
        }
        return ClientFrame.History(session: session, before: beforeValue, limit: limitValue, id: try pingID())
    }

    /// A non-negative integer member (absent or null: nil).
    private func optionalUInt(_ member: JSONMember?, _ name: StaticString) throws(FrameError) -> UInt64? {
        guard let member, member.type != .null else { return nil }
        guard member.type == .number else { throw badRequest("field '\(name)' must be a non-negative integer") }
        switch JSONScanner.decodeUInt64(bytes, range: member.range) {
        case .success(let value): return value
        case .failure(.overflow): throw badRequest("field '\(name)' is too large")
        case .failure: throw badRequest("field '\(name)' must be a non-negative integer")
        }
    }

    /// A boolean member (absent or null: nil).
    private func optionalBool(_ member: JSONMember?, _ name: StaticString) throws(FrameError) -> Bool? {
        guard let member, member.type != .null else { return nil }
        guard member.type == .bool else { throw badRequest("field '\(name)' must be a boolean") }
        // The scanner validated the literal, so its first byte tells true from false.
        return bytes[member.range.lowerBound] == UInt8(ascii: "t")
    }

    private func sessionID() throws(FrameError) -> String {
        if let pathSession { return pathSession }
        guard let session else { throw badRequest("missing field 'session'") }
        guard session.type == .string else { throw badRequest("field 'session' must be a string") }
        guard let value = validatedString(session, FieldRules.isValidSessionID(utf8:)) else {
            throw badRequest("field 'session' must be 1-128 characters of A-Z a-z 0-9 . _ : -")
        }
        return value
    }

    private func pingID() throws(FrameError) -> String? {
        guard let id, id.type != .null else { return nil }
        guard id.type == .string else { throw badRequest("field 'id' must be a string") }
        guard let value = validatedString(id, FieldRules.isValidPublisherID(utf8:)) else {
            throw badRequest("field 'id' must be 1-128 printable characters")
        }
        return value
    }

    /// The string value of a string member if its unescaped bytes pass `rule`; the rule runs on bytes, so a `String`
    /// is only built for values that are kept.
    private func validatedString(_ member: JSONMember, _ rule: (UnsafeRawBufferPointer) -> Bool) -> String? {
        JSONScanner.withStringBytes(bytes, member) { raw in rule(raw) ? String(decoding: raw, as: UTF8.self) : nil }
    }

    private func optionalString(_ member: JSONMember?, _ name: StaticString) throws(FrameError) -> String? {
        guard let member, member.type != .null else { return nil }
        guard member.type == .string else { throw badRequest("field '\(name)' must be a string") }
        return JSONScanner.withStringBytes(bytes, member) { String(decoding: $0, as: UTF8.self) }
    }

    private func badRequest(_ message: String, line: Int = #line) -> FrameError {
        FrameError(.badRequest, message, ref: ref, line: line)
    }
}
