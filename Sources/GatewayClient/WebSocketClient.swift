import Foundation
import Synchronization

/// A blocking RFC 6455 client over POSIX sockets (optionally TLS via OpenSSL) for tests, the operator CLI and tools.
///
/// Every call is bounded by a timeout, every buffer by a limit, and nothing the server sends can trap. Frames are
/// masked with fresh random keys. The client never reads in the background: data waits in the kernel until
/// `receive` is called, which is what slow-consumer tests rely on.
///
/// `@unchecked Sendable` invariant: all mutable state lives in two `Mutex`es. `receiveState` is held for a whole
/// `receive` call (one reader at a time); `sendState` is held for each whole frame write (frames never
/// interleave). Lock order is always receive → send (automatic pongs and close replies are written from inside
/// `receive`). `close()` calls `shutdown(2)` first, which wakes any blocked `poll`, then takes both locks before
/// releasing the socket, so the fd is never closed under a running read or write. The remaining stored
/// properties are immutable after `init`.
public final class WebSocketClient: @unchecked Sendable {
    /// One complete message (fragments reassembled) or control frame from the server.
    public enum Message: Sendable, Hashable {
        /// A text message (validated UTF-8).
        case text(String)
        /// A binary message.
        case binary([UInt8])
        /// A ping (already answered when `autoPong` is on).
        case ping([UInt8])
        /// A pong.
        case pong([UInt8])
        /// The server's close frame; `code` is `nil` for an empty close payload.
        case close(code: UInt16?, reason: String)

        /// Kind and size for diagnostics (never the content).
        var summary: String {
            switch self {
            case .text(let text): "text(\(text.utf8.count) bytes)"
            case .binary(let bytes): "binary(\(bytes.count) bytes)"
            case .ping(let bytes): "ping(\(bytes.count) bytes)"
            case .pong(let bytes): "pong(\(bytes.count) bytes)"
            case .close(let code, _): "close(\(code.map(String.init) ?? "no code"))"
            }
        }
    }

    /// RFC 6455 §1.3 GUID appended to the key before hashing.
    static let acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    /// Receive-side state; owned by `receiveState`.
    struct ReceiveState {
        /// Bytes from the socket; `buffer[readIndex...]` is unparsed (bounded by one frame plus one read chunk).
        var buffer: [UInt8] = []
        /// Start of the unparsed bytes; parsed frames are dropped in one move before the next read, not per frame.
        var readIndex = 0
        /// Opcode of the fragmented message in progress.
        var fragmentOpcode: WebSocketOpcode?
        /// Payload of the fragmented message in progress.
        var fragments: [UInt8] = []
        /// Set once the connection has ended; thrown by every later `receive`.
        var ended: GatewayClientError?
    }

    /// Send-side state; owned by `sendState`.
    struct SendState {
        /// A close frame has been written.
        var closeSent = false
        /// A write timed out mid-frame, so the stream is no longer frame-aligned.
        var broken = false
    }

    /// The URL this client connected to.
    public let url: WebSocketURL
    /// Options in effect.
    public let options: WebSocketClientOptions
    /// Headers of the server's 101 response, names lowercased (e.g. `sec-websocket-protocol`).
    public let handshakeHeaders: [String: String]
    /// ALPN protocol the TLS server selected, or `nil` (plain TCP or no ALPN).
    public let negotiatedALPN: String?
    /// Local TCP port of the connection (useful to find it in server logs).
    public let localPort: Int?

    private let stream: SocketStream
    private let decoder: WebSocketFrameDecoder
    private let receiveState: Mutex<ReceiveState>
    private let sendState = Mutex(SendState())
    private let closed = Atomic<Bool>(false)

    private init(
        url: WebSocketURL, options: WebSocketClientOptions, stream: SocketStream, headers: [String: String],
        leftover: [UInt8]
    ) {
        self.url = url
        self.options = options
        self.stream = stream
        self.handshakeHeaders = headers
        self.negotiatedALPN = stream.negotiatedALPN
        self.localPort = stream.localPort
        self.decoder = WebSocketFrameDecoder(expectMasked: false, maxPayload: options.maxFrameSize)
        self.receiveState = Mutex(ReceiveState(buffer: leftover))
    }

    deinit {
        // No other reference exists, so no read or write can be running.
        stream.release()
    }

    // MARK: - Connect

    /// Connects and performs the HTTP/1.1 upgrade.
    /// - Parameters:
    ///   - url: `ws://host:port/path` or `wss://…`; IPv6 literals in brackets.
    ///   - headers: Extra request headers; a name that matches a default header (`Host`, `Upgrade`, `Connection`,
    ///     `Sec-WebSocket-Key`, `Sec-WebSocket-Version`) replaces it, so tests can send hostile variants.
    ///   - tls: TLS settings for `wss://` (default: verify against the system store); must be `nil` for `ws://`.
    ///   - options: Limits and behaviour.
    ///   - timeout: Bound for connect, TLS handshake and upgrade together.
    /// - Returns: A connected client.
    /// - Throws: `GatewayClientError`: `.handshakeFailed` with `httpStatus`/`httpBody` on a non-101 reply
    ///   (or a 101 with a wrong `Sec-WebSocket-Accept`), `.timeout`, `.connectFailed`, `.tlsFailed`, `.invalidURL`,
    ///   `.closed` if the server hung up without answering.
    public static func connect(
        url: String, headers: [(String, String)] = [], tls: TLSOptions? = nil,
        options: WebSocketClientOptions = .init(), timeout: Duration = .seconds(5)
    ) throws -> WebSocketClient {
        try connect(to: WebSocketURL(parsing: url), headers: headers, tls: tls, options: options, timeout: timeout)
    }

    /// Connects to a parsed URL; see `connect(url:headers:tls:options:timeout:)`.
    /// - Parameters:
    ///   - url: Parsed URL.
    ///   - headers: Extra or replacement request headers.
    ///   - tls: TLS settings for `wss://`.
    ///   - options: Limits and behaviour.
    ///   - timeout: Bound for the whole connect.
    /// - Throws: As `connect(url:headers:tls:options:timeout:)`.
    public static func connect(
        to url: WebSocketURL, headers: [(String, String)] = [], tls: TLSOptions? = nil,
        options: WebSocketClientOptions = .init(), timeout: Duration = .seconds(5)
    ) throws -> WebSocketClient {
        guard url.secure || tls == nil else {
            throw GatewayClientError.invalidArgument("TLS options given for a ws:// URL")
        }
        let deadline = Deadline.after(timeout)
        let stream = try openStream(
            host: url.host, port: url.port, tls: url.secure ? (tls ?? TLSOptions()) : nil,
            receiveBufferSize: options.receiveBufferSize, sendBufferSize: options.sendBufferSize, deadline: deadline
        )

        var keyBytes = [UInt8](repeating: 0, count: 16)
        var rng = SystemRandomNumberGenerator()
        for i in keyBytes.indices { keyBytes[i] = rng.next() }
        let key = Data(keyBytes).base64EncodedString()

        var fields: [(String, String)] = [
            ("Host", url.hostHeader),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key),
            ("Sec-WebSocket-Version", "13"),
        ]
        let overridden = Set(headers.map { $0.0.lowercased() })
        fields.removeAll { overridden.contains($0.0.lowercased()) }
        fields.append(contentsOf: headers)
        var request = "GET \(url.path) HTTP/1.1\r\n"
        for (name, value) in fields { request += "\(name): \(value)\r\n" }
        request += "\r\n"
        try stream.write(Array(request.utf8), deadline: deadline)

        var reader = HTTPResponseReader(
            maxHeadBytes: options.maxHandshakeHeadSize, maxBodyBytes: options.maxHandshakeBodySize
        )
        let head = try reader.readHead(from: stream, deadline: deadline)
        guard head.status == 101 else {
            var body: [UInt8] = []
            do {
                body = try reader.readBody(for: head, from: stream, deadline: deadline).body
            } catch {
                body = reader.buffer  // whatever arrived; the status is what the caller needs
            }
            throw GatewayClientError.handshakeFailed(
                status: head.status, headers: head.headers, body: body, detail: "upgrade refused"
            )
        }
        let expectedAccept = Self.acceptValue(forKey: key)
        guard head.headers["upgrade"]?.lowercased() == "websocket" else {
            throw GatewayClientError.handshakeFailed(status: 101, headers: head.headers, detail: "Upgrade is not websocket")
        }
        guard let connection = head.headers["connection"],
            connection.lowercased().split(separator: ",").contains(where: { $0.trimmingASCIISpaces() == "upgrade" })
        else {
            throw GatewayClientError.handshakeFailed(status: 101, headers: head.headers, detail: "Connection lacks upgrade")
        }
        guard head.headers["sec-websocket-accept"] == expectedAccept else {
            throw GatewayClientError.handshakeFailed(
                status: 101, headers: head.headers, detail: "Sec-WebSocket-Accept mismatch"
            )
        }
        return WebSocketClient(
            url: url, options: options, stream: stream, headers: head.headers, leftover: reader.buffer
        )
    }

    /// Opens a TCP (and optionally TLS) stream; shared with `RawHTTP`.
    static func openStream(
        host: String, port: Int, tls: TLSOptions?, receiveBufferSize: Int? = nil, sendBufferSize: Int? = nil,
        deadline: ContinuousClock.Instant
    ) throws -> SocketStream {
        let fd = try SocketAddress.connect(
            host: host, port: port, receiveBufferSize: receiveBufferSize, sendBufferSize: sendBufferSize,
            deadline: deadline
        )
        guard let tls else { return try SocketStream(fd: fd, tls: nil, deadline: deadline) }
        let context: TLSContext
        do {
            context = try TLSContext(client: tls)
        } catch {
            _ = Glibc.close(fd)
            throw error
        }
        return try SocketStream(fd: fd, tls: context, host: host, options: tls, deadline: deadline)
    }

    /// `Sec-WebSocket-Accept` for a key: base64(SHA-1(key + GUID)) (RFC 6455 §4.2.2).
    /// - Parameters:
    ///   - key: The `Sec-WebSocket-Key` value.
    public static func acceptValue(forKey key: String) -> String {
        Data(SHA1.hash(Array((key + acceptGUID).utf8))).base64EncodedString()
    }

    // MARK: - Send

    /// Sends one text frame.
    /// - Parameters:
    ///   - text: Message text.
    ///   - timeout: Write deadline (default `options.writeTimeout`).
    /// - Throws: `.closed`, `.timeout`, `.ioFailed`, `.tlsFailed`.
    public func sendText(_ text: String, timeout: Duration? = nil) throws {
        try sendFrame(opcode: .text, payload: Array(text.utf8), timeout: timeout)
    }

    /// Sends one text frame with arbitrary bytes (no UTF-8 check, so tests can send invalid UTF-8).
    /// - Parameters:
    ///   - bytes: Payload.
    ///   - timeout: Write deadline (default `options.writeTimeout`).
    /// - Throws: As `sendText(_:timeout:)`.
    public func sendText(bytes: [UInt8], timeout: Duration? = nil) throws {
        try sendFrame(opcode: .text, payload: bytes, timeout: timeout)
    }

    /// Sends one binary frame.
    /// - Parameters:
    ///   - bytes: Payload.
    ///   - timeout: Write deadline (default `options.writeTimeout`).
    /// - Throws: As `sendText(_:timeout:)`.
    public func sendBinary(_ bytes: [UInt8], timeout: Duration? = nil) throws {
        try sendFrame(opcode: .binary, payload: bytes, timeout: timeout)
    }

    /// Sends a ping (no length check, so tests can send an oversized one).
    /// - Parameters:
    ///   - payload: Ping payload (RFC limit 125 bytes).
    ///   - timeout: Write deadline (default `options.writeTimeout`).
    /// - Throws: As `sendText(_:timeout:)`.
    public func sendPing(_ payload: [UInt8] = [], timeout: Duration? = nil) throws {
        try sendFrame(opcode: .ping, payload: payload, timeout: timeout)
    }

    /// Sends an unsolicited pong.
    /// - Parameters:
    ///   - payload: Pong payload.
    ///   - timeout: Write deadline (default `options.writeTimeout`).
    /// - Throws: As `sendText(_:timeout:)`.
    public func sendPong(_ payload: [UInt8] = [], timeout: Duration? = nil) throws {
        try sendFrame(opcode: .pong, payload: payload, timeout: timeout)
    }

    /// Sends a close frame (no validation of the code, so tests can send 1005 or 999).
    /// - Parameters:
    ///   - code: Close code, or `nil` for an empty close payload.
    ///   - reason: Close reason (ignored when `code` is `nil`).
    ///   - timeout: Write deadline (default `options.writeTimeout`).
    /// - Throws: As `sendText(_:timeout:)`.
    public func sendClose(code: UInt16? = 1000, reason: String = "", timeout: Duration? = nil) throws {
        try sendFrame(opcode: .close, payload: Self.closePayload(code: code, reason: reason), timeout: timeout)
    }

    /// Sends one message as a first frame plus continuation frames of at most `fragmentSize` bytes each.
    /// - Parameters:
    ///   - bytes: Whole message payload (no UTF-8 check).
    ///   - opcode: Opcode of the first frame (`.text` or `.binary`).
    ///   - fragmentSize: Payload bytes per frame (≥ 1).
    ///   - timeout: Write deadline for all frames (default `options.writeTimeout`).
    /// - Throws: `.invalidArgument` for `fragmentSize < 1`, otherwise as `sendText(_:timeout:)`.
    public func sendFragmented(
        _ bytes: [UInt8], opcode: WebSocketOpcode = .text, fragmentSize: Int, timeout: Duration? = nil
    ) throws {
        guard fragmentSize >= 1 else { throw GatewayClientError.invalidArgument("fragmentSize must be >= 1") }
        var wire: [UInt8] = []
        var offset = 0
        repeat {
            let end = min(bytes.count, offset + fragmentSize)
            let frame = WebSocketFrame(
                opcode: offset == 0 ? opcode : .continuation, payload: Array(bytes[offset..<end]), fin: end == bytes.count
            )
            wire.append(contentsOf: frame.encoded(maskKey: Self.randomMaskKey()))
            offset = end
        } while offset < bytes.count
        try writeWire(wire, timeout: timeout, isClose: false)
    }

    /// Sends a text message in fragments; shorthand for `sendFragmented(_:opcode:fragmentSize:timeout:)`.
    /// - Parameters:
    ///   - text: Whole message payload (no UTF-8 check).
    ///   - fragmentSize: Payload bytes per frame (≥ 1).
    ///   - timeout: Write deadline (default `options.writeTimeout`).
    /// - Throws: As `sendFragmented(_:opcode:fragmentSize:timeout:)`.
    public func sendFragmented(text: [UInt8], fragmentSize: Int, timeout: Duration? = nil) throws {
        try sendFragmented(text, opcode: .text, fragmentSize: fragmentSize, timeout: timeout)
    }

    /// Sends any single frame, including protocol violations (reserved opcodes, RSV bits, unmasked frames).
    /// - Parameters:
    ///   - opcode: Opcode (any 4-bit value).
    ///   - payload: Unmasked payload.
    ///   - fin: FIN bit.
    ///   - rsv: RSV bits in the low three bits.
    ///   - masked: Mask the frame with a random key (clients must; `false` lets tests check the server refuses).
    ///   - timeout: Write deadline (default `options.writeTimeout`).
    /// - Throws: As `sendText(_:timeout:)`.
    public func sendFrame(
        opcode: WebSocketOpcode, payload: [UInt8], fin: Bool = true, rsv: UInt8 = 0, masked: Bool = true,
        timeout: Duration? = nil
    ) throws {
        let frame = WebSocketFrame(opcode: opcode, payload: payload, fin: fin, rsv: rsv)
        try writeWire(frame.encoded(maskKey: masked ? Self.randomMaskKey() : nil), timeout: timeout, isClose: opcode == .close)
    }

    /// Writes bytes exactly as given (hand-made or truncated frames).
    /// - Parameters:
    ///   - bytes: Raw bytes for the wire.
    ///   - timeout: Write deadline (default `options.writeTimeout`).
    /// - Throws: As `sendText(_:timeout:)`.
    public func sendRaw(_ bytes: [UInt8], timeout: Duration? = nil) throws {
        try writeWire(bytes, timeout: timeout, isClose: false)
    }

    private func writeWire(_ bytes: [UInt8], timeout: Duration?, isClose: Bool) throws {
        let deadline = Deadline.after(timeout ?? options.writeTimeout)
        try sendState.withLock { state in
            guard !closed.load(ordering: .acquiring) else {
                throw GatewayClientError.closed(detail: "close() was called")
            }
            guard !state.broken else {
                throw GatewayClientError.ioFailed("an earlier write timed out mid-frame")
            }
            do {
                try stream.write(bytes, deadline: deadline)
            } catch let error as GatewayClientError where error.isTimeout {
                state.broken = true
                throw error
            }
            if isClose { state.closeSent = true }
        }
    }

    static func randomMaskKey() -> [UInt8] {
        let value = UInt32.random(in: .min ... .max)
        return [UInt8(truncatingIfNeeded: value >> 24), UInt8(truncatingIfNeeded: value >> 16),
                UInt8(truncatingIfNeeded: value >> 8), UInt8(truncatingIfNeeded: value)]
    }

    static func closePayload(code: UInt16?, reason: String) -> [UInt8] {
        guard let code else { return [] }
        return [UInt8(code >> 8), UInt8(code & 0xFF)] + Array(reason.utf8)
    }

    // MARK: - Receive

    /// Returns the next complete message or control frame.
    ///
    /// Fragments are reassembled; pings are answered (if `autoPong`) and returned (if `deliverPings`); the
    /// server's close frame is echoed (if `autoReplyClose`) and returned once as `.close`. A timeout leaves partial
    /// data buffered, so the next call continues where this one stopped.
    /// - Parameters:
    ///   - timeout: How long to wait for a complete message.
    /// - Returns: The message.
    /// - Throws: `.timeout`; `.closed` (with `closeCode` if the server sent a close frame) once the connection has
    ///   ended; `.protocolViolation` / `.frameTooLarge` if the server broke RFC 6455 (the connection is then
    ///   failed: a close frame 1002/1007/1009 is attempted and the socket is shut down).
    public func receive(timeout: Duration = .seconds(5)) throws -> Message {
        let deadline = Deadline.after(timeout)
        return try receiveState.withLock { state in
            while true {
                if let ended = state.ended { throw ended }
                if let message = try nextMessage(&state, deadline: deadline) { return message }
            }
        }
    }

    /// Parses buffered frames until one yields a message, reading more as needed; `nil` means "loop again".
    private func nextMessage(_ state: inout ReceiveState, deadline: ContinuousClock.Instant) throws -> Message? {
        let result: WebSocketFrameDecoder.Result
        do {
            result = try decoder.decode(state.buffer[state.readIndex...])
        } catch let error as GatewayClientError {
            fail(&state, error, closeCode: error.isProtocolViolation && error != .protocolViolation() ? 1009 : 1002)
            throw error
        }
        switch result {
        case .needMore:
            if state.readIndex > 0 {
                state.buffer.removeFirst(state.readIndex)
                state.readIndex = 0
            }
            do {
                let n = try stream.read(into: &state.buffer, maxBytes: 256 * 1024, deadline: deadline)
                if n == 0 {
                    state.ended = .closed(detail: "connection closed by peer without a close frame")
                }
            } catch let error as GatewayClientError where error.isTimeout {
                throw error
            } catch let error as GatewayClientError {
                state.ended = error.isClosed ? error : .closed(detail: "connection failed: \(error.detail)")
                throw error
            }
            return nil
        case .frame(let frame, let consumed):
            state.readIndex += consumed
            return try handle(frame, &state)
        }
    }

    private func handle(_ frame: WebSocketFrame, _ state: inout ReceiveState) throws -> Message? {
        switch frame.opcode {
        case .text, .binary:
            guard state.fragmentOpcode == nil else {
                throw violation(&state, "new \(frame.opcode) frame inside a fragmented message", code: 1002)
            }
            if frame.fin { return try complete(frame.opcode, frame.payload, &state) }
            state.fragmentOpcode = frame.opcode
            state.fragments = frame.payload
            return nil
        case .continuation:
            guard let opcode = state.fragmentOpcode else {
                throw violation(&state, "continuation frame without a message in progress", code: 1002)
            }
            guard state.fragments.count + frame.payload.count <= options.maxMessageSize else {
                let error = GatewayClientError.frameTooLarge("message larger than \(options.maxMessageSize)")
                fail(&state, error, closeCode: 1009)
                throw error
            }
            state.fragments.append(contentsOf: frame.payload)
            guard frame.fin else { return nil }
            let payload = state.fragments
            state.fragmentOpcode = nil
            state.fragments = []
            return try complete(opcode, payload, &state)
        case .ping:
            if options.autoPong {
                // Best effort: if the write fails the next read reports the broken connection.
                let pong = WebSocketFrame(opcode: .pong, payload: frame.payload).encoded(maskKey: Self.randomMaskKey())
                try? writeWire(pong, timeout: nil, isClose: false)
            }
            return options.deliverPings ? .ping(frame.payload) : nil
        case .pong:
            return options.deliverPongs ? .pong(frame.payload) : nil
        case .close:
            var code: UInt16?
            var reason = ""
            if frame.payload.count == 1 {
                throw violation(&state, "close payload of 1 byte", code: 1002)
            } else if frame.payload.count >= 2 {
                code = UInt16(frame.payload[0]) << 8 | UInt16(frame.payload[1])
                reason = String(decoding: frame.payload[2...], as: UTF8.self)
            }
            state.ended = .closed(code: code, reason: reason, detail: "server sent close")
            if options.autoReplyClose {
                let alreadySent = sendState.withLock { $0.closeSent }
                if !alreadySent {
                    try? writeWire(
                        WebSocketFrame(opcode: .close, payload: Self.closePayload(code: code, reason: ""))
                            .encoded(maskKey: Self.randomMaskKey()),
                        timeout: .seconds(1), isClose: true
                    )
                }
            }
            return .close(code: code, reason: reason)
        default:
            throw violation(&state, "unexpected \(frame.opcode)", code: 1002)
        }
    }

    private func complete(_ opcode: WebSocketOpcode, _ payload: [UInt8], _ state: inout ReceiveState) throws -> Message {
        guard payload.count <= options.maxMessageSize else {
            let error = GatewayClientError.frameTooLarge("message larger than \(options.maxMessageSize)")
            fail(&state, error, closeCode: 1009)
            throw error
        }
        if opcode == .binary { return .binary(payload) }
        guard let text = String(validating: payload, as: UTF8.self) else {
            throw violation(&state, "text message is not valid UTF-8", code: 1007)
        }
        return .text(text)
    }

    private func violation(_ state: inout ReceiveState, _ detail: String, code: UInt16) -> GatewayClientError {
        let error = GatewayClientError.protocolViolation(detail)
        fail(&state, error, closeCode: code)
        return error
    }

    /// Fails the connection (RFC 6455 §7.1.7): best-effort close frame, then shutdown; later receives throw `.closed`.
    private func fail(_ state: inout ReceiveState, _ error: GatewayClientError, closeCode: UInt16) {
        state.ended = .closed(detail: "connection failed: \(error.detail)")
        let alreadySent = sendState.withLock { $0.closeSent }
        if !alreadySent {
            try? writeWire(
                WebSocketFrame(opcode: .close, payload: Self.closePayload(code: closeCode, reason: ""))
                    .encoded(maskKey: Self.randomMaskKey()),
                timeout: .milliseconds(500), isClose: true
            )
        }
        stream.shutdownSocket()
    }

    /// Receives the next message and requires it to be a text message holding a JSON object. Skips nothing:
    /// a ping, pong, binary or close message is an error (set `deliverPings = false` if the server pings).
    /// - Parameters:
    ///   - timeout: How long to wait.
    /// - Returns: The decoded object.
    /// - Throws: `.unexpectedMessage` if the message is not a JSON object, otherwise as `receive(timeout:)`.
    public func receiveJSON(timeout: Duration = .seconds(5)) throws -> [String: Any] {
        let message = try receive(timeout: timeout)
        guard case .text(let text) = message else {
            throw GatewayClientError.unexpectedMessage("expected a JSON text message, got \(message.summary)")
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)), let dictionary = object as? [String: Any]
        else {
            throw GatewayClientError.unexpectedMessage("text message (\(text.utf8.count) bytes) is not a JSON object")
        }
        return dictionary
    }

    /// Receives the next message and requires it to be text.
    /// - Parameters:
    ///   - timeout: How long to wait.
    /// - Returns: The text.
    /// - Throws: `.unexpectedMessage` for any other kind, otherwise as `receive(timeout:)`.
    public func receiveText(timeout: Duration = .seconds(5)) throws -> String {
        let message = try receive(timeout: timeout)
        guard case .text(let text) = message else {
            throw GatewayClientError.unexpectedMessage("expected text, got \(message.summary)")
        }
        return text
    }

    /// Reads and discards messages until the server's close frame or the end of the connection.
    /// - Parameters:
    ///   - timeout: Overall bound.
    /// - Returns: The close code and reason (`nil` code if the connection ended without a close frame or the
    ///   close frame was empty). If a close frame was already returned by `receive`, returns it again.
    /// - Throws: `.timeout` if the connection is still open at the deadline; `.protocolViolation` if the server
    ///   broke the protocol on the way.
    @discardableResult
    public func waitForClose(timeout: Duration = .seconds(5)) throws -> (code: UInt16?, reason: String) {
        let deadline = Deadline.after(timeout)
        while true {
            do {
                let left = ContinuousClock.now.duration(to: deadline)
                if case .close(let code, let reason) = try receive(timeout: max(left, .zero)) { return (code, reason) }
            } catch let error as GatewayClientError where error.isClosed {
                return (error.closeCode, error.closeReason)
            }
        }
    }

    /// Documents a slow consumer: the client never reads in the background, so simply not calling `receive`
    /// lets the kernel buffers fill (combine with `WebSocketClientOptions.receiveBufferSize`). This call only
    /// states the intent in the test; it changes nothing.
    public func stopReading() {}

    /// Closes the socket without a closing handshake (send `sendClose` first for a clean close); idempotent and
    /// safe to call while another thread is blocked in `receive` or a send (they are woken with `.closed`).
    public func close() {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        stream.shutdownSocket()
        receiveState.withLock { state in
            if state.ended == nil { state.ended = .closed(detail: "close() was called") }
            sendState.withLock { _ in stream.release() }
        }
    }

    /// `true` once `close()` has run.
    public var isClosed: Bool { closed.load(ordering: .acquiring) }
}
