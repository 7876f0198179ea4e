import Foundation
import GatewayProtocol
import Testing

/// The frame's bytes as a string (test output is always valid UTF-8).
func text(_ frame: ServerFrame) -> String {
    String(decoding: frame.encoded(), as: UTF8.self)
}

/// Parses JSON text with Foundation, as an independent check of what the encoder produced.
func foundationObject(_ bytes: some Collection<UInt8>) throws -> [String: Any] {
    let object = try JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])
    return try #require(object as? [String: Any])
}

@Suite("ServerFrame encoding")
struct ServerFrameTests {
    @Test(
        "encodes every frame with the contract's field order",
        arguments: [
            (ServerFrame.welcome(conn: "c1", sub: "u1", role: "user"), #"{"type":"welcome","conn":"c1","sub":"u1","role":"user"}"#),
            (
                .joined(session: "s", head: 0, epoch: "e1", trimmedFirst: nil, reset: false),
                #"{"type":"joined","session":"s","head":0,"epoch":"e1"}"#
            ),
            (
                .joined(session: "s", head: 120, epoch: "e1", trimmedFirst: 57, reset: false),
                #"{"type":"joined","session":"s","head":120,"epoch":"e1","trimmed":true,"first":57}"#
            ),
            (
                .joined(session: "s", head: 9, epoch: "e2", trimmedFirst: nil, reset: true),
                #"{"type":"joined","session":"s","head":9,"epoch":"e2","reset":true}"#
            ),
            (
                .joined(session: "s", head: 9, epoch: "e2", trimmedFirst: 3, reset: true),
                #"{"type":"joined","session":"s","head":9,"epoch":"e2","trimmed":true,"first":3,"reset":true}"#
            ),
            (.left(session: "s"), #"{"type":"left","session":"s"}"#),
            (.ack(id: "m1", session: "s", seq: 18_446_744_073_709_551_615, duplicate: false), #"{"type":"ack","id":"m1","session":"s","seq":18446744073709551615}"#),
            (.ack(id: "m1", session: "s", seq: 4, duplicate: true), #"{"type":"ack","id":"m1","session":"s","seq":4,"duplicate":true}"#),
            (.ack(id: "m1", session: "s", seq: nil, duplicate: false), #"{"type":"ack","id":"m1","session":"s"}"#),
            (.pong(id: nil), #"{"type":"pong"}"#),
            (.pong(id: "p"), #"{"type":"pong","id":"p"}"#),
            (.error(code: .badRequest, message: "missing field 'id'", ref: nil), #"{"type":"error","code":"bad_request","message":"missing field 'id'"}"#),
            (.error(code: .unavailable, message: "x", ref: "m\"1"), #"{"type":"error","code":"unavailable","message":"x","ref":"m\"1"}"#),
        ]
    )
    func encodesFrames(_ frame: ServerFrame, _ expected: String) throws {
        #expect(text(frame) == expected)
        // And Foundation agrees it is one JSON object.
        _ = try foundationObject(frame.encoded())
    }

    @Test(
        "escapes strings correctly",
        arguments: [
            ("plain", #""plain""#),
            ("q\"b\\s/", #""q\"b\\s/""#),
            ("\u{8}\u{C}\n\r\t", #""\b\f\n\r\t""#),
            ("\u{0}\u{1}\u{1F}", #""\u0000\u0001\u001f""#),
            ("\u{7F}", "\"\u{7F}\""),
            ("a\u{2028}b\u{2029}c", #""a\u2028b\u2029c""#),
            ("é日本😀\u{2027}\u{202A}", "\"é日本😀\u{2027}\u{202A}\""),  // neighbours of U+2028/9 pass through
            ("", #""""#),
        ]
    )
    func escaping(_ value: String, _ expected: String) throws {
        #expect(text(.pong(id: value)) == #"{"type":"pong","id":\#(expected)}"#)
        // Round trip: Foundation decodes what we wrote back to the original string.
        let parsed = try foundationObject(ServerFrame.pong(id: value).encoded())
        #expect(parsed["id"] as? String == value)
    }

    @Test("encodes the event frame byte for byte")
    func eventFrame() {
        var buffer: [UInt8] = []
        let n = ServerFrame.appendEvent(
            into: &buffer, session: "s1", seq: 7, id: "m1", kind: "chat.message", sub: "u1", role: "user",
            timestampMs: 1_795_615_762_123, data: Array(#"{"t": "hi"}"#.utf8))
        let expected = #"{"type":"event","session":"s1","seq":7,"id":"m1","kind":"chat.message","from":{"sub":"u1","role":"user"},"ts":"2026-11-25T14:09:22.123Z","data":{"t": "hi"}}"#
        #expect(String(decoding: buffer, as: UTF8.self) == expected)
        #expect(n == expected.utf8.count)
    }

    @Test("ephemeral events omit seq")
    func ephemeralEvent() {
        var buffer: [UInt8] = []
        ServerFrame.appendEvent(
            into: &buffer, session: "s1", seq: nil, id: "m2", kind: "chat.delta", sub: "w", role: "agent",
            timestampMs: 0, data: Array("null".utf8))
        #expect(
            String(decoding: buffer, as: UTF8.self)
                == #"{"type":"event","session":"s1","id":"m2","kind":"chat.delta","from":{"sub":"w","role":"agent"},"ts":"1970-01-01T00:00:00.000Z","data":null}"#
        )
    }

    @Test(
        "event round trip through a decoded publish: Foundation sees the same fields, data bytes are spliced exactly",
        arguments: [
            #"{"text":"hello","n":[1,2.5,-3e2],"ok":true,"none":null}"#,
            "  {\n  \"spaced\" :\t[ 1 , 2 ]\r\n}  ",
            #""just a string with \"quotes\" and \u00e9 and \ud83d\ude00""#,
            "42",
            "null",
            #"[{"deep":[[[{"x":"y"}]]]}]"#,
        ]
    )
    func eventRoundTrip(_ data: String) throws {
        let publishText = #"{"type":"publish","session":"proj:1","id":"id \"q\" \u2028","kind":"chat.message","data":\#(data)}"#
        let frame = try decode(publishText).get()
        guard case .publish(let publish) = frame else { throw FrameError(.badRequest, "not a publish") }
        let headroom = 26
        let bytes = ServerFrame.encodeEvent(
            headroom: headroom, session: publish.session, seq: 99, id: publish.id, kind: publish.kind,
            sub: "user \u{1}\u{7F}é", role: "user", timestampMs: 1_709_210_096_789, data: publish.data)
        #expect(bytes.prefix(headroom).allSatisfy { $0 == 0 })
        let payload = Array(bytes.dropFirst(headroom))

        let parsed = try foundationObject(payload)
        #expect(parsed["type"] as? String == "event")
        #expect(parsed["session"] as? String == "proj:1")
        #expect((parsed["seq"] as? NSNumber)?.intValue == 99)
        #expect(parsed["id"] as? String == "id \"q\" \u{2028}")
        #expect(parsed["kind"] as? String == "chat.message")
        let from = try #require(parsed["from"] as? [String: Any])
        #expect(from["sub"] as? String == "user \u{1}\u{7F}é")
        #expect(from["role"] as? String == "user")
        #expect(parsed["ts"] as? String == "2024-02-29T12:34:56.789Z")
        #expect(parsed.keys.sorted() == ["data", "from", "id", "kind", "seq", "session", "ts", "type"])

        // `data` is the last member: the payload must end with the exact raw bytes, then `}`.
        let trimmed = data.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(publish.data == Array(trimmed.utf8))
        #expect(Array(payload.suffix(publish.data.count + 1)) == publish.data + [UInt8(ascii: "}")])
        let expectedData = try JSONSerialization.jsonObject(with: Data(trimmed.utf8), options: [.fragmentsAllowed])
        #expect(NSDictionary(dictionary: ["d": expectedData]).isEqual(to: ["d": parsed["data"] as Any]))
    }

    @Test("appends after existing bytes: headroom and earlier frames are kept")
    func appendKeepsPrefix() {
        var buffer = [UInt8](repeating: 0xAA, count: 26)
        let n1 = ServerFrame.pong(id: "1").append(to: &buffer)
        #expect(buffer.count == 26 + n1)
        #expect(buffer.prefix(26).allSatisfy { $0 == 0xAA })
        let n2 = ServerFrame.appendEvent(
            into: &buffer, session: "s", seq: 1, id: "i", kind: "k", sub: "u", role: "agent", timestampMs: 0,
            data: Array("{}".utf8))
        #expect(buffer.count == 26 + n1 + n2)
        #expect(String(decoding: buffer[26..<(26 + n1)], as: UTF8.self) == #"{"type":"pong","id":"1"}"#)
        #expect(String(decoding: buffer[(26 + n1)...], as: UTF8.self).hasPrefix(#"{"type":"event","session":"s","seq":1,"#))
        #expect(ServerFrame.left(session: "s").encoded(headroom: 3) == [0, 0, 0] + Array(#"{"type":"left","session":"s"}"#.utf8))
        #expect(ServerFrame.left(session: "s").encoded(headroom: -5) == Array(#"{"type":"left","session":"s"}"#.utf8))
    }

    @Test("every encoded frame decodes with the strict scanner too")
    func ownScannerAcceptsOutput() {
        let frames: [ServerFrame] = [
            .welcome(conn: "c\u{0}", sub: "\u{2028}", role: "operator"),
            .joined(session: "s", head: .max, epoch: "\"", trimmedFirst: 1, reset: true),
            .error(code: .rateLimited, message: "slow \\ down\n", ref: "r"),
        ]
        for frame in frames {
            #expect(reason(scan(bytes: frame.encoded())) == nil)
        }
    }
}
