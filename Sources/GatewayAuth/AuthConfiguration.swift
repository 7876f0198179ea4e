/// The asymmetric algorithms a configured public key can be pinned to.
public enum PublicKeyAlgorithm: String, Sendable, Hashable, CaseIterable {
    /// RSASSA-PKCS1-v1_5 with SHA-256; the key must be RSA, at least 2048 bits.
    case rs256 = "RS256"
    /// ECDSA on P-256 with SHA-256.
    case es256 = "ES256"
}

/// One public key that verifies RS256 or ES256 tokens.
public struct PublicKeyConfig: Sendable, Hashable {
    /// The `kid` that selects this key; `nil` means the key is only tried for tokens without `kid`.
    public var kid: String?
    /// The one algorithm this key verifies (pinned: the token's `alg` must equal it).
    public var algorithm: PublicKeyAlgorithm
    /// Path of a PEM file holding a `PUBLIC KEY` (SubjectPublicKeyInfo) or a `CERTIFICATE`.
    public var pemPath: String

    /// Creates a public key entry.
    /// - Parameters:
    ///   - kid: The key id, or `nil`.
    ///   - algorithm: The pinned algorithm.
    ///   - pemPath: Path of the PEM file.
    public init(kid: String? = nil, algorithm: PublicKeyAlgorithm, pemPath: String) {
        self.kid = kid
        self.algorithm = algorithm
        self.pemPath = pemPath
    }
}

/// Everything ``TokenVerifier`` needs: keys, clock leeway, expected audience and issuer, size limit.
///
/// `description` redacts the HS256 secret.
public struct AuthConfiguration: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The HS256 shared secret (at least 32 bytes); secret, never logged. `nil` disables HS256.
    public var hs256Secret: String?
    /// An optional `kid` for the HS256 secret: a token with this `kid` selects the secret.
    public var hs256KeyID: String?
    /// RS256/ES256 public keys.
    public var publicKeys: [PublicKeyConfig]
    /// Clock skew accepted on `exp`, `nbf` and `iat`, in seconds (0...3600).
    public var leewaySeconds: Int
    /// When set, `aud` must name it.
    public var audience: String?
    /// When set, `iss` must equal it.
    public var issuer: String?
    /// Tokens longer than this (UTF-8 bytes) are refused before parsing (256...1048576).
    public var maxTokenBytes: Int

    /// Creates a configuration.
    /// - Parameters:
    ///   - hs256Secret: The shared secret, or `nil`.
    ///   - hs256KeyID: The `kid` of the shared secret, or `nil`.
    ///   - publicKeys: RS256/ES256 keys.
    ///   - leewaySeconds: Clock skew leeway, default 60.
    ///   - audience: Expected audience, or `nil` to skip the check.
    ///   - issuer: Expected issuer, or `nil` to skip the check.
    ///   - maxTokenBytes: Size limit, default 8192.
    public init(
        hs256Secret: String? = nil,
        hs256KeyID: String? = nil,
        publicKeys: [PublicKeyConfig] = [],
        leewaySeconds: Int = 60,
        audience: String? = nil,
        issuer: String? = nil,
        maxTokenBytes: Int = 8192
    ) {
        self.hs256Secret = hs256Secret
        self.hs256KeyID = hs256KeyID
        self.publicKeys = publicKeys
        self.leewaySeconds = leewaySeconds
        self.audience = audience
        self.issuer = issuer
        self.maxTokenBytes = maxTokenBytes
    }

    /// The configuration with the secret shown as `<redacted>`.
    public var description: String {
        let keys = publicKeys.map { "\($0.algorithm.rawValue)(kid: \($0.kid ?? "-"), pem: \($0.pemPath))" }
        return "AuthConfiguration(hs256Secret: \(hs256Secret == nil ? "none" : "<redacted>"), "
            + "hs256KeyID: \(hs256KeyID ?? "-"), publicKeys: [\(keys.joined(separator: ", "))], "
            + "leewaySeconds: \(leewaySeconds), audience: \(audience ?? "-"), issuer: \(issuer ?? "-"), "
            + "maxTokenBytes: \(maxTokenBytes))"
    }

    /// Same as ``description``.
    public var debugDescription: String { description }
}

extension AuthConfiguration: CustomReflectable {
    /// Mirrors the redacted description, so `dump(_:)` cannot print the secret.
    public var customMirror: Mirror { Mirror(self, children: ["redacted": description]) }
}
