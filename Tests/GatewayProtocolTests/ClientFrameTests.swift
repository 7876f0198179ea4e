import GatewayProtocol
import Testing

/// Decodes a frame from a string's UTF-8 bytes with default limits.
func decode(_ text: String, limits: FrameLimits = .default) -> Result<ClientFrame, FrameError> {
    ClientFrame.decode(Array(text.utf8), limits: limits)
}

/// The error of a failed decode, or nil.
func failure(_ result: Result<ClientFrame, FrameError>) -> FrameError? {
    if case .failure(let error) = result { return error }
    return nil
}

/// A publish frame with the given raw JSON fragments for its fields (nil leaves the field out).
func publishJSON(
    session: String? = #""s1""#,
    id: String? = #""m1""#,
    kind: String? = #""chat.message""#,
    data: String? = "{}",
    ephemeral: String? = nil
) -> String {
    var parts = [#""type":"publish""#]
    if let session { parts.append(#""session":\#(session)"#) }
    if let id { parts.append(#""id":\#(id)"#) }
    if let kind { parts.append(#""kind":\#(kind)"#) }
    if let data { parts.append(#""data":\#(data)"#) }
    if let ephemeral { parts.append(#""ephemeral":\#(ephemeral)"#) }
    return "{" + parts.joined(separator: ",") + "}"
}

@Suite("ClientFrame decoding")
struct ClientFrameTests {
    @Test(
        "decodes every frame type",
        arguments: [
            (#"{"type":"hello"}"#, ClientFrame.hello(.init(token: nil))),
            (#"{"type":"hello","token":"eyJ.a.b"}"#, .hello(.init(token: "eyJ.a.b"))),
            (#"{"type":"hello","token":null}"#, .hello(.init(token: nil))),
            (#"{"type":"join","session":"s-1"}"#, .join(.init(session: "s-1", since: nil, epoch: nil))),
            (#"{"type":"join","session":"s","since":0}"#, .join(.init(session: "s", since: 0, epoch: nil))),
            (
                #"{"epoch":"e7","since":42,"session":"a:b","type":"join"}"#,
                .join(.init(session: "a:b", since: 42, epoch: "e7"))
            ),
            (#"{"type":"join","session":"s","since":null,"epoch":null}"#, .join(.init(session: "s", since: nil, epoch: nil))),
            (#"{"type":"leave","session":"S.1_x:y-z"}"#, .leave(.init(session: "S.1_x:y-z"))),
            (#"{"type":"ping"}"#, .ping(.init(id: nil))),
            (#"{"type":"ping","id":"p 1"}"#, .ping(.init(id: "p 1"))),
            (
                #"{"type":"publish","session":"s","id":"m","kind":"chat.message","data":{"t":"hi"}}"#,
                .publish(.init(session: "s", id: "m", kind: "chat.message", data: Array(#"{"t":"hi"}"#.utf8), ephemeralFlag: false))
            ),
            (
                #"{"type":"publish","session":"s","id":"m","kind":"progress","data":null,"ephemeral":true}"#,
                .publish(.init(session: "s", id: "m", kind: "progress", data: Array("null".utf8), ephemeralFlag: true))
            ),
            // Escaped spellings of known names are the same names.
            (#"{"\u0074ype":"\u0070ing","id":"\u00e9"}"#, .ping(.init(id: "é"))),
        ]
    )
    func decodesFrames(_ text: String, _ expected: ClientFrame) {
        #expect(decode(text) == .success(expected))
    }

    @Test("ignores unknown fields (forward compatibility)")
    func ignoresUnknownFields() {
        let text = #"{"type":"leave","session":"s","future":{"x":[1,2]},"v":2,"n":null}"#
        #expect(decode(text) == .success(.leave(.init(session: "s"))))
    }

    @Test(
        "refuses bad type fields",
        arguments: [
            (#"{}"#, "missing field 'type'"),
            (#"{"session":"s"}"#, "missing field 'type'"),
            (#"{"type":1}"#, "field 'type' must be a string"),
            (#"{"type":null}"#, "field 'type' must be a string"),
            (#"{"type":["join"]}"#, "field 'type' must be a string"),
            (#"{"type":"subscribe"}"#, "unknown type 'subscribe'"),
            (#"{"type":"Join","session":"s"}"#, "unknown type"),
            (#"{"type":""}"#, "unknown type"),
            (#"{"type":"join "}"#, "unknown type"),
        ]
    )
    func refusesBadType(_ text: String, _ message: String) {
        #expect(failure(decode(text)) == FrameError(.badRequest, message))
    }

    @Test(
        "session ids: 1-128 characters of A-Z a-z 0-9 . _ : -",
        arguments: [
            ("a", true), ("Z9._:-", true), ("proj-42:chat.main", true), (String(repeating: "x", count: 128), true),
            ("", false), (String(repeating: "x", count: 129), false), ("a b", false), ("a/b", false), ("é", false),
            ("a*", false), ("a\u{0}", false), ("*", false), ("a\nb", false),
        ]
    )
    func sessionRule(_ session: String, _ valid: Bool) {
        #expect(FieldRules.isValidSessionID(session) == valid)
        for text in [
            #"{"type":"join","session":\#(jsonString(session))}"#,
            #"{"type":"leave","session":\#(jsonString(session))}"#,
            publishJSON(session: jsonString(session)),
        ] {
            if valid {
                #expect(failure(decode(text)) == nil)
            } else {
                #expect(
                    failure(decode(text))?.message == "field 'session' must be 1-128 characters of A-Z a-z 0-9 . _ : -"
                )
            }
        }
    }

    @Test(
        "publisher ids: 1-128 printable characters",
        arguments: [
            ("m", true), ("msg 1", true), ("日本語", true), ("😀", true), (String(repeating: "é", count: 128), true),
            ("~!@#$%^&*()", true), ("\u{A0}", true),
            ("", false), (String(repeating: "é", count: 129), false), ("a\u{0}", false), ("a\u{1F}", false),
            ("a\u{7F}", false), ("a\u{80}", false), ("a\u{9F}", false), ("\t", false), ("a\nb", false),
        ]
    )
    func publisherIDRule(_ id: String, _ valid: Bool) {
        #expect(FieldRules.isValidPublisherID(id) == valid)
        let result = decode(publishJSON(id: jsonString(id)))
        if valid {
            guard case .success(.publish(let publish)) = result else {
                Issue.record("expected a publish frame, got \(result)")
                return
            }
            #expect(publish.id == id)
        } else {
            #expect(failure(result) == FrameError(.badRequest, "field 'id' must be 1-128 printable characters"))
        }
    }

    @Test(
        "kinds: 1-64 characters of a-z 0-9 . _ -",
        arguments: [
            ("chat.message", true), ("progress", true), ("chat.delta", true), ("a_b-c.9", true),
            (String(repeating: "k", count: 64), true),
            ("", false), (String(repeating: "k", count: 65), false), ("Chat", false), ("chat message", false),
            ("chat:x", false), ("chat/x", false), ("é", false),
        ]
    )
    func kindRule(_ kind: String, _ valid: Bool) {
        #expect(FieldRules.isValidKind(kind) == valid)
        let result = decode(publishJSON(kind: jsonString(kind)))
        if valid {
            #expect(failure(result) == nil)
        } else {
            // The id was readable, so the error echoes it.
            #expect(
                failure(result) == FrameError(.badRequest, "field 'kind' must be 1-64 characters of a-z 0-9 . _ -", ref: "m1")
            )
        }
    }

    @Test(
        "publish: missing and mistyped fields name the field and echo a readable id",
        arguments: [
            (publishJSON(session: nil), "missing field 'session'", "m1"),
            (publishJSON(session: "1"), "field 'session' must be a string", "m1"),
            (publishJSON(session: "null"), "field 'session' must be a string", "m1"),
            (publishJSON(id: nil), "missing field 'id'", nil),
            (publishJSON(id: "7"), "field 'id' must be a string", nil),
            (publishJSON(id: "null"), "field 'id' must be a string", nil),
            (publishJSON(kind: nil), "missing field 'kind'", "m1"),
            (publishJSON(kind: "[]"), "field 'kind' must be a string", "m1"),
            (publishJSON(data: nil), "missing field 'data'", "m1"),
            (publishJSON(ephemeral: #""true""#), "field 'ephemeral' must be a boolean", "m1"),
            (publishJSON(ephemeral: "1"), "field 'ephemeral' must be a boolean", "m1"),
            (publishJSON(id: #""x\u0001""#), "field 'id' must be 1-128 printable characters", nil),
        ] as [(String, String, String?)]
    )
    func publishFieldErrors(_ text: String, _ message: String, _ ref: String?) {
        #expect(failure(decode(text)) == FrameError(.badRequest, message, ref: ref))
    }

    @Test(
        "publish: data is any JSON value, copied byte for byte",
        arguments: [
            "null", "true", "false", "0", "-1.5e-7", #""text""#, #""\u00e9\n""#, "[]", "{}",
            #"{ "a" : [ 1 ,2 ],"b":{ }, "c" : "x" }"#,
            "{\n\t\"nested\": {\"a\": 1, \"a\": 2}\r\n}",  // whitespace and nested duplicates preserved as sent
            #"[{"x":[[[["deep"]]]]}]"#,
        ]
    )
    func publishDataIsByteExact(_ data: String) throws {
        let frame = try decode(publishJSON(data: data)).get()
        guard case .publish(let publish) = frame else {
            Issue.record("expected publish, got \(frame)")
            return
        }
        #expect(publish.data == Array(data.utf8))
    }

    @Test("publish: data keeps whitespace around nothing but itself")
    func dataRangeExcludesSurroundingWhitespace() throws {
        let frame = try decode(#"{"type":"publish","session":"s","id":"m","kind":"k","data":   [ 1 ]   }"#).get()
        guard case .publish(let publish) = frame else { throw FrameError(.badRequest, "not a publish") }
        #expect(publish.data == Array("[ 1 ]".utf8))
    }

    @Test(
        "publish: ephemeral from the flag or a .delta kind",
        arguments: [
            (#""chat.message""#, nil, false),
            (#""chat.message""#, "false", false),
            (#""chat.message""#, "null", false),
            (#""chat.message""#, "true", true),
            (#""chat.delta""#, nil, true),
            (#""chat.delta""#, "false", true),
            (#""delta""#, nil, false),
            (#""x.deltas""#, nil, false),
        ] as [(String, String?, Bool)]
    )
    func ephemeral(_ kind: String, _ flag: String?, _ expected: Bool) throws {
        let frame = try decode(publishJSON(kind: kind, ephemeral: flag)).get()
        guard case .publish(let publish) = frame else { throw FrameError(.badRequest, "not a publish") }
        #expect(publish.isEphemeral == expected)
        #expect(publish.ephemeralFlag == (flag == "true"))
    }

    @Test(
        "FrameKind.isEphemeral",
        arguments: [
            ("chat.delta", false, true), ("x.y.delta", false, true), ("chat.message", true, true),
            ("chat.message", false, false), ("delta", false, false), (".delta", false, true), ("chat.deltax", false, false),
            ("", false, false),
        ]
    )
    func isEphemeralHelper(_ kind: String, _ flag: Bool, _ expected: Bool) {
        #expect(FrameKind.isEphemeral(kind: kind, flag: flag) == expected)
    }

    @Test(
        "join: since must be a non-negative integer",
        arguments: [
            ("0", UInt64?.some(0)), ("-0", 0), ("17", 17), ("18446744073709551615", UInt64.max), ("null", nil),
        ] as [(String, UInt64?)]
    )
    func sinceAccepted(_ since: String, _ expected: UInt64?) {
        let text = #"{"type":"join","session":"s","since":\#(since)}"#
        #expect(decode(text) == .success(.join(.init(session: "s", since: expected, epoch: nil))))
    }

    @Test(
        "join: since refusals",
        arguments: [
            ("-1", "field 'since' must be a non-negative integer"),
            ("1.5", "field 'since' must be a non-negative integer"),
            ("1.0", "field 'since' must be a non-negative integer"),
            ("1e2", "field 'since' must be a non-negative integer"),
            (#""5""#, "field 'since' must be a non-negative integer"),
            ("true", "field 'since' must be a non-negative integer"),
            ("[1]", "field 'since' must be a non-negative integer"),
            ("18446744073709551616", "field 'since' is too large"),
        ]
    )
    func sinceRefused(_ since: String, _ message: String) {
        let text = #"{"type":"join","session":"s","since":\#(since)}"#
        #expect(failure(decode(text)) == FrameError(.badRequest, message))
    }

    @Test(
        "join and leave: session and epoch errors",
        arguments: [
            (#"{"type":"join"}"#, "missing field 'session'"),
            (#"{"type":"join","session":5}"#, "field 'session' must be a string"),
            (#"{"type":"join","session":"s","epoch":5}"#, "field 'epoch' must be a string"),
            (#"{"type":"join","session":"s","epoch":{}}"#, "field 'epoch' must be a string"),
            (#"{"type":"leave"}"#, "missing field 'session'"),
            (#"{"type":"leave","session":["s"]}"#, "field 'session' must be a string"),
            (#"{"type":"hello","token":42}"#, "field 'token' must be a string"),
            (#"{"type":"ping","id":1}"#, "field 'id' must be a string"),
            (#"{"type":"ping","id":""}"#, "field 'id' must be 1-128 printable characters"),
        ]
    )
    func otherFieldErrors(_ text: String, _ message: String) {
        #expect(failure(decode(text)) == FrameError(.badRequest, message))
    }

    @Test("ref echoes a valid id on any frame error, and is absent when the id cannot be read")
    func refEchoing() {
        #expect(failure(decode(#"{"type":"nope","id":"r1"}"#))?.ref == "r1")
        #expect(failure(decode(#"{"type":"join","id":"r2"}"#))?.ref == "r2")
        #expect(failure(decode(#"{"type":"ping","id":"r3","x":}"#))?.ref == nil)  // malformed JSON: nothing read
        #expect(failure(decode(#"{"type":"nope","id":7}"#))?.ref == nil)
        #expect(failure(decode(publishJSON(kind: "1", data: nil)))?.ref == "m1")
    }

    @Test("malformed JSON is bad_request with the scanner's reason")
    func malformed() {
        #expect(failure(decode(#"{"type":"ping""#)) == FrameError(.badRequest, "malformed JSON: unexpected end of input at byte 14"))
        #expect(failure(decode(#"{"type":"ping","type":"ping"}"#))?.message == "malformed JSON: duplicate key 'type' at byte 15")
        #expect(failure(decode("[1]"))?.code == .badRequest)
        #expect(failure(decode(""))?.code == .badRequest)
        let deep = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        #expect(failure(decode(#"{"type":"publish","session":"s","id":"m","kind":"k","data":\#(deep)}"#))?.message
            == "malformed JSON: nesting too deep at byte 122")
    }

    @Test("messages over the size limit are too_large")
    func tooLarge() {
        let limits = FrameLimits(maxMessageBytes: 64)
        let ok = #"{"type":"ping","id":"\#(String(repeating: "x", count: 64 - 23))"}"#
        #expect(ok.utf8.count == 64)
        #expect(failure(decode(ok, limits: limits)) == nil)
        let big = #"{"type":"ping","id":"\#(String(repeating: "x", count: 64 - 22))"}"#
        #expect(failure(decode(big, limits: limits)) == FrameError(.tooLarge, "message exceeds 64 bytes"))
    }

    @Test("a 1 MB string field inside data decodes within the default limit")
    func megabyteData() throws {
        let payload = #""\#(String(repeating: "0123456789abcdef", count: 65_000))""#
        let text = publishJSON(data: #"{"blob":\#(payload)}"#)
        #expect(text.utf8.count < 1 << 20)
        let frame = try decode(text).get()
        guard case .publish(let publish) = frame else { throw FrameError(.badRequest, "not a publish") }
        #expect(publish.data.count == payload.utf8.count + 9)
        #expect(failure(decode(publishJSON(data: #"{"blob":\#(payload)\#(payload.dropFirst().dropLast())"}"#)))?.code == .tooLarge)
    }

    @Test("error codes have the exact wire spellings")
    func errorCodeRawValues() {
        #expect(ErrorCode.allCases.map(\.rawValue) == [
            "bad_request", "unauthorized", "forbidden", "not_found", "rate_limited", "too_large", "unavailable",
        ])
    }

    @Test("FrameError equality ignores the source location but not the fields")
    func frameErrorEquality() {
        let a = FrameError(.badRequest, "m", ref: "r")
        let b = FrameError(.badRequest, "m", ref: "r")
        #expect(a == b)
        #expect(a.line != b.line)
        #expect(a != FrameError(.badRequest, "m", ref: nil))
        #expect(a != FrameError(.forbidden, "m", ref: "r"))
        #expect(a.description.hasPrefix("bad_request: m (GatewayProtocolTests/"))
        #expect(a.serverFrame == .error(code: .badRequest, message: "m", ref: "r"))
    }
}

/// A JSON string literal for `value`, escaping what JSON requires (used to put test inputs into frames).
func jsonString(_ value: String) -> String {
    var out = "\""
    for scalar in value.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case _ where scalar.value < 0x20:
            let hex = String(scalar.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}

/// The body of an HTTP publish (`POST /v1/sessions/{S}/events`): the publish rules, the session from the path.
@Suite("HTTP publish body decoding")
struct HTTPPublishBodyTests {
    static func decodeBody(_ text: String, session: String = "path-s", limits: FrameLimits = .default)
        -> Result<ClientFrame.Publish, FrameError>
    {
        Array(text.utf8).withUnsafeBytes { ClientFrame.decodePublish(body: $0, session: session, limits: limits) }
    }

    @Test("the path names the session; type and session members of the body are ignored")
    func pathSession() throws {
        let p = try Self.decodeBody(#"{"type":"hello","session":"other","id":"m1","kind":"chat.delta","data":{"a": 1}}"#).get()
        #expect(p.session == "path-s" && p.id == "m1" && p.kind == "chat.delta" && p.isEphemeral)
        #expect(String(decoding: p.data, as: UTF8.self) == #"{"a": 1}"#)
        let flagged = try Self.decodeBody(#"{"id":"m2","kind":"chat.message","data":1,"ephemeral":true}"#).get()
        #expect(flagged.ephemeralFlag && flagged.isEphemeral)
    }

    @Test(
        "the publish field rules apply, with the WebSocket's messages",
        arguments: [
            ("not json", "malformed JSON"), ("[1]", "malformed JSON"), (#"{"kind":"k","data":1}"#, "missing field 'id'"),
            (#"{"id":"a","data":1}"#, "missing field 'kind'"), (#"{"id":"a","kind":"k"}"#, "missing field 'data'"),
            (#"{"id":"a","kind":"K!","data":1}"#, "field 'kind' must be"),
            (#"{"id":"a","kind":"k","data":1,"ephemeral":1}"#, "field 'ephemeral' must be a boolean"),
        ])
    func rules(body: String, message: String) {
        guard case .failure(let e) = Self.decodeBody(body) else {
            Issue.record("\(body) was accepted")
            return
        }
        #expect(e.code == .badRequest && e.message.hasPrefix(message), "\(body): \(e.message)")
    }

    @Test("a body over the limit is too_large")
    func tooLarge() {
        let limits = FrameLimits(maxMessageBytes: 16)
        guard case .failure(let e) = Self.decodeBody(#"{"id":"a","kind":"k","data":"0123456789"}"#, limits: limits) else {
            Issue.record("accepted")
            return
        }
        #expect(e.code == .tooLarge)
    }
}
