import TranscriptLog
import Glibc
import Prometheus
import GatewayConfig
import CLWS
import Foundation

/// C strings and arrays whose pointers lws keeps (protocol names, iface, cert paths, ALPN).
/// Freed only after `lws_context_destroy` returned (the service thread keeps this alive until then).
final class CAllocations {
    private var strings: [UnsafeMutablePointer<CChar>] = []
    var protocols: UnsafeMutablePointer<lws_protocols>?
    let wsProtocolName: UnsafeMutablePointer<CChar>
    let acceptProtocolName: UnsafeMutablePointer<CChar>

    init() {
        wsProtocolName = strdup("gateway")
        acceptProtocolName = strdup("gateway-accept")
    }

    func string(_ s: String) -> UnsafePointer<CChar> {
        let p = strdup(s)!
        strings.append(p)
        return UnsafePointer(p)
    }

    deinit {
        for p in strings { free(p) }
        free(wsProtocolName)
        free(acceptProtocolName)
        protocols?.deallocate()
    }
}

/// A listening socket the gateway binds itself (exactly the configured address; lws's `iface` with an
/// IPv4 literal can bind every address when IPv6 is on) and hands to lws as a raw file descriptor.
/// Accepted sockets are adopted into the listener's vhost (plain or TLS).
final class ListenSocket {
    let host: String
    let port: Int
    let tls: TLSPaths?
    let index: Int
    let fd: Int32
    var vhost: OpaquePointer?

    struct TLSPaths { var cert: String; var key: String }

    private init(host: String, port: Int, tls: TLSPaths?, index: Int, fd: Int32) {
        self.host = host
        self.port = port
        self.tls = tls
        self.index = index
        self.fd = fd
    }

    func close() { _ = Glibc.close(fd) }

    struct BindError: Error, CustomStringConvertible { let description: String }

    static func bind(host rawHost: String, port: Int, tls: (cert: String, key: String)?, index: Int) throws -> ListenSocket {
        var host = rawHost
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host == "localhost" { host = "127.0.0.1" }
        guard (0...65535).contains(port) else { throw BindError(description: "port \(port) out of range") }
        var v4 = in_addr()
        var v6 = in6_addr()
        let fd: Int32
        if inet_pton(AF_INET, host, &v4) == 1 {
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw BindError(description: "socket: \(String(cString: strerror(errno)))") }
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            var sa = sockaddr_in()
            sa.sin_family = sa_family_t(AF_INET)
            sa.sin_port = in_port_t(UInt16(port).bigEndian)
            sa.sin_addr = v4
            let rc = withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard rc == 0 else {
                let e = errno
                _ = Glibc.close(fd)
                throw BindError(description: "bind: \(String(cString: strerror(e)))")
            }
        } else if inet_pton(AF_INET6, host, &v6) == 1 {
            fd = socket(AF_INET6, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw BindError(description: "socket: \(String(cString: strerror(errno)))") }
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, socklen_t(MemoryLayout<Int32>.size))
            var sa = sockaddr_in6()
            sa.sin6_family = sa_family_t(AF_INET6)
            sa.sin6_port = in_port_t(UInt16(port).bigEndian)
            sa.sin6_addr = v6
            let rc = withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
            guard rc == 0 else {
                let e = errno
                _ = Glibc.close(fd)
                throw BindError(description: "bind: \(String(cString: strerror(e)))")
            }
        } else {
            throw BindError(description: "host must be an IPv4 or IPv6 address literal (or localhost), got '\(rawHost)'")
        }
        guard listen(fd, 4096) == 0 else {
            let e = errno
            _ = Glibc.close(fd)
            throw BindError(description: "listen: \(String(cString: strerror(e)))")
        }
        // Read back the port the kernel chose for port 0.
        var ss = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &ss) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        let boundPort: Int = withUnsafePointer(to: &ss) { p in
            if Int32(p.pointee.ss_family) == AF_INET {
                return p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
            }
            return p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin6_port)) }
        }
        let paths = tls.map { TLSPaths(cert: $0.cert, key: $0.key) }
        return ListenSocket(host: host, port: boundPort, tls: paths, index: index, fd: fd)
    }

    /// Accepts up to `max` pending connections (bounded per wake-up so one listener cannot starve the loop).
    func acceptPending(max: Int, _ body: (Int32) -> Void) {
        for _ in 0..<max {
            let c = CLWS_accept_nonblocking(fd)
            if c < 0 { return }
            var one: Int32 = 1
            setsockopt(c, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            body(c)
        }
    }
}

extension GatewayServer {
    func createContext(_ a: CAllocations) -> OpaquePointer? {
        lws_set_log_level(LLL_ERR | LLL_WARN, { level, line in
            guard let line else { return }
            var text = String(cString: line)
            while text.hasSuffix("\n") { text.removeLast() }
            lwsLogger.log(level: level & LLL_ERR != 0 ? .error : .warning, "\(text)", metadata: ["source": "lws"])
        })
        let protocols = UnsafeMutablePointer<lws_protocols>.allocate(capacity: 3)
        protocols.initialize(repeating: lws_protocols(), count: 3)
        protocols[0].name = UnsafePointer(a.wsProtocolName)
        protocols[0].callback = gatewayCallback
        protocols[0].per_session_data_size = MemoryLayout<UnsafeMutableRawPointer>.size
        // Chunk size of RECEIVE callbacks (larger messages are reassembled). lws mallocs this per connection at
        // the upgrade: at 16 KiB each idle connection held a touched page of it (7.2 KiB RSS per connection at
        // 10,000); at 2 KiB it is 4.2 KiB (docs/benchmarks.md).
        protocols[0].rx_buffer_size = 2 * 1024
        protocols[1].name = UnsafePointer(a.acceptProtocolName)
        protocols[1].callback = gatewayCallback
        protocols[1].per_session_data_size = 0
        a.protocols = protocols

        var info = lws_context_creation_info()
        info.options = CLWS_OPTION_EXPLICIT_VHOSTS | CLWS_OPTION_VALIDATE_UTF8
        if usesEventLib {
            info.options |= CLWS_OPTION_LIBEV
            // lws's libev plugin watches SIGINT on its loop. The `gateway` executable blocks SIGINT/SIGTERM in
            // every thread and takes them with sigwait, so this never fires there; a host process that does not
            // block signals still gets the same meaning: drain, and a second one exits at once.
            eventLibSignalTarget.withLock { $0 = WakeBox(server: self) }
            info.signal_cb = { _, _ in
                if eventLibSignals.add(1, ordering: .relaxed).newValue >= 2 { _exit(1) }
                eventLibSignalTarget.withLock { $0?.server }?.beginShutdown()
            }
        }
        if config.listeners.contains(where: { $0.tls != nil }) { info.options |= CLWS_OPTION_DO_SSL_GLOBAL_INIT }
        info.port = CONTEXT_PORT_NO_LISTEN_SERVER
        info.protocols = UnsafePointer(protocols)
        info.user = Unmanaged.passUnretained(self).toOpaque()
        info.timeout_secs = UInt32(max(1, config.limits.handshakeTimeoutSeconds.rounded(.up)))
        info.server_string = a.string("samokoder-gateway")
        info.fd_limit_per_thread = 0
        // Request headers may carry a Bearer token up to auth.max_token_bytes; lws's default header buffer
        // (4 KiB) would hang up on larger ones before the gateway could answer. The buffers are pooled per
        // concurrent handshake, not kept per connection.
        info.max_http_header_data = UInt16(clamping: min(65_535, config.auth.maxTokenBytes + 8 * 1024))
        return lws_create_context(&info)
    }

    func createVhost(_ ctx: OpaquePointer, listener: ListenSocket, _ a: CAllocations) -> OpaquePointer? {
        var info = lws_context_creation_info()
        info.port = CONTEXT_PORT_NO_LISTEN_SERVER
        info.protocols = UnsafePointer(a.protocols)
        info.vhost_name = a.string("listener-\(listener.index)")
        info.options = CLWS_OPTION_VALIDATE_UTF8
        info.timeout_secs = UInt32(max(1, config.limits.handshakeTimeoutSeconds.rounded(.up)))
        // A connection that has not finished its HTTP request head holds an lws header table ("ah"); lws drops it
        // after `timeout_secs_ah_idle`, which defaults to 10 s whatever `timeout_secs` says. Slowloris bound:
        // the handshake deadline applies to the request head too.
        info.timeout_secs_ah_idle = UInt32(max(1, config.limits.handshakeTimeoutSeconds.rounded(.up)))
        info.user = UnsafeMutableRawPointer(bitPattern: listener.index + 1)
        if let tls = listener.tls {
            info.options |= CLWS_OPTION_DO_SSL_GLOBAL_INIT
            info.ssl_cert_filepath = a.string(tls.cert)
            info.ssl_private_key_filepath = a.string(tls.key)
            // HTTP/1.1 only: lws 4.1.6's HTTP/2 code has unpatched CVEs (reliability.md §5).
            info.alpn = a.string("http/1.1")
        }
        return lws_create_vhost(ctx, &info)
    }

    /// The listener (by index) a wsi belongs to.
    func listener(of wsi: OpaquePointer) -> ListenSocket? {
        guard let vh = lws_get_vhost(wsi), let user = lws_get_vhost_user(vh) else { return nil }
        let index = Int(bitPattern: user) - 1
        return listeners.indices.contains(index) ? listeners[index] : nil
    }
}

import Logging
import Synchronization
let lwsLogger = Logger(label: "gateway.lws")

/// The server that a signal caught by the event library should drain (one per process in production).
let eventLibSignalTarget = Mutex<WakeBox?>(nil)
let eventLibSignals = Atomic<Int>(0)

/// The single C callback for every wsi of the gateway's context. Never throws or traps; dispatches to the
/// server found through the context's user pointer. Runs only on the service thread.
func gatewayCallback(
    _ wsi: OpaquePointer?, _ reason: lws_callback_reasons, _ user: UnsafeMutableRawPointer?,
    _ input: UnsafeMutableRawPointer?, _ len: Int
) -> Int32 {
    guard let wsi, let ctx = lws_get_context(wsi), let raw = lws_context_user(ctx) else {
        return lws_callback_http_dummy(wsi, reason, user, input, len)
    }
    let server = Unmanaged<GatewayServer>.fromOpaque(raw).takeUnretainedValue()
    return server.handle(wsi: wsi, reason: reason, user: user, input: input, len: len)
}
