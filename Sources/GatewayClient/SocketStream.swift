import COpenSSL
import Glibc
import Synchronization

/// Deadline arithmetic shared by every blocking wait in this module (and, `package`-wide, by `GatewayTesting`).
package enum Deadline {
    /// The instant `timeout` from now (saturating for huge durations).
    package static func after(_ timeout: Duration) -> ContinuousClock.Instant {
        let capped = min(max(timeout, .zero), .seconds(86_400 * 365))
        return ContinuousClock.now.advanced(by: capped)
    }

    /// Milliseconds left until `deadline`, rounded up, clamped to 0…Int32.max.
    package static func millisecondsLeft(_ deadline: ContinuousClock.Instant) -> Int32 {
        let left = ContinuousClock.now.duration(to: deadline)
        guard left > .zero else { return 0 }
        let (seconds, attoseconds) = left.components
        let ms = seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
        return Int32(clamping: ms)
    }
}

/// Text for the current `errno`.
package func errnoText(_ code: Int32 = errno) -> String {
    String(cString: strerror(code)) + " (errno \(code))"
}

/// Ignores SIGPIPE once per process: OpenSSL writes to the socket with `write(2)`, which would otherwise kill
/// the test process when the gateway goes away mid-write. Plain sockets use `MSG_NOSIGNAL` as well.
/// `ProcessRunner` (in `GatewayTesting`) resets SIGPIPE to the default in children, so the gateway is unaffected.
private let ignoreSIGPIPE: Void = {
    _ = signal(SIGPIPE, SIG_IGN)
}()

/// A connected TCP socket, optionally wrapped in TLS, with deadline-bounded reads and writes.
///
/// Non-blocking fd plus `poll(2)`: every wait is bounded by a deadline, nothing blocks forever.
///
/// Ownership (`@unchecked Sendable` invariant): `fd` and `ssl` are set in `init` and only changed by
/// `release()`. The owner guarantees that `release()` never overlaps `read`/`write` (`WebSocketClient` calls it
/// while holding both its receive and its send lock; `RawHTTP` is single-threaded). At most one reader and one
/// writer run at a time (the owner's locks); because one `SSL` object must not be used from two threads at once,
/// every `SSL_*` call on it is additionally serialized by `sslLock` (held only around the call, never during
/// `poll`). `shutdownSocket()` only calls `shutdown(2)` on a still-open fd and may run concurrently with anything.
final class SocketStream: @unchecked Sendable {
    private var fd: Int32
    private var ssl: OpaquePointer?
    private let sslLock = Mutex<Void>(())
    /// Keeps the `SSL_CTX` alive as long as the `SSL` that references it.
    private let tlsContext: TLSContext?
    /// ALPN protocol the server selected, if any.
    private(set) var negotiatedALPN: String?

    /// Takes ownership of a connected (or accepted) socket; performs the TLS handshake if `tls` is given.
    /// - Parameters:
    ///   - fd: A connected socket; made non-blocking here. Closed on failure.
    ///   - tls: Client or server TLS context, or `nil` for plain TCP.
    ///   - host: Host for SNI and verification (client side).
    ///   - options: Client TLS options (SNI name, ALPN, verification).
    ///   - deadline: Handshake deadline.
    /// - Throws: `GatewayClientError.tlsFailed` or `.timeout`.
    init(
        fd: Int32, tls: TLSContext?, host: String = "", options: TLSOptions? = nil,
        deadline: ContinuousClock.Instant
    ) throws {
        _ = ignoreSIGPIPE
        self.fd = fd
        self.tlsContext = tls
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, (flags < 0 ? 0 : flags) | O_NONBLOCK)
        guard let tls else { return }
        guard let ssl = SSL_new(tls.context) else {
            Glibc.close(fd)
            self.fd = -1
            throw GatewayClientError.tlsFailed("SSL_new: \(TLSContext.drainErrors())")
        }
        self.ssl = ssl
        do {
            try handshake(ssl: ssl, tls: tls, host: host, options: options, deadline: deadline)
        } catch {
            release()
            throw error
        }
    }

    deinit { release() }

    private func handshake(
        ssl: OpaquePointer, tls: TLSContext, host: String, options: TLSOptions?, deadline: ContinuousClock.Instant
    ) throws {
        guard SSL_set_fd(ssl, fd) == 1 else {
            throw GatewayClientError.tlsFailed("SSL_set_fd: \(TLSContext.drainErrors())")
        }
        if tls.isServer {
            SSL_set_accept_state(ssl)
        } else {
            SSL_set_connect_state(ssl)
            let name = options?.serverName ?? host
            let isIPLiteral = TLSContext.isIPLiteral(name)
            if !isIPLiteral, !name.isEmpty {
                // SSL_set_tlsext_host_name is a macro; this is its expansion.
                let ok = name.withCString { SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, Int(TLSEXT_NAMETYPE_host_name), UnsafeMutableRawPointer(mutating: $0)) }
                guard ok == 1 else { throw GatewayClientError.tlsFailed("SNI: \(TLSContext.drainErrors())") }
            }
            if options?.verifyPeer ?? true, !name.isEmpty {
                if isIPLiteral {
                    guard X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1 else {
                        throw GatewayClientError.tlsFailed("bad IP literal for verification: \(name)")
                    }
                } else {
                    guard SSL_set1_host(ssl, name) == 1 else {
                        throw GatewayClientError.tlsFailed("SSL_set1_host: \(TLSContext.drainErrors())")
                    }
                }
            }
            if let alpn = options?.alpn, !alpn.isEmpty {
                var wire: [UInt8] = []
                for proto in alpn {
                    let bytes = Array(proto.utf8)
                    guard !bytes.isEmpty, bytes.count <= 255 else {
                        throw GatewayClientError.invalidArgument("ALPN protocol must be 1…255 bytes")
                    }
                    wire.append(UInt8(bytes.count))
                    wire.append(contentsOf: bytes)
                }
                // Note the inverted convention: SSL_set_alpn_protos returns 0 on success.
                guard SSL_set_alpn_protos(ssl, wire, UInt32(wire.count)) == 0 else {
                    throw GatewayClientError.tlsFailed("SSL_set_alpn_protos failed")
                }
            }
        }
        while true {
            ERR_clear_error()
            let rc = sslLock.withLock { _ in SSL_do_handshake(ssl) }
            if rc == 1 { break }
            let err = SSL_get_error(ssl, rc)
            switch err {
            case SSL_ERROR_WANT_READ: try waitFor(Int16(POLLIN), deadline: deadline, what: "TLS handshake")
            case SSL_ERROR_WANT_WRITE: try waitFor(Int16(POLLOUT), deadline: deadline, what: "TLS handshake")
            default:
                var detail = TLSContext.drainErrors()
                let verify = SSL_get_verify_result(ssl)
                if verify != X509_V_OK {
                    detail += "; verify: " + String(cString: X509_verify_cert_error_string(verify))
                }
                if err == SSL_ERROR_SYSCALL { detail += "; " + (errno == 0 ? "unexpected EOF" : errnoText()) }
                throw GatewayClientError.tlsFailed("handshake failed: \(detail)")
            }
        }
        var data: UnsafePointer<UInt8>?
        var length: UInt32 = 0
        SSL_get0_alpn_selected(ssl, &data, &length)
        if let data, length > 0 {
            negotiatedALPN = String(decoding: UnsafeBufferPointer(start: data, count: Int(length)), as: UTF8.self)
        }
    }

    /// `true` if this stream is wrapped in TLS.
    var isTLS: Bool { ssl != nil }

    /// Local TCP port of the socket, or `nil` once released.
    var localPort: Int? {
        guard fd >= 0 else { return nil }
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard rc == 0 else { return nil }
        return SocketAddress.port(of: storage)
    }

    /// Waits until the fd is ready for `events` or the deadline passes.
    private func waitFor(_ events: Int16, deadline: ContinuousClock.Instant, what: String) throws {
        while true {
            guard fd >= 0 else { throw GatewayClientError.closed(detail: "socket released") }
            let ms = Deadline.millisecondsLeft(deadline)
            var pfd = pollfd(fd: fd, events: events, revents: 0)
            let rc = poll(&pfd, 1, ms)
            if rc > 0 { return }  // readable/writable, or HUP/ERR: the next read/write reports it
            if rc == 0 { throw GatewayClientError.timeout(what) }
            if errno == EINTR { continue }
            throw GatewayClientError.ioFailed("poll: \(errnoText())")
        }
    }

    /// Appends up to `maxBytes` received bytes to `buffer`.
    /// - Parameters:
    ///   - buffer: Destination; bytes are appended.
    ///   - maxBytes: Upper bound for this call.
    ///   - deadline: Give up with `.timeout` after this instant.
    /// - Returns: Number of bytes appended; 0 means the peer closed the connection.
    /// - Throws: `.timeout`, `.ioFailed`, `.tlsFailed`, `.closed` after `release()`.
    func read(into buffer: inout [UInt8], maxBytes: Int, deadline: ContinuousClock.Instant) throws -> Int {
        let chunk = max(1, maxBytes)
        var scratch = [UInt8](repeating: 0, count: chunk)
        while true {
            guard fd >= 0 else { throw GatewayClientError.closed(detail: "socket released") }
            if let ssl {
                ERR_clear_error()
                let (rc, err, savedErrno) = sslLock.withLock { _ in
                    let rc = scratch.withUnsafeMutableBytes { SSL_read(ssl, $0.baseAddress, Int32(clamping: chunk)) }
                    let saved = errno
                    return (rc, rc > 0 ? SSL_ERROR_NONE : SSL_get_error(ssl, rc), saved)
                }
                if rc > 0 {
                    buffer.append(contentsOf: scratch[0..<Int(rc)])
                    return Int(rc)
                }
                switch err {
                case SSL_ERROR_WANT_READ: try waitFor(Int16(POLLIN), deadline: deadline, what: "read")
                case SSL_ERROR_WANT_WRITE: try waitFor(Int16(POLLOUT), deadline: deadline, what: "read")
                case SSL_ERROR_ZERO_RETURN: return 0
                case SSL_ERROR_SYSCALL:
                    if savedErrno == 0 || savedErrno == ECONNRESET || savedErrno == EPIPE { return 0 }
                    throw GatewayClientError.ioFailed("SSL_read: \(errnoText(savedErrno))")
                default:
                    throw GatewayClientError.tlsFailed("SSL_read: \(TLSContext.drainErrors())")
                }
            } else {
                let n = scratch.withUnsafeMutableBytes { recv(fd, $0.baseAddress, chunk, 0) }
                if n > 0 {
                    buffer.append(contentsOf: scratch[0..<n])
                    return n
                }
                if n == 0 { return 0 }
                let code = errno
                if code == EAGAIN || code == EWOULDBLOCK {
                    try waitFor(Int16(POLLIN), deadline: deadline, what: "read")
                } else if code == EINTR {
                    continue
                } else if code == ECONNRESET || code == EPIPE || code == ESHUTDOWN {
                    return 0
                } else {
                    throw GatewayClientError.ioFailed("recv: \(errnoText(code))")
                }
            }
        }
    }

    /// Writes all of `bytes` or throws.
    /// - Parameters:
    ///   - bytes: Data to send.
    ///   - deadline: Give up with `.timeout` after this instant (the stream may then hold a partial frame).
    /// - Throws: `.timeout`, `.closed` (peer gone), `.ioFailed`, `.tlsFailed`.
    func write(_ bytes: [UInt8], deadline: ContinuousClock.Instant) throws {
        var offset = 0
        while offset < bytes.count {
            guard fd >= 0 else { throw GatewayClientError.closed(detail: "socket released") }
            let remaining = bytes.count - offset
            if let ssl {
                ERR_clear_error()
                let (rc, err, savedErrno) = sslLock.withLock { _ in
                    let rc = bytes.withUnsafeBytes { raw -> Int32 in
                        guard let base = raw.baseAddress else { return 0 }
                        return SSL_write(ssl, base + offset, Int32(clamping: min(remaining, 1 << 20)))
                    }
                    let saved = errno
                    return (rc, rc > 0 ? SSL_ERROR_NONE : SSL_get_error(ssl, rc), saved)
                }
                if rc > 0 {
                    offset += Int(rc)
                    continue
                }
                switch err {
                case SSL_ERROR_WANT_WRITE: try waitFor(Int16(POLLOUT), deadline: deadline, what: "write")
                case SSL_ERROR_WANT_READ: try waitFor(Int16(POLLIN), deadline: deadline, what: "write")
                case SSL_ERROR_ZERO_RETURN: throw GatewayClientError.closed(detail: "peer closed during write")
                case SSL_ERROR_SYSCALL:
                    if savedErrno == EPIPE || savedErrno == ECONNRESET || savedErrno == 0 {
                        throw GatewayClientError.closed(detail: "peer closed during write")
                    }
                    throw GatewayClientError.ioFailed("SSL_write: \(errnoText(savedErrno))")
                default:
                    throw GatewayClientError.tlsFailed("SSL_write: \(TLSContext.drainErrors())")
                }
            } else {
                let n = bytes.withUnsafeBytes { raw -> Int in
                    guard let base = raw.baseAddress else { return 0 }
                    return send(fd, base + offset, remaining, Int32(MSG_NOSIGNAL))
                }
                if n > 0 {
                    offset += n
                    continue
                }
                let code = errno
                if n < 0, code == EAGAIN || code == EWOULDBLOCK {
                    try waitFor(Int16(POLLOUT), deadline: deadline, what: "write")
                } else if n < 0, code == EINTR {
                    continue
                } else if code == EPIPE || code == ECONNRESET || code == ESHUTDOWN {
                    throw GatewayClientError.closed(detail: "peer closed during write")
                } else {
                    throw GatewayClientError.ioFailed("send: \(errnoText(code))")
                }
            }
        }
    }

    /// Sends FIN/RST and wakes every `poll` on this fd; the fd stays open until `release()`.
    func shutdownSocket() {
        if fd >= 0 { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
    }

    /// Frees the `SSL` and closes the fd; idempotent. See the class comment for when it may be called.
    func release() {
        if let ssl {
            SSL_free(ssl)
            self.ssl = nil
        }
        if fd >= 0 {
            Glibc.close(fd)
            fd = -1
        }
    }
}

/// Helpers for `sockaddr_storage` and TCP connects.
enum SocketAddress {
    /// The port in a `sockaddr_storage` holding `AF_INET` or `AF_INET6`.
    static func port(of storage: sockaddr_storage) -> Int? {
        var copy = storage
        switch Int32(storage.ss_family) {
        case AF_INET:
            return withUnsafePointer(to: &copy) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
            }
        case AF_INET6:
            return withUnsafePointer(to: &copy) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin6_port)) }
            }
        default:
            return nil
        }
    }

    /// Resolves `host` (IPv4/IPv6 literal or name) and connects a non-blocking TCP socket within `deadline`.
    /// - Parameters:
    ///   - host: Host without brackets.
    ///   - port: TCP port.
    ///   - receiveBufferSize: `SO_RCVBUF` to set before connecting (so the window is small from the start).
    ///   - sendBufferSize: `SO_SNDBUF` to set before connecting.
    ///   - deadline: Connect deadline.
    /// - Returns: The connected fd (non-blocking, close-on-exec).
    /// - Throws: `.connectFailed` or `.timeout`.
    static func connect(
        host: String, port: Int, receiveBufferSize: Int? = nil, sendBufferSize: Int? = nil,
        deadline: ContinuousClock.Instant
    ) throws -> Int32 {
        guard (1...65535).contains(port) else { throw GatewayClientError.connectFailed("bad port \(port)") }
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_NUMERICSERV
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0, let list else {
            throw GatewayClientError.connectFailed("getaddrinfo(\(host)): \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(list) }
        var lastError = "no addresses"
        var cursor: UnsafeMutablePointer<addrinfo>? = list
        while let info = cursor {
            cursor = info.pointee.ai_next
            let fd = socket(
                info.pointee.ai_family,
                Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue),
                0
            )
            guard fd >= 0 else {
                lastError = "socket: \(errnoText())"
                continue
            }
            var one: Int32 = 1
            _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            if let receiveBufferSize {
                var size = Int32(clamping: receiveBufferSize)
                _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            }
            if let sendBufferSize {
                var size = Int32(clamping: sendBufferSize)
                _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            }
            var result = Glibc.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen)
            if result != 0, errno == EINPROGRESS || errno == EINTR {
                var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                var polled: Int32
                repeat {
                    polled = poll(&pfd, 1, Deadline.millisecondsLeft(deadline))
                } while polled < 0 && errno == EINTR
                if polled == 0 {
                    Glibc.close(fd)
                    throw GatewayClientError.timeout("connect to \(host):\(port)")
                }
                var soError: Int32 = 0
                var length = socklen_t(MemoryLayout<Int32>.size)
                _ = getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &length)
                if polled > 0, soError == 0 {
                    result = 0
                } else {
                    errno = soError != 0 ? soError : errno
                }
            }
            if result == 0 { return fd }
            lastError = "connect \(host):\(port): \(errnoText())"
            Glibc.close(fd)
        }
        throw GatewayClientError.connectFailed(lastError)
    }
}
