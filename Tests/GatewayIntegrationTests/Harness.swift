import Foundation
import GatewayAuth
import GatewayConfig
import GatewayCore
import GatewayClient
import GatewayTesting
import Logging
import Testing

/// A real gateway on an ephemeral loopback port with a temporary data directory, in this process.
final class TestGateway: @unchecked Sendable {
    let server: GatewayServer
    let port: Int
    let dataDir: String
    let secret: String
    let tls: Bool
    private let ownsDir: Bool

    static let secretForTests = "integration-test-secret-" + UUID().uuidString

    /// Starts a gateway. `settings` are dotted configuration keys (see Config/README.md), applied as overrides.
    static func start(
        dataDir: String? = nil, settings: [String: String] = [:], tlsDir: String? = nil
    ) async throws -> TestGateway {
        let dir = dataDir ?? TestDirs.make("gw")
        var env = [
            "GATEWAY_AUTH_HS256_SECRET": secretForTests,
            "GATEWAY_LISTEN_HOST": "127.0.0.1",
            "GATEWAY_LISTEN_PORT": "0",
            "GATEWAY_DATA_DIR": dir,
            "GATEWAY_FSYNC": "always",
        ]
        if let tlsDir {
            env["GATEWAY_TLS_CERT"] = tlsDir + "/cert.pem"
            env["GATEWAY_TLS_KEY"] = tlsDir + "/key.pem"
        }
        // In-process gateways use lws's poll loop: libev allows a signal watcher (lws adds one for SIGINT) on only
        // one loop per process, and these tests run many gateways at once. The child-process tests
        // (ProcessTests) run the default libev loop.
        var settings = settings
        if settings["server.event_loop"] == nil { settings["server.event_loop"] = "poll" }
        let config = try await GatewayConfiguration.load(configFile: nil, environment: env, overrides: settings)
        var logger = Logger(label: "test-gateway")
        logger.logLevel = .warning
        let server = try await GatewayServer(configuration: config, logger: logger)
        let bound = try server.start()
        return TestGateway(server: server, port: bound[0].port, dataDir: dir, secret: secretForTests, tls: tlsDir != nil, ownsDir: dataDir == nil)
    }

    private init(server: GatewayServer, port: Int, dataDir: String, secret: String, tls: Bool, ownsDir: Bool) {
        self.server = server
        self.port = port
        self.dataDir = dataDir
        self.secret = secret
        self.tls = tls
        self.ownsDir = ownsDir
    }

    var url: String { "\(tls ? "wss" : "ws")://127.0.0.1:\(port)/v1/ws" }

    func stop() async {
        server.beginShutdown()
        await server.stoppedAsync()
    }

    func stopAndRemove() async {
        await stop()
        if ownsDir { try? FileManager.default.removeItem(atPath: dataDir) }
    }

    func token(_ role: Role, sub: String, sessions: [String] = [], tier: String? = nil, ttl: Int = 3600) async throws -> String {
        try await TokenMinter.hs256(secret: secret, sub: sub, role: role, sessions: sessions, tier: tier, ttlSeconds: ttl)
    }

    /// Connects, sends hello with a token and waits for welcome.
    func client(_ role: Role, sub: String, sessions: [String] = [], tlsOptions: TLSOptions? = nil, tier: String? = nil) async throws -> Peer {
        let token = try await token(role, sub: sub, sessions: sessions, tier: tier)
        let ws = try WebSocketClient.connect(url: url, tls: tlsOptions)
        let peer = Peer(ws)
        try peer.send(["type": "hello", "token": token])
        let welcome = try peer.next()
        #expect(welcome["type"] as? String == "welcome", "expected welcome, got \(welcome)")
        return peer
    }
}

/// A WebSocket client speaking JSON frames.
final class Peer: @unchecked Sendable {
    let ws: WebSocketClient
    init(_ ws: WebSocketClient) { self.ws = ws }

    func send(_ object: [String: Any]) throws {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        try ws.sendText(String(decoding: data, as: UTF8.self))
    }

    func sendRaw(_ text: String) throws { try ws.sendText(text) }

    /// The next JSON frame (skipping WebSocket pings/pongs).
    func next(timeout: Duration = .seconds(5)) throws -> [String: Any] {
        let deadline = ContinuousClock.now + timeout
        while true {
            let left = deadline - ContinuousClock.now
            guard left > .zero else { throw GatewayClientError.timeout("no frame") }
            switch try ws.receive(timeout: left) {
            case .text(let s):
                guard let obj = try JSONSerialization.jsonObject(with: Data(s.utf8)) as? [String: Any] else {
                    throw GatewayClientError.unexpectedMessage("not a JSON object: \(s)")
                }
                return obj
            case .close(let code, let reason):
                throw GatewayClientError.unexpectedMessage("closed \(code.map(String.init) ?? "-") \(reason)")
            default:
                continue
            }
        }
    }

    /// The next frame of the given type; other frames in between are returned in `skipped`.
    func next(type: String, timeout: Duration = .seconds(5)) throws -> [String: Any] {
        let deadline = ContinuousClock.now + timeout
        while true {
            let f = try next(timeout: max(.milliseconds(1), deadline - ContinuousClock.now))
            if f["type"] as? String == type { return f }
        }
    }

    /// Asserts that nothing arrives within `window`.
    func expectSilence(for window: Duration = .milliseconds(300)) throws -> [String: Any]? {
        do {
            return try next(timeout: window)
        } catch let e as GatewayClientError where e.isTimeout {
            return nil
        }
    }

    func join(_ session: String, since: Int? = nil, epoch: String? = nil) throws -> [String: Any] {
        var f: [String: Any] = ["type": "join", "session": session]
        if let since { f["since"] = since }
        if let epoch { f["epoch"] = epoch }
        try send(f)
        return try next(type: "joined")
    }

    /// Publishes and returns the ack (skipping events that arrive first).
    @discardableResult
    func publish(_ session: String, id: String, kind: String = "chat.message", data: Any = ["text": "hi"], ephemeral: Bool? = nil) throws -> [String: Any] {
        var f: [String: Any] = ["type": "publish", "session": session, "id": id, "kind": kind, "data": data]
        if let ephemeral { f["ephemeral"] = ephemeral }
        try send(f)
        while true {
            let r = try next()
            if r["type"] as? String == "ack" || r["type"] as? String == "error" { return r }
        }
    }

    func waitClose(timeout: Duration = .seconds(8)) throws -> UInt16? {
        try ws.waitForClose(timeout: timeout).code
    }

    func close() { ws.close() }
}

enum TestDirs {
    static func make(_ prefix: String) -> String {
        let path = NSTemporaryDirectory() + "\(prefix)-\(UUID().uuidString.prefix(8))"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }
}

extension Dictionary where Key == String, Value == Any {
    func int(_ key: String) -> Int? { (self[key] as? NSNumber)?.intValue }
    func string(_ key: String) -> String? { self[key] as? String }
}
