import GatewayAuth

/// HS256 tokens for gateways under test, signed with ``GatewayEnvironment/secret`` unless told otherwise.
public enum TestTokens {
    /// Mints a token.
    /// - Parameters:
    ///   - role: The role claim.
    ///   - sub: The subject.
    ///   - sessions: Sessions the token may use.
    ///   - tier: The tier claim, if any.
    ///   - ttl: Lifetime in seconds.
    ///   - secret: The HS256 key.
    public static func mint(
        _ role: Role, sub: String, sessions: [String] = [], tier: String? = nil, ttl: Int = 3600,
        secret: String = GatewayEnvironment.secret
    ) async throws -> String {
        try await TokenMinter.hs256(secret: secret, sub: sub, role: role, sessions: sessions, tier: tier, ttlSeconds: ttl)
    }
}
