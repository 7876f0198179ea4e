import COpenSSL
import Glibc

/// An OpenSSL `SSL_CTX` for the client (or, in this module's own tests, a server).
///
/// `@unchecked Sendable` invariant: the `SSL_CTX` is fully configured in `init` and never mutated afterwards;
/// OpenSSL documents a configured `SSL_CTX` as safe to share between threads creating `SSL` objects. It is freed
/// in `deinit`, after every `SocketStream` holding a reference is gone.
final class TLSContext: @unchecked Sendable {
    let context: OpaquePointer
    let isServer: Bool

    /// `SSL_OP_IGNORE_UNEXPECTED_EOF` (OpenSSL 3, `SSL_OP_BIT(7)`; the macro is not importable): a peer that
    /// closes TCP without close_notify reads as EOF instead of an error, like a plain socket.
    private static let ignoreUnexpectedEOF: UInt64 = 1 << 7

    /// Creates a client context.
    /// - Parameters:
    ///   - options: Verification settings (`caFile`, `verifyPeer`).
    /// - Throws: `.tlsFailed` if the CA file cannot be loaded.
    init(client options: TLSOptions) throws {
        guard let ctx = SSL_CTX_new(TLS_client_method()) else {
            throw GatewayClientError.tlsFailed("SSL_CTX_new: \(Self.drainErrors())")
        }
        context = ctx
        isServer = false
        Self.configureCommon(ctx)
        if options.verifyPeer {
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nil)
            if let caFile = options.caFile {
                guard SSL_CTX_load_verify_locations(ctx, caFile, nil) == 1 else {
                    throw GatewayClientError.tlsFailed("cannot load CA file \(caFile): \(Self.drainErrors())")
                }
            } else {
                _ = SSL_CTX_set_default_verify_paths(ctx)
            }
        } else {
            SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nil)
        }
    }

    /// Creates a server context (used by this module's self-tests to stand up a `wss://` peer).
    /// - Parameters:
    ///   - certificateFile: PEM certificate chain.
    ///   - keyFile: PEM private key.
    ///   - alpnHTTP11Only: Select `http/1.1` when offered and fail the handshake (no_application_protocol) when
    ///     the client offers ALPN without it, as a server that refuses `h2` would.
    /// - Throws: `.tlsFailed` if the files cannot be loaded.
    init(serverCertificate certificateFile: String, keyFile: String, alpnHTTP11Only: Bool = true) throws {
        guard let ctx = SSL_CTX_new(TLS_server_method()) else {
            throw GatewayClientError.tlsFailed("SSL_CTX_new: \(Self.drainErrors())")
        }
        context = ctx
        isServer = true
        Self.configureCommon(ctx)
        guard SSL_CTX_use_certificate_chain_file(ctx, certificateFile) == 1,
            SSL_CTX_use_PrivateKey_file(ctx, keyFile, SSL_FILETYPE_PEM) == 1
        else { throw GatewayClientError.tlsFailed("cannot load \(certificateFile)/\(keyFile): \(Self.drainErrors())") }
        if alpnHTTP11Only {
            SSL_CTX_set_alpn_select_cb(ctx, { _, out, outLength, input, inputLength, _ in
                // Walk the client's length-prefixed list; point `out` into it (allowed by OpenSSL's contract).
                guard let out, let outLength, let input else { return SSL_TLSEXT_ERR_ALERT_FATAL }
                let wanted = Array("http/1.1".utf8)
                var index = 0
                let total = Int(inputLength)
                while index < total {
                    let length = Int(input[index])
                    let start = index + 1
                    guard start + length <= total else { break }
                    if length == wanted.count, (0..<length).allSatisfy({ input[start + $0] == wanted[$0] }) {
                        out.pointee = input + start
                        outLength.pointee = UInt8(length)
                        return SSL_TLSEXT_ERR_OK
                    }
                    index = start + length
                }
                return SSL_TLSEXT_ERR_ALERT_FATAL
            }, nil)
        }
    }

    deinit { SSL_CTX_free(context) }

    private static func configureCommon(_ ctx: OpaquePointer) {
        _ = SSL_CTX_set_options(ctx, ignoreUnexpectedEOF)
        // SSL_CTX_set_mode is a macro: partial writes, and a write buffer that may move between retries
        // (Swift arrays give no stable address across calls).
        _ = SSL_CTX_ctrl(
            ctx, SSL_CTRL_MODE, Int(SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER), nil
        )
    }

    /// `true` if `name` parses as an IPv4 or IPv6 literal.
    static func isIPLiteral(_ name: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, name, &v4) == 1 || inet_pton(AF_INET6, name, &v6) == 1
    }

    /// Empties this thread's OpenSSL error queue into one line of text.
    static func drainErrors() -> String {
        var parts: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            parts.append(String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return parts.isEmpty ? "no OpenSSL error" : parts.joined(separator: "; ")
    }
}
