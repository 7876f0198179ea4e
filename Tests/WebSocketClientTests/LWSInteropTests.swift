import Foundation
import Testing
import GatewayClient
import GatewayTesting

/// Opt-in interop check against a real libwebsockets echo server (for example
/// /work/shared/tools/autobahn/lws-echo-server.c built by hand). Skipped unless `WSCLIENT_LWS_ECHO_URL` is set
/// (`ws://127.0.0.1:9002/` or `wss://127.0.0.1:9443/`); for wss also set `WSCLIENT_LWS_ECHO_CA` to the server's
/// certificate. Nothing here is built or started by the package.
@Suite("LWSInterop", .enabled(if: ProcessInfo.processInfo.environment["WSCLIENT_LWS_ECHO_URL"] != nil))
struct LWSInteropTests {
    let url = ProcessInfo.processInfo.environment["WSCLIENT_LWS_ECHO_URL"] ?? ""
    var tls: TLSOptions? {
        guard url.hasPrefix("wss") else { return nil }
        return .verifying(caFile: ProcessInfo.processInfo.environment["WSCLIENT_LWS_ECHO_CA"] ?? "", alpn: ["http/1.1"])
    }

    @Test func echoesAllMessageShapes() throws {
        let client = try WebSocketClient.connect(url: url, tls: tls)
        defer { client.close() }
        if tls != nil { #expect(client.negotiatedALPN == "http/1.1") }
        try client.sendText("hello lws")
        #expect(try client.receiveText() == "hello lws")
        let big = String(repeating: "0123456789", count: 20_000)
        try client.sendText(big)
        #expect(try client.receiveText(timeout: .seconds(10)) == big)
        try client.sendFragmented(text: Array("fragmented message".utf8), fragmentSize: 4)
        #expect(try client.receiveText() == "fragmented message")
        try client.sendBinary([0, 255, 1])
        #expect(try client.receive() == .binary([0, 255, 1]))
        try client.sendPing([42])
        #expect(try client.receive() == .pong([42]))
        try client.sendClose(code: 1000, reason: "done")
        #expect(try client.waitForClose().code == 1000)
    }

    /// A client-side violation fails the connection: lws answers with a close frame (or ends TCP) within 2 s and
    /// never echoes the offending message. (The gateway's own policy, with exact close codes, is asserted in the
    /// integration tests.)
    @Test func failsTheConnectionOnClientViolations() throws {
        let cases: [(String, (WebSocketClient) throws -> Void)] = [
            ("unmasked frame", { try $0.sendFrame(opcode: .text, payload: Array("x".utf8), masked: false) }),
            ("invalid UTF-8", { try $0.sendText(bytes: [0xC3, 0x28]) }),
            ("reserved opcode", { try $0.sendFrame(opcode: WebSocketOpcode(rawValue: 3), payload: []) }),
        ]
        for (name, action) in cases {
            let client = try WebSocketClient.connect(url: url, tls: tls)
            defer { client.close() }
            try action(client)
            do {
                let reply = try client.receive(timeout: .seconds(2))
                guard case .close = reply else {
                    Issue.record("lws answered a \(name) with \(reply) instead of failing the connection")
                    continue
                }
            } catch let error as GatewayClientError where error.isClosed || error.isProtocolViolation {
                // TCP ended (or the server's close arrived as a failed frame): the connection failed.
            }
        }
    }

    /// lws (ALPN `http/1.1`, as the reference echo server is started) never selects `h2` for a client that offers
    /// only `h2`: it refuses the TLS handshake, or it completes it without ALPN and the WebSocket works.
    @Test(.enabled(if: Self.secure, "needs a wss:// WSCLIENT_LWS_ECHO_URL"))
    func neverSelectsH2ForAnH2OnlyOffer() throws {
        var options = try #require(tls)
        options.alpn = ["h2"]
        let client: WebSocketClient
        do {
            client = try WebSocketClient.connect(url: url, tls: options)
        } catch let error as GatewayClientError where error.isTLSFailure || error.isHandshakeFailure {
            return  // refused: no h2
        }
        defer { client.close() }
        #expect(client.negotiatedALPN == nil, "selected \(client.negotiatedALPN ?? "none") for an h2-only offer")
        try client.sendText("still http/1.1")
        #expect(try client.receiveText() == "still http/1.1")
    }

    static var secure: Bool { ProcessInfo.processInfo.environment["WSCLIENT_LWS_ECHO_URL"]?.hasPrefix("wss") == true }
}
