import Testing
@testable import GatewayClient
import GatewayTesting

/// Pure tests: hashing, framing, URL and HTTP parsing. No sockets.
@Suite("Codec")
struct CodecTests {
    @Test func sha1MatchesFIPSVectors() {
        func hex(_ bytes: [UInt8]) -> String { bytes.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined() }
        #expect(hex(SHA1.hash(Array("abc".utf8))) == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(hex(SHA1.hash([])) == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        #expect(
            hex(SHA1.hash(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)))
                == "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        )
        #expect(hex(SHA1.hash([UInt8](repeating: 0x61, count: 1_000_000))) == "34aa973cd4c4daa4f61eeb2bdbad27316534016f")
    }

    @Test func acceptValueMatchesRFC6455Example() {
        #expect(WebSocketClient.acceptValue(forKey: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    @Test func encodesRFC6455Examples() {
        let hello = WebSocketFrame(opcode: .text, payload: Array("Hello".utf8))
        #expect(hello.encoded(maskKey: nil) == [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f])
        #expect(
            hello.encoded(maskKey: [0x37, 0xfa, 0x21, 0x3d])
                == [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        )
        let first = WebSocketFrame(opcode: .text, payload: Array("Hel".utf8), fin: false)
        #expect(first.encoded(maskKey: nil) == [0x01, 0x03, 0x48, 0x65, 0x6c])
    }

    @Test(arguments: [0, 1, 125, 126, 127, 65535, 65536, 200_000])
    func roundTripsLengths(_ length: Int) throws {
        let payload = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let frame = WebSocketFrame(opcode: .binary, payload: payload)
        for (masked, key) in [(false, nil), (true, WebSocketClient.randomMaskKey())] as [(Bool, [UInt8]?)] {
            let wire = frame.encoded(maskKey: key)
            let decoder = WebSocketFrameDecoder(expectMasked: masked, maxPayload: 1 << 20)
            #expect(try decoder.decode(wire[...]) == .frame(frame, consumed: wire.count))
            // Every strict prefix is "need more", never an error or a trap.
            for cut in [0, 1, 2, min(wire.count - 1, 9), wire.count - 1] where cut < wire.count {
                #expect(try decoder.decode(wire[0..<cut]) == .needMore)
            }
        }
    }

    @Test func decodesFromSliceWithNonZeroStartIndex() throws {
        let wire = [0xAA, 0xBB] + WebSocketFrame(opcode: .text, payload: [0x41]).encoded(maskKey: nil)
        let decoder = WebSocketFrameDecoder(expectMasked: false, maxPayload: 100)
        #expect(try decoder.decode(wire[2...]) == .frame(WebSocketFrame(opcode: .text, payload: [0x41]), consumed: 3))
    }

    @Test(arguments: [
        ("masked frame from server", [0x81, 0x80, 1, 2, 3, 4] as [UInt8]),
        ("RSV1 without extension", [0xC1, 0x00]),
        ("reserved opcode 3", [0x83, 0x00]),
        ("reserved control opcode 0xB", [0x8B, 0x00]),
        ("fragmented ping", [0x09, 0x00]),
        ("ping longer than 125", [0x89, 0x7E, 0x00, 0x7E] + [UInt8](repeating: 0, count: 126)),
        ("64-bit length with top bit", [0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 1]),
    ])
    func rejectsInvalidFrames(_ name: String, _ wire: [UInt8]) {
        let decoder = WebSocketFrameDecoder(expectMasked: false, maxPayload: 1 << 20)
        #expect(throws: GatewayClientError.protocolViolation(), "\(name)") { try decoder.decode(wire[...]) }
    }

    @Test func rejectsFrameOverLimitFromHeaderAlone() {
        let decoder = WebSocketFrameDecoder(expectMasked: false, maxPayload: 1000)
        // Only the header of a 1 GiB frame: refused before any payload is buffered.
        #expect(throws: GatewayClientError.frameTooLarge()) {
            try decoder.decode([0x82, 0x7F, 0, 0, 0, 0, 0x40, 0, 0, 0][...])
        }
    }

    @Test func parsesURLs() throws {
        let plain = try WebSocketURL(parsing: "ws://127.0.0.1:8080/v1/ws")
        #expect(plain == WebSocketURL(secure: false, host: "127.0.0.1", port: 8080, path: "/v1/ws"))
        #expect(plain.hostHeader == "127.0.0.1:8080")
        let v6 = try WebSocketURL(parsing: "wss://[::1]:8443/path?token=a")
        #expect(v6 == WebSocketURL(secure: true, host: "::1", port: 8443, path: "/path?token=a"))
        #expect(v6.hostHeader == "[::1]:8443")
        let defaults = try WebSocketURL(parsing: "wss://localhost")
        #expect(defaults.port == 443 && defaults.path == "/" && defaults.hostHeader == "localhost")
        #expect(try WebSocketURL(parsing: "ws://h?x=1").path == "/?x=1")
    }

    @Test(arguments: [
        "http://127.0.0.1/", "ws://", "ws://:80/", "ws://host:0/", "ws://host:65536/", "ws://host:12a/",
        "ws://[::1/", "ws://[::1]x/", "ws://u@host/", "ws://host/a#b", "ws://host/a b", "ws://host:/",
    ])
    func rejectsBadURLs(_ text: String) {
        #expect(throws: GatewayClientError.invalidURL()) { try WebSocketURL(parsing: text) }
    }

    @Test func parsesResponseHeads() throws {
        let head = try HTTPResponseReader.parseHead(
            Array("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nX-A: 1\r\nx-a: 2\r\nbroken line\r\n".utf8)
        )
        #expect(head.status == 429)
        #expect(head.headers["retry-after"] == "3")
        #expect(head.headers["x-a"] == "1, 2")
        #expect(throws: GatewayClientError.protocolViolation()) {
            try HTTPResponseReader.parseHead(Array("SSH-2.0-OpenSSH\r\n".utf8))
        }
        #expect(HTTPResponseReader.findHeadEnd(Array("a\r\n\r\nb".utf8), from: 0)! == (1, 4))
        #expect(HTTPResponseReader.findHeadEnd(Array("a\n\nb".utf8), from: 0)! == (1, 2))
        #expect(HTTPResponseReader.findHeadEnd(Array("a\r\n".utf8), from: 0) == nil)
    }

    @Test func parsesListeningLines() {
        #expect(ProcessRunner.listeningPort(in: "info: listening on 127.0.0.1 port=8443") == 8443)
        #expect(ProcessRunner.listeningPort(in: #"{"msg":"Listening","port":12345}"#) == 12345)
        #expect(ProcessRunner.listeningPort(in: "gateway listening, port: 9") == 9)
        #expect(ProcessRunner.listeningPort(in: "listening port=99999") == nil)
        #expect(ProcessRunner.listeningPort(in: "connected port=80") == nil)
        #expect(ProcessRunner.listeningPort(in: "listening on transport port=") == nil)
    }

    @Test func errorsCompareByCode() {
        let error = GatewayClientError.handshakeFailed(status: 401, body: Array("no".utf8))
        #expect(error == .handshakeFailed())
        #expect(error != .timeout())
        #expect(error.httpStatus == 401 && error.httpBodyString == "no")
        #expect(error.description.contains("status: 401"))
    }
}
