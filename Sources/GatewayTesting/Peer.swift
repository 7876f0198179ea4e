import Foundation
import GatewayAuth
import GatewayClient

/// A connected test client speaking the gateway's JSON frames: hello/welcome, join, publish, receive.
public final class Peer: @unchecked Sendable {
    /// The WebSocket underneath (raw frames, close handshake).
    public let ws: WebSocketClient

    /// Wraps a connected WebSocket (no hello sent).
    public init(_ ws: WebSocketClient) { self.ws = ws }

    /// Connects, sends hello with `token` and waits for welcome, which must be the first frame.
    /// - Parameters:
    ///   - url: `ws://` or `wss://` URL of `/v1/ws`.
    ///   - token: The hello token.
    ///   - tls: TLS options for `wss://`.
    ///   - options: Client options (receive buffer, limits).
    ///   - timeout: Bound for the connect and for the welcome.
    /// - Throws: `GatewayClientError` (`.unexpectedMessage` when anything but welcome arrives first).
    public static func connect(
        url: String, token: String, tls: TLSOptions? = nil, options: WebSocketClientOptions = WebSocketClientOptions(),
        timeout: Duration = .seconds(5)
    ) throws -> Peer {
        let peer = Peer(try WebSocketClient.connect(url: url, tls: tls, options: options, timeout: timeout))
        do {
            try peer.send(["type": "hello", "token": token])
            let welcome = try peer.next(timeout: timeout)
            guard welcome.string("type") == "welcome" else {
                throw GatewayClientError.unexpectedMessage("expected welcome, got \(welcome)")
            }
            return peer
        } catch {
            peer.close()
            throw error
        }
    }

    /// Connects to `ws://127.0.0.1:<port>/v1/ws` with a fresh token for `role`/`sub`/`sessions` (``TestTokens``),
    /// sends hello and waits for welcome.
    public static func connect(
        port: Int, role: Role, sub: String, sessions: [String] = [], secret: String = GatewayEnvironment.secret
    ) async throws -> Peer {
        let token = try await TestTokens.mint(role, sub: sub, sessions: sessions, secret: secret)
        return try connect(url: "ws://127.0.0.1:\(port)/v1/ws", token: token)
    }

    /// Sends a JSON object (keys sorted).
    public func send(_ object: [String: Any]) throws {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        try ws.sendText(String(decoding: data, as: UTF8.self))
    }

    /// Sends a text frame as it is.
    public func sendRaw(_ text: String) throws { try ws.sendText(text) }

    /// The next JSON frame (skipping WebSocket pings/pongs).
    /// - Throws: `.timeout` when nothing arrives in time, `.unexpectedMessage` on a close or a non-object.
    public func next(timeout: Duration = .seconds(5)) throws -> [String: Any] {
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

    /// The next frame of the given type; frames of other types before it are dropped.
    public func next(type: String, timeout: Duration = .seconds(5)) throws -> [String: Any] {
        let deadline = ContinuousClock.now + timeout
        while true {
            let f = try next(timeout: max(.milliseconds(1), deadline - ContinuousClock.now))
            if f["type"] as? String == type { return f }
        }
    }

    /// The first frame that arrives within `window`, or `nil` when none does (callers expect `nil`).
    public func expectSilence(for window: Duration = .milliseconds(300)) throws -> [String: Any]? {
        do {
            return try next(timeout: window)
        } catch let e as GatewayClientError where e.isTimeout {
            return nil
        }
    }

    /// Joins `session` and returns the `joined` frame.
    public func join(_ session: String, since: Int? = nil, epoch: String? = nil) throws -> [String: Any] {
        var f: [String: Any] = ["type": "join", "session": session]
        if let since { f["since"] = since }
        if let epoch { f["epoch"] = epoch }
        try send(f)
        return try next(type: "joined")
    }

    /// Publishes and returns the ack or error (skipping events that arrive first).
    @discardableResult
    public func publish(
        _ session: String, id: String, kind: String = "chat.message", data: Any = ["text": "hi"], ephemeral: Bool? = nil
    ) throws -> [String: Any] {
        var f: [String: Any] = ["type": "publish", "session": session, "id": id, "kind": kind, "data": data]
        if let ephemeral { f["ephemeral"] = ephemeral }
        try send(f)
        while true {
            let r = try next()
            if r["type"] as? String == "ack" || r["type"] as? String == "error" { return r }
        }
    }

    /// Waits for the server's close frame and returns its code.
    public func waitClose(timeout: Duration = .seconds(8)) throws -> UInt16? {
        try ws.waitForClose(timeout: timeout).code
    }

    /// Closes the connection without a handshake.
    public func close() { ws.close() }
}

extension Dictionary where Key == String, Value == Any {
    /// The value at `key` as an integer (JSON numbers arrive as `NSNumber`).
    public func int(_ key: String) -> Int? { (self[key] as? NSNumber)?.intValue }
    /// The value at `key` as a string.
    public func string(_ key: String) -> String? { self[key] as? String }
}
