import Foundation
import Synchronization
@testable import GatewayClient
import GatewayTesting

/// A scripted in-process peer for the client self-tests: binds 127.0.0.1 (or ::1) port 0, accepts connections on
/// a background thread and runs `handler` for each one on its own thread. Deliberately independent of anything
/// outside this package (no lws build step).
///
/// `@unchecked Sendable` invariant: `listenFD` and `port` are immutable after `init`; `stopping`, `errors` and
/// `running` are synchronized (Atomic / Mutex).
final class TestServer: @unchecked Sendable {
    let port: Int
    let host: String
    private let listenFD: Int32
    private let stopping = Atomic<Bool>(false)
    private let running = Atomic<Int>(0)
    /// Errors thrown by handlers (tests assert on them).
    let errors = Mutex<[String]>([])
    /// Free-form notes handlers record (frames seen, close codes received).
    let notes = Mutex<[String]>([])

    /// Starts listening.
    init(
        ipv6: Bool = false, tls: TLSContext? = nil,
        handler: @escaping @Sendable (ServerConnection) throws -> Void
    ) throws {
        let family = ipv6 ? AF_INET6 : AF_INET
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw GatewayClientError.ioFailed("socket") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var rc: Int32
        if ipv6 {
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_addr = in6addr_loopback
            rc = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        } else {
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            rc = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        guard rc == 0, listen(fd, 64) == 0 else {
            close(fd)
            throw GatewayClientError.ioFailed("bind/listen: \(errnoText())")
        }
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        listenFD = fd
        port = SocketAddress.port(of: storage) ?? 0
        host = ipv6 ? "::1" : "127.0.0.1"
        running.add(1, ordering: .relaxed)
        let thread = Thread { [self] in
            defer { running.subtract(1, ordering: .relaxed) }
            while !stopping.load(ordering: .relaxed) {
                var pfd = pollfd(fd: listenFD, events: Int16(POLLIN), revents: 0)
                guard poll(&pfd, 1, 50) > 0 else { continue }
                let client = accept(listenFD, nil, nil)
                guard client >= 0 else { continue }
                running.add(1, ordering: .relaxed)
                let worker = Thread { [self] in
                    defer { running.subtract(1, ordering: .relaxed) }
                    do {
                        let stream = try SocketStream(fd: client, tls: tls, deadline: Deadline.after(.seconds(5)))
                        let connection = ServerConnection(stream: stream, server: self)
                        try handler(connection)
                    } catch {
                        errors.withLock { $0.append("\(error)") }
                    }
                }
                worker.start()
            }
        }
        thread.start()
    }

    var url: String { host.contains(":") ? "ws://[\(host)]:\(port)/ws" : "ws://\(host):\(port)/ws" }
    var secureURL: String { host.contains(":") ? "wss://[\(host)]:\(port)/ws" : "wss://\(host):\(port)/ws" }

    func note(_ text: String) { notes.withLock { $0.append(text) } }
    var recordedNotes: [String] { notes.withLock { $0 } }
    var recordedErrors: [String] { errors.withLock { $0 } }

    /// Stops accepting and waits (bounded) for the handlers to finish.
    /// Idempotent: a second `close(listenFD)` could close an unrelated fd that reused the number.
    func stop() {
        guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let deadline = Deadline.after(.seconds(5))
        while running.load(ordering: .relaxed) > 0, ContinuousClock.now < deadline { usleep(2_000) }
        close(listenFD)
    }

    /// Runs `body` against a server and always stops it.
    @discardableResult
    static func with<T>(
        ipv6: Bool = false, tls: TLSContext? = nil, handler: @escaping @Sendable (ServerConnection) throws -> Void,
        _ body: (TestServer) throws -> T
    ) throws -> T {
        let server = try TestServer(ipv6: ipv6, tls: tls, handler: handler)
        defer { server.stop() }
        return try body(server)
    }

    /// The standard behaviour: upgrade, then echo every frame unmasked (fragments as fragments), answer pings,
    /// echo the close frame and hang up.
    static let echo: @Sendable (ServerConnection) throws -> Void = { connection in
        _ = try connection.acceptUpgrade()
        try connection.echoLoop()
    }
}

/// Server side of one accepted connection; used only on its handler thread.
final class ServerConnection {
    let stream: SocketStream
    unowned let server: TestServer
    private var buffer: [UInt8] = []
    private let decoder = WebSocketFrameDecoder(expectMasked: true, maxPayload: 64 * 1024 * 1024)

    init(stream: SocketStream, server: TestServer) {
        self.stream = stream
        self.server = server
    }

    /// Reads the request head; returns the request line and lowercased headers.
    func readRequest(timeout: Duration = .seconds(5)) throws -> (line: String, headers: [String: String]) {
        let deadline = Deadline.after(timeout)
        while true {
            if let end = HTTPResponseReader.findHeadEnd(buffer, from: 0) {
                let text = String(decoding: buffer[0..<end.headLength], as: UTF8.self)
                buffer.removeFirst(end.headLength + end.separatorLength)
                var lines = text.components(separatedBy: "\r\n")
                let line = lines.removeFirst()
                var headers: [String: String] = [:]
                for header in lines {
                    guard let colon = header.firstIndex(of: ":") else { continue }
                    headers[header[..<colon].lowercased()] = header[header.index(after: colon)...].trimmingASCIISpaces()
                }
                return (line, headers)
            }
            if try stream.read(into: &buffer, maxBytes: 65536, deadline: deadline) == 0 {
                throw GatewayClientError.closed(detail: "client went away before the request")
            }
        }
    }

    /// Reads the upgrade request and answers 101 (optionally with a wrong accept value).
    @discardableResult
    func acceptUpgrade(wrongAccept: Bool = false, extraHeaders: String = "") throws -> [String: String] {
        let request = try readRequest()
        let key = request.headers["sec-websocket-key"] ?? ""
        let accept = wrongAccept ? WebSocketClient.acceptValue(forKey: "wrong") : WebSocketClient.acceptValue(forKey: key)
        try sendRaw(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Accept: \(accept)\r\n\(extraHeaders)\r\n"
        )
        return request.headers
    }

    func sendRaw(_ text: String) throws { try sendRaw(Array(text.utf8)) }

    func sendRaw(_ bytes: [UInt8], timeout: Duration = .seconds(5)) throws {
        try stream.write(bytes, deadline: Deadline.after(timeout))
    }

    /// Sends an unmasked (server) frame.
    func send(_ opcode: WebSocketOpcode, _ payload: [UInt8] = [], fin: Bool = true) throws {
        try sendRaw(WebSocketFrame(opcode: opcode, payload: payload, fin: fin).encoded(maskKey: nil))
    }

    /// Reads one client frame (must be masked); `nil` on EOF.
    func readFrame(timeout: Duration = .seconds(5)) throws -> WebSocketFrame? {
        let deadline = Deadline.after(timeout)
        while true {
            switch try decoder.decode(buffer[...]) {
            case .frame(let frame, let consumed):
                buffer.removeFirst(consumed)
                return frame
            case .needMore:
                if try stream.read(into: &buffer, maxBytes: 256 * 1024, deadline: deadline) == 0 { return nil }
            }
        }
    }

    /// Echo loop (see `TestServer.echo`). Records "frame:<opcode>:<fin>" and "close:<code>" notes.
    func echoLoop(timeout: Duration = .seconds(10)) throws {
        while let frame = try readFrame(timeout: timeout) {
            server.note("frame:\(frame.opcode):\(frame.fin)")
            switch frame.opcode {
            case .ping:
                try send(.pong, frame.payload)
            case .pong:
                continue
            case .close:
                server.note("close:\(closeCode(frame.payload).map(String.init) ?? "none")")
                try send(.close, frame.payload)
                stream.shutdownSocket()
                return
            default:
                try sendRaw(WebSocketFrame(opcode: frame.opcode, payload: frame.payload, fin: frame.fin).encoded(maskKey: nil))
            }
        }
    }

    func closeCode(_ payload: [UInt8]) -> UInt16? {
        payload.count >= 2 ? UInt16(payload[0]) << 8 | UInt16(payload[1]) : nil
    }
}

/// `true` if this host can bind ::1 (IPv6 tests are skipped otherwise).
let ipv6LoopbackAvailable: Bool = {
    let fd = socket(AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in6()
    address.sin6_family = sa_family_t(AF_INET6)
    address.sin6_addr = in6addr_loopback
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
    } == 0
}()
