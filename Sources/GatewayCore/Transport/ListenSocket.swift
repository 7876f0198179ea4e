import CLWS
import Glibc

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
            var sa = sockaddr_in()
            sa.sin_family = sa_family_t(AF_INET)
            sa.sin_port = in_port_t(UInt16(port).bigEndian)
            sa.sin_addr = v4
            fd = try boundSocket(family: AF_INET, address: &sa)
        } else if inet_pton(AF_INET6, host, &v6) == 1 {
            var sa = sockaddr_in6()
            sa.sin6_family = sa_family_t(AF_INET6)
            sa.sin6_port = in_port_t(UInt16(port).bigEndian)
            sa.sin6_addr = v6
            fd = try boundSocket(family: AF_INET6, address: &sa)
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

    /// A non-blocking socket of `family` bound to `address` (a `sockaddr_in` or `sockaddr_in6`), with
    /// SO_REUSEADDR (and IPV6_V6ONLY for IPv6: an IPv6 listener never takes IPv4 traffic).
    private static func boundSocket<Address>(family: Int32, address: inout Address) throws -> Int32 {
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw BindError(description: "socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if family == AF_INET6 { setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, socklen_t(MemoryLayout<Int32>.size)) }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<Address>.size)) }
        }
        guard rc == 0 else {
            let e = errno
            _ = Glibc.close(fd)
            throw BindError(description: "bind: \(String(cString: strerror(e)))")
        }
        return fd
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
