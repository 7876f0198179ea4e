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

    /// Records (does not assert) how lws reacts to client-side violations; the gateway's own policy is asserted in
    /// the integration tests.
    @Test func reportsServerReactionToViolations() throws {
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
                let (code, reason) = try client.waitForClose(timeout: .seconds(2))
                print("lws reaction to \(name): close \(code.map(String.init) ?? "none") \(reason)")
            } catch {
                print("lws reaction to \(name): \(error)")
            }
        }
    }

    /// Records whether the server refuses a client that offers only `h2` over ALPN.
    @Test func reportsReactionToH2OnlyALPN() throws {
        guard var options = tls else { return }
        options.alpn = ["h2"]
        do {
            let client = try WebSocketClient.connect(url: url, tls: options)
            print("lws accepted an h2-only ALPN offer; selected: \(client.negotiatedALPN ?? "none")")
            client.close()
        } catch {
            print("lws refused an h2-only ALPN offer: \(error)")
        }
    }
}
