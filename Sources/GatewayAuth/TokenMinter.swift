import JWTKit

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// Mints HS256 tokens with the gateway's claims: for development tokens, the CLI, tests and the load tester.
///
/// Production tokens come from the platform API; this exists so that nothing needs a hand-written JWT.
public enum TokenMinter {
    /// Signs an HS256 token with `sub`, `role`, `sessions`, optional `tier`, `iat` = now, `exp` = now + `ttlSeconds`,
    /// and optional `aud`, `iss` and header `kid`.
    ///
    /// - Parameters:
    ///   - secret: The shared secret (at least 32 bytes).
    ///   - sub: The subject (1-256 bytes, no control characters).
    ///   - role: The role.
    ///   - sessions: Session ids the token may use; `["*"]` means any (honoured for agents and operators).
    ///   - tier: The plan name, or `nil`.
    ///   - ttlSeconds: Lifetime in seconds; may be negative to mint an already expired token for tests.
    ///   - audience: The `aud` claim, or `nil`.
    ///   - issuer: The `iss` claim, or `nil`.
    ///   - kid: The header `kid`, or `nil`.
    /// - Returns: The compact JWS.
    /// - Throws: ``AuthError`` (``AuthError/Code/invalidConfiguration``) for a short secret or an unacceptable `sub`.
    public static func hs256(
        secret: String,
        sub: String,
        role: Role,
        sessions: [String],
        tier: String?,
        ttlSeconds: Int,
        audience: String? = nil,
        issuer: String? = nil,
        kid: String? = nil
    ) async throws -> String {
        guard TokenVerifier.isAcceptableSubject(sub) else {
            throw AuthError(.invalidConfiguration, detail: "sub must be 1-256 bytes without control characters")
        }
        let now = Int64(Date().timeIntervalSince1970.rounded(.down))
        let claims = MintedClaims(
            sub: sub,
            role: role.rawValue,
            sessions: sessions,
            tier: tier,
            iat: now,
            exp: now + Int64(ttlSeconds),
            aud: audience,
            iss: issuer
        )
        guard secret.utf8.count >= 32 else {
            throw AuthError(.invalidConfiguration, detail: "hs256 secret must be at least 32 bytes (256 bits)")
        }
        let collection = JWTKeyCollection()
        await collection.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        var header = JWTHeader()
        header.alg = "HS256"
        header.typ = "JWT"
        if let kid { header.kid = kid }
        return try await collection.sign(claims, header: header)
    }
}

/// The claims ``TokenMinter`` writes.
struct MintedClaims: JWTPayload {
    var sub: String
    var role: String
    var sessions: [String]
    var tier: String?
    var iat: Int64
    var exp: Int64
    var aud: String?
    var iss: String?

    func verify(using algorithm: some JWTAlgorithm) async throws {
        // Never used to verify: TokenVerifier checks claims itself.
    }
}
