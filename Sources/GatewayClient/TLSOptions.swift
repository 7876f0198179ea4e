/// TLS settings for `wss://` connections and `RawHTTP` over TLS.
///
/// Verification uses OpenSSL: with `caFile` the server chain must lead to that PEM (a self-signed test
/// certificate is its own CA); without it the system trust store is used. The peer name is checked against
/// `serverName` (or the URL host): `SSL_set1_host` for DNS names, the IP SAN for IPv4/IPv6 literals.
public struct TLSOptions: Sendable, Hashable {
    /// PEM file with the trusted CA (or the self-signed server certificate); `nil` uses the system store.
    public var caFile: String?
    /// Verify the chain and the host name; `false` accepts any certificate (tests of the TLS plumbing only).
    public var verifyPeer: Bool
    /// Name sent as SNI and checked against the certificate; `nil` means the URL host. SNI is never sent for
    /// IP literals (RFC 6066 §3), but the IP is still verified against the certificate's IP SANs.
    public var serverName: String?
    /// ALPN protocols to offer, in preference order (for example `["http/1.1"]`, or `["h2"]` to check the
    /// server refuses it); `nil` or empty offers no ALPN.
    public var alpn: [String]?

    /// Creates TLS options.
    /// - Parameters:
    ///   - caFile: PEM file with the trusted CA; `nil` uses the system store.
    ///   - verifyPeer: Whether to verify the certificate chain and host name.
    ///   - serverName: SNI / verification name; `nil` means the URL host.
    ///   - alpn: ALPN protocols to offer; `nil` offers none.
    public init(caFile: String? = nil, verifyPeer: Bool = true, serverName: String? = nil, alpn: [String]? = nil) {
        self.caFile = caFile
        self.verifyPeer = verifyPeer
        self.serverName = serverName
        self.alpn = alpn
    }

    /// Verifies the server against `caFile` (a self-signed test certificate works as its own CA).
    /// - Parameters:
    ///   - caFile: PEM file with the trusted certificate.
    ///   - alpn: ALPN protocols to offer; `nil` offers none.
    public static func verifying(caFile: String, alpn: [String]? = nil) -> Self {
        Self(caFile: caFile, verifyPeer: true, alpn: alpn)
    }

    /// Accepts any server certificate. Only for tests that are not about verification.
    /// - Parameters:
    ///   - alpn: ALPN protocols to offer; `nil` offers none.
    public static func insecure(alpn: [String]? = nil) -> Self {
        Self(caFile: nil, verifyPeer: false, alpn: alpn)
    }
}
