import JWTKit

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// Verifies JWTs (RFC 7519) against the configured keys and turns them into a ``Principal``.
///
/// The policy follows RFC 8725 (JWT BCP) and reliability.md §5:
/// - each key is pinned to one algorithm; the token's `alg` only selects among keys pinned to that
///   algorithm and is never used to choose how to verify. HS256 uses only the shared secret, RS256/ES256
///   only the configured public keys, so an HS256 token "signed" with a public key is refused.
/// - `alg: none` (any spelling), unknown algorithms, `crit`, and key references in the header (`jku`, `x5u`,
///   `jwk`, `x5c`) are refused. `kid`, when present, must equal a configured key id exactly; nothing is
///   looked up by it (no file, network or database access).
/// - `exp` is required; `exp`, `nbf` and `iat` are checked with ``AuthConfiguration/leewaySeconds``;
///   `aud` and `iss` are checked when configured; `typ` must name an access token when present.
/// - `sub` (1-256 bytes, no control characters) and `role` are required; `sessions` is an array of
///   strings (absent means none); `tier` is an optional string.
/// - the token is refused by size before it is parsed, and header and payload are parsed by a strict
///   JSON parser that rejects duplicate keys and invalid UTF-8.
///
/// Signatures are checked by jwt-kit's algorithm objects (swift-crypto underneath); this type holds no
/// mutable state, so ``verifySync(_:)`` can be called from any thread, including the lws service thread.
public final class TokenVerifier: Sendable {
    /// A configured key: jwt-kit's verifier pinned to one algorithm.
    struct Key: Sendable {
        let kid: String?
        let algorithm: TokenAlgorithm
        let verifier: any JWTAlgorithm
    }

    let keys: [Key]
    let leewaySeconds: Int64
    let audience: String?
    let issuer: String?
    let maxTokenBytes: Int

    /// Loads the keys of `config`.
    ///
    /// - Parameter config: Secret, public keys, leeway, audience, issuer, size limit.
    /// - Throws: ``AuthError`` with code ``AuthError/Code/invalidConfiguration`` whose ``AuthError/detail`` names
    ///   the bad setting or key file: no key configured, a secret shorter than 32 bytes, a PEM file that is
    ///   missing, unreadable, a private key, or not a key of the pinned algorithm (RSA < 2048 bits, EC not P-256),
    ///   duplicate `kid`s, a leeway outside 0...3600 or a size limit outside 256...1048576.
    public init(_ config: AuthConfiguration) async throws {
        guard (0...3600).contains(config.leewaySeconds) else {
            throw AuthError(
                .invalidConfiguration,
                detail: "leeway_seconds must be within 0...3600, got \(config.leewaySeconds)"
            )
        }
        guard (256...1_048_576).contains(config.maxTokenBytes) else {
            throw AuthError(
                .invalidConfiguration,
                detail: "max_token_bytes must be within 256...1048576, got \(config.maxTokenBytes)"
            )
        }
        if let audience = config.audience, audience.isEmpty {
            throw AuthError(.invalidConfiguration, detail: "audience must not be empty when set")
        }
        if let issuer = config.issuer, issuer.isEmpty {
            throw AuthError(.invalidConfiguration, detail: "issuer must not be empty when set")
        }
        var keys: [Key] = []
        if let secret = config.hs256Secret {
            keys.append(
                Key(kid: config.hs256KeyID, algorithm: .hs256, verifier: try await Self.hmacVerifier(secret: secret))
            )
        } else if config.hs256KeyID != nil {
            throw AuthError(.invalidConfiguration, detail: "hs256 kid is set but there is no hs256 secret")
        }
        for (index, keyConfig) in config.publicKeys.enumerated() {
            let verifier = try await Self.publicKeyVerifier(keyConfig, index: index)
            keys.append(Key(kid: keyConfig.kid, algorithm: TokenAlgorithm(keyConfig.algorithm), verifier: verifier))
        }
        guard !keys.isEmpty else {
            throw AuthError(
                .invalidConfiguration,
                detail: "no verification key: set the hs256 secret or at least one public key"
            )
        }
        var seenKids = Set<String>()
        for case let kid? in keys.map(\.kid) {
            guard !kid.isEmpty else {
                throw AuthError(.invalidConfiguration, detail: "a key id (kid) must not be empty")
            }
            guard seenKids.insert(kid).inserted else {
                throw AuthError(.invalidConfiguration, detail: "key id (kid) \"\(kid)\" is configured twice")
            }
        }
        self.keys = keys
        self.leewaySeconds = Int64(config.leewaySeconds)
        self.audience = config.audience
        self.issuer = config.issuer
        self.maxTokenBytes = config.maxTokenBytes
    }

    /// Verifies `token` at the current time.
    ///
    /// This is ``verifySync(_:)`` behind an `async` signature, for callers already in async code; it does
    /// not suspend.
    /// - Parameter token: The compact JWS (no `Bearer ` prefix).
    /// - Returns: The principal the token describes.
    /// - Throws: ``AuthError`` saying why the token is refused.
    public func verify(_ token: String) async throws(AuthError) -> Principal {
        try verifySync(token)
    }

    /// Verifies `token` at the current time, synchronously (no Task hop, safe on any thread).
    ///
    /// - Parameter token: The compact JWS (no `Bearer ` prefix).
    /// - Returns: The principal the token describes.
    /// - Throws: ``AuthError`` saying why the token is refused.
    public func verifySync(_ token: String) throws(AuthError) -> Principal {
        try verifySync(token, at: Int64(Date().timeIntervalSince1970.rounded(.down)))
    }

    /// Verifies `token` as if the clock read `now` (Unix seconds): for tests and for re-checking a token.
    ///
    /// - Parameters:
    ///   - token: The compact JWS.
    ///   - now: The current time in Unix seconds.
    /// - Returns: The principal the token describes.
    /// - Throws: ``AuthError`` saying why the token is refused.
    public func verifySync(_ token: String, at now: Int64) throws(AuthError) -> Principal {
        let utf8 = token.utf8
        guard !utf8.isEmpty else { throw AuthError(.missingToken) }
        guard utf8.count <= maxTokenBytes else { throw AuthError(.tooLarge) }

        // Compact serialization: exactly three segments.
        let segments = token[...].utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard segments.count == 3 else { throw AuthError(.malformed, detail: "expected 3 segments") }
        guard let headerBytes = Base64URL.decode(Substring(segments[0]).utf8),
            let payloadBytes = Base64URL.decode(Substring(segments[1]).utf8),
            let signature = Base64URL.decode(Substring(segments[2]).utf8)
        else { throw AuthError(.malformed, detail: "invalid base64url") }

        let header = try Self.parseObject(headerBytes, part: "header")
        let algorithm = try Self.checkHeader(header)
        let candidates = try selectKeys(header: header, algorithm: algorithm)

        guard !signature.isEmpty else { throw AuthError(.badSignature, detail: "signature missing") }
        // The signing input is the token up to the second period, exactly as received.
        let signingInput = Array(utf8.prefix(segments[0].count + 1 + segments[1].count))
        var verified = false
        for key in candidates {
            // jwt-kit throws for some malformed signatures (an ECDSA signature that is not 64 bytes).
            if (try? key.verifier.verify(signature, signs: signingInput)) == true {
                verified = true
                break
            }
        }
        guard verified else { throw AuthError(.badSignature) }

        let claims = try Self.parseObject(payloadBytes, part: "payload")
        return try principal(from: claims, now: now)
    }

    // MARK: - Header

    static func parseObject(_ bytes: [UInt8], part: String) throws(AuthError) -> [String: JSONValue] {
        let value: JSONValue
        do {
            value = try StrictJSON.parse(bytes)
        } catch {
            throw AuthError(.malformed, detail: "\(part) is not strict JSON (duplicate keys, invalid UTF-8 or syntax)")
        }
        guard case .object(let object) = value else {
            throw AuthError(.malformed, detail: "\(part) is not a JSON object")
        }
        return object
    }

    /// Header parameters that point at keys outside the configuration (RFC 8725 §3.10): never honoured.
    static let keyReferenceParameters = ["jku", "x5u", "jwk", "x5c"]
    /// Accepted `typ` values (compared case-insensitively, optional `application/` prefix): access tokens only.
    static let acceptedTypes: Set<String> = ["jwt", "at+jwt"]

    static func checkHeader(_ header: [String: JSONValue]) throws(AuthError) -> TokenAlgorithm {
        guard let algValue = header["alg"] else { throw AuthError(.algorithmNotAllowed, detail: "alg missing") }
        guard case .string(let alg) = algValue else { throw AuthError(.malformed, detail: "alg is not a string") }
        guard let algorithm = TokenAlgorithm(rawValue: alg) else {
            // Covers "none", "None", "nOnE", HS384, PS256, EdDSA, ...
            throw AuthError(.algorithmNotAllowed)
        }
        for name in keyReferenceParameters where header[name] != nil {
            throw AuthError(.unknownKey, detail: "header carries a key reference (\(name))")
        }
        if header["crit"] != nil {
            // RFC 7515 §4.1.11: extensions we do not understand must make the token invalid.
            throw AuthError(.badClaim("crit"))
        }
        if let typValue = header["typ"] {
            guard case .string(let typ) = typValue, acceptedTypes.contains(normalizedType(typ)) else {
                throw AuthError(.badClaim("typ"), detail: "header typ is not an access token type")
            }
        }
        if let kidValue = header["kid"] {
            guard case .string = kidValue else { throw AuthError(.malformed, detail: "kid is not a string") }
        }
        return algorithm
    }

    static func normalizedType(_ typ: String) -> String {
        let lower = typ.lowercased()
        return lower.hasPrefix("application/") ? String(lower.dropFirst("application/".count)) : lower
    }

    func selectKeys(header: [String: JSONValue], algorithm: TokenAlgorithm) throws(AuthError) -> [Key] {
        if case .string(let kid)? = header["kid"] {
            guard let key = keys.first(where: { $0.kid == kid }) else { throw AuthError(.unknownKey) }
            guard key.algorithm == algorithm else {
                throw AuthError(.algorithmNotAllowed, detail: "alg differs from the algorithm pinned to this kid")
            }
            return [key]
        }
        let candidates = keys.filter { $0.algorithm == algorithm }
        guard !candidates.isEmpty else {
            throw AuthError(.algorithmNotAllowed, detail: "no key configured for \(algorithm.rawValue)")
        }
        return candidates
    }

    // MARK: - Claims

    /// The latest NumericDate we accept (9999-12-31T23:59:59Z); larger values are malformed claims, not "never".
    static let maxNumericDate: Double = 253_402_300_799

    func principal(from claims: [String: JSONValue], now: Int64) throws(AuthError) -> Principal {
        guard let exp = try Self.numericDate(claims, "exp") else { throw AuthError(.missingClaim("exp")) }
        let nowValue = Double(now)
        let leeway = Double(leewaySeconds)
        // Valid while now < exp + leeway: 59 s past exp passes at leeway 60, 61 s does not.
        guard nowValue < exp + leeway else { throw AuthError(.expired) }
        if let nbf = try Self.numericDate(claims, "nbf"), nbf > nowValue + leeway {
            throw AuthError(.notYetValid, detail: "nbf in the future")
        }
        if let iat = try Self.numericDate(claims, "iat"), iat > nowValue + leeway {
            throw AuthError(.notYetValid, detail: "iat in the future")
        }
        if let audience {
            guard Self.audienceClaim(claims["aud"]).contains(audience) else { throw AuthError(.badAudience) }
        }
        if let issuer {
            guard case .string(let iss)? = claims["iss"], iss == issuer else { throw AuthError(.badIssuer) }
        }
        // Payload-level token types used by some issuers (Keycloak `typ`, Cognito `token_use`): access only.
        if let typ = try Self.optionalString(claims, "typ"), !["bearer", "access", "at+jwt"].contains(typ.lowercased())
        {
            throw AuthError(.badClaim("typ"))
        }
        if let use = try Self.optionalString(claims, "token_use"), use.lowercased() != "access" {
            throw AuthError(.badClaim("token_use"))
        }

        guard let sub = try Self.optionalString(claims, "sub") else { throw AuthError(.missingClaim("sub")) }
        guard Self.isAcceptableSubject(sub) else { throw AuthError(.badClaim("sub")) }
        guard let roleName = try Self.optionalString(claims, "role") else { throw AuthError(.missingClaim("role")) }
        guard let role = Role(rawValue: roleName) else { throw AuthError(.badClaim("role")) }

        var sessions = Set<String>()
        switch claims["sessions"] {
        case nil, .null?:
            break
        case .array(let elements)?:
            for element in elements {
                guard case .string(let session) = element else { throw AuthError(.badClaim("sessions")) }
                sessions.insert(session)
            }
        default:
            throw AuthError(.badClaim("sessions"))
        }
        let tier = try Self.optionalString(claims, "tier")

        return Principal(
            sub: sub,
            role: role,
            sessions: sessions,
            anySession: sessions.contains("*"),
            tier: tier,
            expiresAt: Int64(exp.rounded(.down))
        )
    }

    static func numericDate(_ claims: [String: JSONValue], _ name: String) throws(AuthError) -> Double? {
        switch claims[name] {
        case nil, .null?: return nil
        case .number(let value)?:
            guard value >= 0, value <= maxNumericDate else { throw AuthError(.badClaim(name)) }
            return value
        default: throw AuthError(.badClaim(name))
        }
    }

    static func optionalString(_ claims: [String: JSONValue], _ name: String) throws(AuthError) -> String? {
        switch claims[name] {
        case nil, .null?: return nil
        case .string(let value)?: return value
        default: throw AuthError(.badClaim(name))
        }
    }

    static func audienceClaim(_ value: JSONValue?) -> [String] {
        switch value {
        case .string(let audience)?: return [audience]
        case .array(let elements)?:
            return elements.compactMap { if case .string(let audience) = $0 { audience } else { nil } }
        default: return []
        }
    }

    /// `sub` ends up in logs and in `from.sub` of every event: 1-256 bytes, no control characters.
    static func isAcceptableSubject(_ sub: String) -> Bool {
        guard (1...256).contains(sub.utf8.count) else { return false }
        return !sub.unicodeScalars.contains { $0.properties.generalCategory == .control }
    }

    // MARK: - Key loading

    static func hmacVerifier(secret: String) async throws(AuthError) -> any JWTAlgorithm {
        // jwt-kit asserts (debug builds) on HMAC keys shorter than the hash output; refuse them here instead.
        guard secret.utf8.count >= 32 else {
            throw AuthError(.invalidConfiguration, detail: "hs256 secret must be at least 32 bytes (256 bits)")
        }
        let collection = JWTKeyCollection()
        await collection.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256, kid: JWKIdentifier(string: "hs256"))
        do {
            return try await collection.getKey(for: JWKIdentifier(string: "hs256"))
        } catch {
            throw AuthError(.invalidConfiguration, detail: "hs256 secret could not be loaded")
        }
    }

    static func publicKeyVerifier(_ keyConfig: PublicKeyConfig, index: Int) async throws(AuthError) -> any JWTAlgorithm
    {
        let label =
            "public key #\(index) (\(keyConfig.algorithm.rawValue), kid \(keyConfig.kid.map { "\"\($0)\"" } ?? "none"), pem_path \(keyConfig.pemPath))"
        let pem = try readPEM(path: keyConfig.pemPath, label: label)
        if pem.contains("PRIVATE KEY-----") {
            throw AuthError(
                .invalidConfiguration,
                detail: "\(label): the file holds a private key; configure the public key"
            )
        }
        let isCertificate = pem.contains("-----BEGIN CERTIFICATE-----")
        let collection = JWTKeyCollection()
        let kid = JWKIdentifier(string: "key")
        do {
            switch keyConfig.algorithm {
            case .rs256:
                let key =
                    isCertificate
                    ? try Insecure.RSA.PublicKey(certificatePEM: pem) : try Insecure.RSA.PublicKey(pem: pem)
                await collection.add(rsa: key, digestAlgorithm: .sha256, kid: kid)
            case .es256:
                let key = isCertificate ? try ES256PublicKey(certificate: pem) : try ES256PublicKey(pem: pem)
                await collection.add(ecdsa: key, kid: kid)
            }
            return try await collection.getKey(for: kid)
        } catch {
            let expected =
                keyConfig.algorithm == .rs256 ? "an RSA public key of at least 2048 bits" : "a P-256 EC public key"
            throw AuthError(.invalidConfiguration, detail: "\(label): not \(expected) (\(error))")
        }
    }

    static func readPEM(path: String, label: String) throws(AuthError) -> String {
        guard !path.isEmpty else { throw AuthError(.invalidConfiguration, detail: "\(label): pem_path is empty") }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw AuthError(.invalidConfiguration, detail: "\(label): cannot read the file (\(error))")
        }
        guard data.count <= 65_536 else {
            throw AuthError(.invalidConfiguration, detail: "\(label): file larger than 64 KiB")
        }
        guard let pem = String(data: data, encoding: .utf8), pem.contains("-----BEGIN ") else {
            throw AuthError(.invalidConfiguration, detail: "\(label): not a PEM file")
        }
        return pem
    }
}

/// The JWS algorithms the gateway accepts at all; the exact, case-sensitive `alg` spellings.
enum TokenAlgorithm: String, Sendable, Hashable {
    case hs256 = "HS256"
    case rs256 = "RS256"
    case es256 = "ES256"

    init(_ algorithm: PublicKeyAlgorithm) {
        switch algorithm {
        case .rs256: self = .rs256
        case .es256: self = .es256
        }
    }
}
