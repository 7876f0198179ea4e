import Foundation
import GatewayAuth
import JWTKit
import Testing

@Suite("TokenVerifier: valid tokens")
struct ValidTokenTests {
    @Test func mintedTokenVerifies() async throws {
        let verifier = try await hsVerifier()
        let token = try await TokenMinter.hs256(
            secret: testSecret,
            sub: "agent-7",
            role: .agent,
            sessions: ["a", "b"],
            tier: "pro",
            ttlSeconds: 300
        )
        let principal = try await verifier.verify(token)
        #expect(principal.sub == "agent-7")
        #expect(principal.role == .agent)
        #expect(principal.sessions == ["a", "b"])
        #expect(!principal.anySession)
        #expect(principal.tier == "pro")
        let now = Int64(Date().timeIntervalSince1970)
        #expect((now + 298...now + 301).contains(principal.expiresAt))
        #expect(try verifier.verifySync(token) == principal)
    }

    @Test func mintedTokenWithAudienceIssuerAndKid() async throws {
        let verifier = try await hsVerifier {
            $0.audience = "samokoder-gateway"
            $0.issuer = "https://api.samokoder.test"
            $0.hs256KeyID = "platform-1"
        }
        let token = try await TokenMinter.hs256(
            secret: testSecret,
            sub: "u",
            role: .user,
            sessions: ["s"],
            tier: nil,
            ttlSeconds: 60,
            audience: "samokoder-gateway",
            issuer: "https://api.samokoder.test",
            kid: "platform-1"
        )
        let principal = try verifier.verifySync(token)
        #expect(principal.sub == "u" && principal.tier == nil)
    }

    @Test func craftedClaimsMapToPrincipal() async throws {
        let verifier = try await hsVerifier()
        let signer = try await hmacSigner(testSecret)
        let token = try craft(
            header: hs256Header,
            payload: claims(["sessions": #"["*","s9"]"#, "role": #""operator""#]),
            signer: signer
        )
        let principal = try verifier.verifySync(token, at: fixedNow)
        #expect(principal.role == .operator)
        #expect(principal.anySession)
        #expect(principal.sessions == ["s9"])
        #expect(principal.expiresAt == fixedNow + 600)
    }

    @Test func sessionsMayBeAbsentAndTypMayBeAccessTokenTypes() async throws {
        let verifier = try await hsVerifier()
        let signer = try await hmacSigner(testSecret)
        for header in [
            #"{"alg":"HS256"}"#, #"{"alg":"HS256","typ":"at+jwt"}"#, #"{"alg":"HS256","typ":"application/AT+JWT"}"#,
        ] {
            let token = try craft(header: header, payload: claims(["sessions": nil]), signer: signer)
            let principal = try verifier.verifySync(token, at: fixedNow)
            #expect(principal.sessions.isEmpty && !principal.anySession)
        }
    }

    @Test func rs256AndES256VerifyWithAndWithoutKid() async throws {
        let keys = KeyFixture.shared
        let verifier = try await TokenVerifier(
            AuthConfiguration(publicKeys: [
                PublicKeyConfig(kid: "rsa-1", algorithm: .rs256, pemPath: keys.rsaPublicPath),
                PublicKeyConfig(kid: nil, algorithm: .es256, pemPath: keys.ecPublicPath),
            ])
        )
        let rsa = try await rsaSigner(keys.rsaPrivatePEM)
        let ec = try await ecSigner(keys.ecPrivatePEM)
        for header in [#"{"alg":"RS256","kid":"rsa-1"}"#, #"{"alg":"RS256"}"#] {
            #expect(
                try verifier.verifySync(craft(header: header, payload: claims(), signer: rsa), at: fixedNow).sub
                    == "user-1"
            )
        }
        #expect(
            try verifier.verifySync(craft(header: #"{"alg":"ES256"}"#, payload: claims(), signer: ec), at: fixedNow).sub
                == "user-1"
        )
        // HS256 is not configured at all here.
        let hs = try craft(header: hs256Header, payload: claims(), signer: try await hmacSigner(testSecret))
        #expect(refusal(verifier, hs)?.code == .algorithmNotAllowed)
        // A different EC key does not verify.
        let otherEC = try craft(
            header: #"{"alg":"ES256"}"#,
            payload: claims(),
            signer: try await ecSigner(keys.otherECPrivatePEM)
        )
        #expect(refusal(verifier, otherEC)?.code == .badSignature)
    }

    @Test func maxTokenBytesBoundary() async throws {
        let signer = try await hmacSigner(testSecret)
        let token = try craft(
            header: hs256Header,
            payload: claims(["pad": "\"\(String(repeating: "p", count: 200))\""]),
            signer: signer
        )
        let exact = try await hsVerifier { $0.maxTokenBytes = token.utf8.count }
        #expect(try exact.verifySync(token, at: fixedNow).sub == "user-1")
        let smaller = try await hsVerifier { $0.maxTokenBytes = token.utf8.count - 1 }
        #expect(refusal(smaller, token)?.code == .tooLarge)
    }
}

@Suite("A2: missing, empty, malformed and oversized tokens")
struct MalformedTokenTests {
    @Test func emptyTokenIsMissing() async throws {
        #expect(refusal(try await hsVerifier(), "")?.code == .missingToken)
    }

    @Test(arguments: [
        "garbage", "a.b", "a.b.c", "...", "a.b.c.d", ".", "..", "a..c", " . . ",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0", "@@@@.####.$$$$", "eyJhbGciOiJIUzI1NiJ9=.e30.AAAA",
        "eyJhbGciOiJIUzI1NiJ9.e30.AAAA.AAAA", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.AAAA",
    ])
    func malformedShapesAreRefused(token: String) async throws {
        let error = refusal(try await hsVerifier(), token)
        #expect(error?.code == .malformed)
    }

    @Test func base64StandardAlphabetAndPaddingAreRefused() async throws {
        let verifier = try await hsVerifier()
        let signer = try await hmacSigner(testSecret)
        let good = try craft(header: hs256Header, payload: claims(), signer: signer)
        let parts = good.split(separator: ".").map(String.init)
        // Padding on a segment, and a non-canonical last character (non-zero trailing bits).
        #expect(refusal(verifier, parts[0] + "=." + parts[1] + "." + parts[2])?.code == .malformed)
        #expect(
            refusal(verifier, parts[0] + "." + parts[1] + "." + parts[2].replacingOccurrences(of: "-", with: "+"))?.code
                != nil
        )
        // A segment of length 4n+1 cannot be base64url; a longer valid one is just a wrong signature.
        #expect(refusal(verifier, parts[0] + "." + parts[1] + ".AAAAA")?.code == .malformed)
        #expect(refusal(verifier, parts[0] + "." + parts[1] + "." + parts[2] + "A")?.code == .badSignature)
    }

    @Test func headerOrPayloadThatIsNotAnObjectIsRefused() async throws {
        let verifier = try await hsVerifier()
        let signer = try await hmacSigner(testSecret)
        #expect(
            refusal(verifier, try craft(header: #"["HS256"]"#, payload: claims(), signer: signer))?.code == .malformed
        )
        #expect(
            refusal(verifier, try craft(header: #""HS256""#, payload: claims(), signer: signer))?.code == .malformed
        )
        #expect(refusal(verifier, try craft(header: hs256Header, payload: "[]", signer: signer))?.code == .malformed)
        #expect(refusal(verifier, try craft(header: hs256Header, payload: "", signer: signer))?.code == .malformed)
        #expect(
            refusal(verifier, try craft(header: hs256Header, payload: "{\"sub\":", signer: signer))?.code == .malformed
        )
    }

    @Test func hundredKilobyteTokenIsTooLarge() async throws {
        let verifier = try await hsVerifier()
        let signer = try await hmacSigner(testSecret)
        let padding = String(repeating: "x", count: 100_000)
        let big = try craft(header: hs256Header, payload: claims(["pad": "\"\(padding)\""]), signer: signer)
        #expect(big.utf8.count > 100_000)
        #expect(refusal(verifier, big)?.code == .tooLarge)
        // Garbage of the same size is refused by size too, before any parsing.
        #expect(refusal(verifier, String(repeating: "!", count: 100_000))?.code == .tooLarge)
    }
}

@Suite("A3: alg none and stripped signatures")
struct AlgNoneTests {
    @Test(arguments: ["none", "None", "nOnE", "NONE"])
    func algNoneIsRefused(alg: String) async throws {
        let verifier = try await hsVerifier()
        let header = #"{"alg":"\#(alg)","typ":"JWT"}"#
        // Unsigned, as an attacker sends it.
        #expect(
            refusal(verifier, try craft(header: header, payload: claims(), signer: nil))?.code == .algorithmNotAllowed
        )
        // Even with a valid HMAC over the input, the algorithm itself is refused.
        let signed = try craft(header: header, payload: claims(), signer: try await hmacSigner(testSecret))
        #expect(refusal(verifier, signed)?.code == .algorithmNotAllowed)
    }

    @Test func strippedSignatureIsRefused() async throws {
        let verifier = try await hsVerifier()
        let token = try craft(header: hs256Header, payload: claims(), signer: try await hmacSigner(testSecret))
        let stripped = String(token[..<token.lastIndex(of: ".")!]) + "."
        #expect(refusal(verifier, stripped)?.code == .badSignature)
        let noDot = String(token[..<token.lastIndex(of: ".")!])
        #expect(refusal(verifier, noDot)?.code == .malformed)
    }

    @Test(arguments: [
        #"{"typ":"JWT"}"#, #"{"alg":"HS384"}"#, #"{"alg":"HS512"}"#, #"{"alg":"hs256"}"#, #"{"alg":"PS256"}"#,
        #"{"alg":"EdDSA"}"#, #"{"alg":"RS256 "}"#, #"{"alg":""}"#,
    ])
    func missingOrUnknownAlgorithmIsRefused(header: String) async throws {
        let verifier = try await hsVerifier()
        let token = try craft(header: header, payload: claims(), signer: try await hmacSigner(testSecret))
        #expect(refusal(verifier, token)?.code == .algorithmNotAllowed)
    }

    @Test func algOfWrongTypeIsMalformed() async throws {
        let verifier = try await hsVerifier()
        let token = try craft(
            header: #"{"alg":["HS256"]}"#,
            payload: claims(),
            signer: try await hmacSigner(testSecret)
        )
        #expect(refusal(verifier, token)?.code == .malformed)
    }

    @Test func tamperedPayloadOrOtherSecretIsRefused() async throws {
        let verifier = try await hsVerifier()
        let signer = try await hmacSigner(testSecret)
        let token = try craft(header: hs256Header, payload: claims(), signer: signer)
        let parts = token.split(separator: ".").map(String.init)
        let elevated = b64url(claims(["role": #""operator""#]))
        #expect(refusal(verifier, parts[0] + "." + elevated + "." + parts[2])?.code == .badSignature)
        let other = try craft(header: hs256Header, payload: claims(), signer: try await hmacSigner(testSecret + "x"))
        #expect(refusal(verifier, other)?.code == .badSignature)
    }

    @Test func everySingleCharacterMutationIsRefused() async throws {
        let verifier = try await hsVerifier()
        let token = try craft(header: hs256Header, payload: claims(), signer: try await hmacSigner(testSecret))
        var chars = Array(token)
        for index in chars.indices {
            let original = chars[index]
            chars[index] = original == "A" ? "B" : (original == "." ? "x" : "A")
            refusal(verifier, String(chars))
            chars[index] = original
        }
    }
}

@Suite("A4: key confusion")
struct KeyConfusionTests {
    @Test func hs256SignedWithThePublicKeyIsRefused() async throws {
        let keys = KeyFixture.shared
        let rsaOnly = try await TokenVerifier(
            AuthConfiguration(publicKeys: [
                PublicKeyConfig(kid: "rsa-1", algorithm: .rs256, pemPath: keys.rsaPublicPath),
                PublicKeyConfig(kid: "ec-1", algorithm: .es256, pemPath: keys.ecPublicPath),
            ])
        )
        let withSecret = try await TokenVerifier(
            AuthConfiguration(
                hs256Secret: testSecret,
                publicKeys: [
                    PublicKeyConfig(kid: "rsa-1", algorithm: .rs256, pemPath: keys.rsaPublicPath)
                ]
            )
        )
        for keyBytes in [Array(keys.rsaPublicPEM.utf8), keys.rsaPublicDER, Array(keys.ecPublicPEM.utf8)] {
            let signer = try await hmacSigner(keyBytes: keyBytes)
            let noKid = try craft(header: hs256Header, payload: claims(), signer: signer)
            let rsaKid = try craft(header: #"{"alg":"HS256","kid":"rsa-1"}"#, payload: claims(), signer: signer)
            let ecKid = try craft(header: #"{"alg":"HS256","kid":"ec-1"}"#, payload: claims(), signer: signer)
            #expect(refusal(rsaOnly, noKid)?.code == .algorithmNotAllowed)
            #expect(refusal(rsaOnly, rsaKid)?.code == .algorithmNotAllowed)
            #expect(refusal(rsaOnly, ecKid)?.code == .algorithmNotAllowed)
            #expect(refusal(withSecret, noKid)?.code == .badSignature)
            #expect(refusal(withSecret, rsaKid)?.code == .algorithmNotAllowed)
        }
    }

    @Test func algorithmIsPinnedPerKid() async throws {
        let keys = KeyFixture.shared
        let verifier = try await TokenVerifier(
            AuthConfiguration(
                hs256Secret: testSecret,
                hs256KeyID: "hs-1",
                publicKeys: [
                    PublicKeyConfig(kid: "rsa-1", algorithm: .rs256, pemPath: keys.rsaPublicPath),
                    PublicKeyConfig(kid: "ec-1", algorithm: .es256, pemPath: keys.ecPublicPath),
                ]
            )
        )
        let rsa = try await rsaSigner(keys.rsaPrivatePEM)
        let ec = try await ecSigner(keys.ecPrivatePEM)
        // Right key, wrong alg in the header.
        #expect(
            refusal(verifier, try craft(header: #"{"alg":"RS256","kid":"hs-1"}"#, payload: claims(), signer: rsa))?.code
                == .algorithmNotAllowed
        )
        #expect(
            refusal(verifier, try craft(header: #"{"alg":"ES256","kid":"rsa-1"}"#, payload: claims(), signer: ec))?.code
                == .algorithmNotAllowed
        )
        #expect(
            refusal(verifier, try craft(header: #"{"alg":"RS256","kid":"ec-1"}"#, payload: claims(), signer: rsa))?.code
                == .algorithmNotAllowed
        )
        // An ES256 signature presented as RS256 without kid is tried only against RSA keys.
        #expect(
            refusal(verifier, try craft(header: #"{"alg":"RS256"}"#, payload: claims(), signer: ec))?.code
                == .badSignature
        )
        // The right pairs verify.
        #expect(
            try verifier.verifySync(
                craft(header: #"{"alg":"RS256","kid":"rsa-1"}"#, payload: claims(), signer: rsa),
                at: fixedNow
            ).sub == "user-1"
        )
        #expect(
            try verifier.verifySync(
                craft(header: #"{"alg":"ES256","kid":"ec-1"}"#, payload: claims(), signer: ec),
                at: fixedNow
            ).sub == "user-1"
        )
        let hs = try await hmacSigner(testSecret)
        #expect(
            try verifier.verifySync(
                craft(header: #"{"alg":"HS256","kid":"hs-1"}"#, payload: claims(), signer: hs),
                at: fixedNow
            ).sub == "user-1"
        )
        #expect(
            try verifier.verifySync(craft(header: hs256Header, payload: claims(), signer: hs), at: fixedNow).sub
                == "user-1"
        )
    }
}

@Suite("A5: exp, nbf, iat and leeway")
struct TimeClaimTests {
    func token(_ overrides: [String: String?]) async throws -> String {
        try craft(header: hs256Header, payload: claims(overrides), signer: try await hmacSigner(testSecret))
    }

    @Test func expIsRequired() async throws {
        let error = refusal(try await hsVerifier(), try await token(["exp": nil]))
        #expect(error?.code == .missingClaim("exp"))
        #expect(error?.reason == "missing claim: exp")
        #expect(refusal(try await hsVerifier(), try await token(["exp": "null"]))?.code == .missingClaim("exp"))
    }

    @Test func expLeewayBoundary() async throws {
        let verifier = try await hsVerifier()  // leeway 60
        #expect(try verifier.verifySync(try await token(["exp": "\(fixedNow - 59)"]), at: fixedNow).sub == "user-1")
        #expect(refusal(verifier, try await token(["exp": "\(fixedNow - 61)"]))?.code == .expired)
        #expect(refusal(verifier, try await token(["exp": "\(fixedNow - 86_400)"]))?.code == .expired)
        let strict = try await hsVerifier { $0.leewaySeconds = 0 }
        #expect(refusal(strict, try await token(["exp": "\(fixedNow)"]))?.code == .expired)
        #expect(try strict.verifySync(try await token(["exp": "\(fixedNow + 1)"]), at: fixedNow).sub == "user-1")
    }

    @Test func nbfLeewayBoundary() async throws {
        let verifier = try await hsVerifier()
        #expect(try verifier.verifySync(try await token(["nbf": "\(fixedNow + 59)"]), at: fixedNow).sub == "user-1")
        #expect(refusal(verifier, try await token(["nbf": "\(fixedNow + 61)"]))?.code == .notYetValid)
    }

    @Test func iatInTheFuture() async throws {
        let verifier = try await hsVerifier()
        #expect(try verifier.verifySync(try await token(["iat": "\(fixedNow + 59)"]), at: fixedNow).sub == "user-1")
        #expect(refusal(verifier, try await token(["iat": "\(fixedNow + 61)"]))?.code == .notYetValid)
        #expect(
            refusal(
                verifier,
                try await token(["iat": "\(fixedNow + 365 * 86_400)", "exp": "\(fixedNow + 400 * 86_400)"])
            )?.code == .notYetValid
        )
    }

    @Test func realClockExpiry() async throws {
        let verifier = try await hsVerifier()
        let expired = try await TokenMinter.hs256(
            secret: testSecret,
            sub: "u",
            role: .user,
            sessions: [],
            tier: nil,
            ttlSeconds: -120
        )
        #expect(throws: AuthError.self) { try verifier.verifySync(expired) }
        do {
            _ = try await verifier.verify(expired)
            Issue.record("expired token accepted")
        } catch {
            #expect(error.code == .expired)
        }
    }

    @Test(arguments: [#""1800000600""#, "true", "[1800000600]", "{}", "-1", "1e300", "253402300800"])
    func badNumericDatesAreRefused(value: String) async throws {
        let verifier = try await hsVerifier()
        #expect(refusal(verifier, try await token(["exp": value]))?.code == .badClaim("exp"))
        #expect(refusal(verifier, try await token(["nbf": value]))?.code == .badClaim("nbf"))
        #expect(refusal(verifier, try await token(["iat": value]))?.code == .badClaim("iat"))
    }

    @Test func fractionalNumericDatesAreHonoured() async throws {
        let verifier = try await hsVerifier { $0.leewaySeconds = 0 }
        #expect(try verifier.verifySync(try await token(["exp": "\(fixedNow).5"]), at: fixedNow).expiresAt == fixedNow)
    }
}

@Suite("A6: audience, issuer and token type")
struct AudienceIssuerTypeTests {
    func verifier() async throws -> TokenVerifier {
        try await hsVerifier {
            $0.audience = "gateway"
            $0.issuer = "https://api.example"
        }
    }

    func token(_ overrides: [String: String?], header: String = hs256Header) async throws -> String {
        var all: [String: String?] = ["aud": #""gateway""#, "iss": #""https://api.example""#]
        all.merge(overrides) { $1 }
        return try craft(header: header, payload: claims(all), signer: try await hmacSigner(testSecret))
    }

    @Test func matchingAudienceAndIssuerVerify() async throws {
        let verifier = try await verifier()
        #expect(try verifier.verifySync(try await token([:]), at: fixedNow).sub == "user-1")
        #expect(
            try verifier.verifySync(try await token(["aud": #"["other","gateway"]"#]), at: fixedNow).sub == "user-1"
        )
    }

    @Test(arguments: [nil, #""other""#, #"["other"]"#, "[]", "42", #""Gateway""#] as [String?])
    func wrongOrMissingAudience(aud: String?) async throws {
        let overrides: [String: String?] = ["aud": aud]
        #expect(refusal(try await verifier(), try await token(overrides))?.code == .badAudience)
    }

    @Test(arguments: [nil, #""https://evil.example""#, "7", #""https://api.example/""#] as [String?])
    func wrongOrMissingIssuer(iss: String?) async throws {
        let overrides: [String: String?] = ["iss": iss]
        #expect(refusal(try await verifier(), try await token(overrides))?.code == .badIssuer)
    }

    @Test func audienceIgnoredWhenNotConfigured() async throws {
        let verifier = try await hsVerifier()
        #expect(try verifier.verifySync(try await token(["aud": #""anything""#]), at: fixedNow).sub == "user-1")
    }

    @Test(arguments: [
        #"{"alg":"HS256","typ":"refresh+jwt"}"#, #"{"alg":"HS256","typ":"id_token"}"#,
        #"{"alg":"HS256","typ":"JOSE+JSON"}"#, #"{"alg":"HS256","typ":7}"#,
    ])
    func wrongHeaderTypeIsRefused(header: String) async throws {
        #expect(refusal(try await verifier(), try await token([:], header: header))?.code == .badClaim("typ"))
    }

    @Test func idAndRefreshTokensAreRefusedByPayloadType() async throws {
        let verifier = try await verifier()
        #expect(refusal(verifier, try await token(["typ": #""Refresh""#]))?.code == .badClaim("typ"))
        #expect(refusal(verifier, try await token(["typ": #""ID""#]))?.code == .badClaim("typ"))
        #expect(refusal(verifier, try await token(["token_use": #""id""#]))?.code == .badClaim("token_use"))
        #expect(
            try verifier.verifySync(try await token(["typ": #""Bearer""#, "token_use": #""access""#]), at: fixedNow).sub
                == "user-1"
        )
    }
}

@Suite("A7: kid and key references are untrusted")
struct KidTests {
    @Test(arguments: [
        "unknown", "../../dev/null", "/etc/passwd", "' OR '1'='1' --", #"\"; DROP TABLE keys; --"#, "", "hs-1 ", "HS-1",
    ])
    func unknownKidIsRefused(kid: String) async throws {
        let verifier = try await hsVerifier { $0.hs256KeyID = "hs-1" }
        let escaped = kid.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
        let token = try craft(
            header: #"{"alg":"HS256","kid":"\#(escaped)"}"#,
            payload: claims(),
            signer: try await hmacSigner(testSecret)
        )
        #expect(refusal(verifier, token)?.code == .unknownKey)
    }

    @Test func kidNamingAFileIsNeverRead() async throws {
        // The file holds a secret that would verify the token if the verifier loaded keys by kid.
        let directory = makeTemporaryDirectory("kid")
        let attackerSecret = "attacker-controlled-secret-0123456789"
        let path = directory + "/key"
        try attackerSecret.write(toFile: path, atomically: true, encoding: .utf8)
        let verifier = try await hsVerifier()
        let token = try craft(
            header: #"{"alg":"HS256","kid":"\#(path)"}"#,
            payload: claims(),
            signer: try await hmacSigner(attackerSecret)
        )
        #expect(refusal(verifier, token)?.code == .unknownKey)
    }

    @Test func nonStringKidIsMalformed() async throws {
        let token = try craft(
            header: #"{"alg":"HS256","kid":7}"#,
            payload: claims(),
            signer: try await hmacSigner(testSecret)
        )
        #expect(refusal(try await hsVerifier(), token)?.code == .malformed)
    }

    @Test(arguments: [
        #"{"alg":"HS256","jku":"https://evil.test/jwks.json"}"#,
        #"{"alg":"HS256","x5u":"https://evil.test/cert.pem"}"#,
        #"{"alg":"HS256","jwk":{"kty":"oct","k":"c2VjcmV0"}}"#,
        #"{"alg":"HS256","x5c":["MIIB"]}"#,
    ])
    func keyReferenceHeadersAreRefused(header: String) async throws {
        // Validly signed with our secret: the header alone is the reason for refusal.
        let token = try craft(header: header, payload: claims(), signer: try await hmacSigner(testSecret))
        #expect(refusal(try await hsVerifier(), token)?.code == .unknownKey)
    }

    @Test func embeddedJWKCannotSupplyTheKey() async throws {
        let keys = KeyFixture.shared
        let verifier = try await TokenVerifier(
            AuthConfiguration(publicKeys: [PublicKeyConfig(algorithm: .es256, pemPath: keys.ecPublicPath)])
        )
        let attacker = try ES256PrivateKey(pem: keys.otherECPrivatePEM)
        let params = try #require(attacker.parameters)
        let header = #"{"alg":"ES256","jwk":{"kty":"EC","crv":"P-256","x":"\#(params.x)","y":"\#(params.y)"}}"#
        let token = try craft(header: header, payload: claims(), signer: try await ecSigner(keys.otherECPrivatePEM))
        #expect(refusal(verifier, token)?.code == .unknownKey)
        let withoutJWK = try craft(
            header: #"{"alg":"ES256"}"#,
            payload: claims(),
            signer: try await ecSigner(keys.otherECPrivatePEM)
        )
        #expect(refusal(verifier, withoutJWK)?.code == .badSignature)
    }

    @Test func critIsRefused() async throws {
        let token = try craft(
            header: #"{"alg":"HS256","crit":["exp"]}"#,
            payload: claims(),
            signer: try await hmacSigner(testSecret)
        )
        #expect(refusal(try await hsVerifier(), token)?.code == .badClaim("crit"))
    }
}

@Suite("A8: malformed signatures")
struct SignatureShapeTests {
    static let p256Order: [UInt8] = [
        0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
    ]

    @Test func psychicAndWrongLengthECDSASignaturesAreRefused() async throws {
        let keys = KeyFixture.shared
        let verifier = try await TokenVerifier(
            AuthConfiguration(publicKeys: [PublicKeyConfig(kid: "ec", algorithm: .es256, pemPath: keys.ecPublicPath)])
        )
        let header = #"{"alg":"ES256","kid":"ec"}"#
        let valid = try craft(header: header, payload: claims(), signer: try await ecSigner(keys.ecPrivatePEM))
        #expect(try verifier.verifySync(valid, at: fixedNow).sub == "user-1")
        let validSignature = try #require(Data(base64Encoded: base64(fromURL: String(valid.split(separator: ".")[2]))))
        let shapes: [[UInt8]] = [
            [UInt8](repeating: 0, count: 64),  // r = 0, s = 0 (CVE-2022-21449)
            Self.p256Order + Self.p256Order,  // r = n, s = n
            [UInt8](repeating: 0, count: 32) + Array(validSignature.suffix(32)),  // r = 0
            Array(validSignature.prefix(32)) + [UInt8](repeating: 0, count: 32),  // s = 0
            Array(validSignature.prefix(63)),  // one byte short
            Array(validSignature) + [0],  // one byte long
            Array(validSignature) + Array(validSignature),  // doubled
            [0x30, 0x44, 0x02, 0x20] + Array(validSignature.prefix(32)) + [0x02, 0x20]
                + Array(validSignature.suffix(32)),  // DER form
            [0],
        ]
        for signature in shapes {
            let token = try craft(header: header, payload: claims(), signer: nil, signature: signature)
            #expect(refusal(verifier, token)?.code == .badSignature)
        }
    }

    @Test func wrongLengthRSAAndHMACSignaturesAreRefused() async throws {
        let keys = KeyFixture.shared
        let verifier = try await TokenVerifier(
            AuthConfiguration(
                hs256Secret: testSecret,
                publicKeys: [PublicKeyConfig(algorithm: .rs256, pemPath: keys.rsaPublicPath)]
            )
        )
        for length in [1, 31, 33, 255, 257, 512] {
            for header in [hs256Header, #"{"alg":"RS256"}"#] {
                let token = try craft(
                    header: header,
                    payload: claims(),
                    signer: nil,
                    signature: [UInt8](repeating: 0, count: length)
                )
                #expect(refusal(verifier, token)?.code == .badSignature)
            }
        }
        let allZero = try craft(
            header: #"{"alg":"RS256"}"#,
            payload: claims(),
            signer: nil,
            signature: [UInt8](repeating: 0, count: 256)
        )
        #expect(refusal(verifier, allZero)?.code == .badSignature)
        let allOnes = try craft(
            header: #"{"alg":"RS256"}"#,
            payload: claims(),
            signer: nil,
            signature: [UInt8](repeating: 0xFF, count: 256)
        )
        #expect(refusal(verifier, allOnes)?.code == .badSignature)
    }

    func base64(fromURL text: String) -> String {
        var text = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while text.count % 4 != 0 { text += "=" }
        return text
    }
}

@Suite("A9: duplicate keys, bad UTF-8, hostile numbers")
struct HostileJSONTests {
    @Test(arguments: [
        #"{"alg":"HS256","alg":"none"}"#, #"{"alg":"none","alg":"HS256"}"#, #"{"alg":"HS256","alg":"HS256"}"#,
        #"{"alg":"HS256","kid":"a","kid":"b"}"#,
    ])
    func duplicateHeaderKeysAreRefused(header: String) async throws {
        let token = try craft(header: header, payload: claims(), signer: try await hmacSigner(testSecret))
        #expect(refusal(try await hsVerifier(), token)?.code == .malformed)
    }

    @Test func duplicateClaimsAreRefused() async throws {
        let signer = try await hmacSigner(testSecret)
        let verifier = try await hsVerifier()
        for payload in [
            #"{"sub":"a","sub":"b","role":"user","exp":1800000600}"#,
            #"{"sub":"a","role":"user","role":"operator","exp":1800000600}"#,
            #"{"sub":"a","role":"user","exp":1800000600,"exp":9999999999}"#,
            #"{"sub":"a","role":"user","exp":1800000600,"x":{"k":1,"k":2}}"#,
        ] {
            #expect(
                refusal(verifier, try craft(header: hs256Header, payload: payload, signer: signer))?.code == .malformed
            )
        }
    }

    @Test func nonUTF8IsRefused() async throws {
        let signer = try await hmacSigner(testSecret)
        let verifier = try await hsVerifier()
        let badPayload: [UInt8] =
            Array(#"{"sub":""#.utf8) + [0xFF, 0xFE] + Array(#"","role":"user","exp":1800000600}"#.utf8)
        let input = b64url(hs256Header) + "." + b64url(badPayload)
        let token = input + "." + b64url(try signer.sign(Array(input.utf8)))
        #expect(refusal(verifier, token)?.code == .malformed)
        let overlong: [UInt8] = Array(#"{"alg":"HS256","x":""#.utf8) + [0xC0, 0xAF] + Array(#""}"#.utf8)
        let input2 = b64url(overlong) + "." + b64url(claims())
        #expect(refusal(verifier, input2 + "." + b64url(try signer.sign(Array(input2.utf8))))?.code == .malformed)
        for escape in [#"\ud800"#, #"\udc00"#, #"\ud800\u0041"#] {
            let token = try craft(header: hs256Header, payload: claims(["sub": "\"a\(escape)\""]), signer: signer)
            #expect(refusal(verifier, token)?.code == .malformed)
        }
        let rawControl = try craft(header: hs256Header, payload: claims(["sub": "\"a\u{01}b\""]), signer: signer)
        #expect(refusal(verifier, rawControl)?.code == .malformed)
    }

    @Test(arguments: [
        "1e999", "99999999999999999999999999999999", "1e308", "-1e999", "NaN", "Infinity", "0x10", "01", "1.", ".5",
        "+1",
    ])
    func hostileExpValuesAreRefusedWithoutCrashing(value: String) async throws {
        let token = try craft(
            header: hs256Header,
            payload: claims(["exp": value]),
            signer: try await hmacSigner(testSecret)
        )
        let code = refusal(try await hsVerifier(), token)?.code
        #expect(code == .malformed || code == .badClaim("exp"))
    }

    @Test func deepNestingIsRefusedWithoutCrashing() async throws {
        let signer = try await hmacSigner(testSecret)
        let verifier = try await hsVerifier { $0.maxTokenBytes = 1_048_576 }
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        let token = try craft(header: hs256Header, payload: claims(["x": deep]), signer: signer)
        #expect(refusal(verifier, token)?.code == .malformed)
        let headerDeep = try craft(header: #"{"alg":"HS256","x":"# + deep + "}", payload: claims(), signer: signer)
        #expect(refusal(verifier, headerDeep)?.code == .malformed)
    }

    @Test func randomGarbageNeverCrashesAndIsAlwaysRefused() async throws {
        let verifier = try await hsVerifier()
        var generator = SplitMix64(seed: 0x5A4D_4F4B_4F44_4552)
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ {}\"".utf8)
        for _ in 0..<3000 {
            let length = Int(generator.next() % 400)
            let bytes = (0..<length).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] }
            refusal(verifier, String(decoding: bytes, as: UTF8.self))
        }
        // Structured garbage: random JSON-ish segments with a valid signature over them.
        let signer = try await hmacSigner(testSecret)
        let fragments = [
            "{", "}", "[", "]", ",", ":", "\"alg\"", "\"HS256\"", "\"exp\"", "1e9", "null", "\"\\u0000\"", "true",
        ]
        for _ in 0..<1000 {
            let count = Int(generator.next() % 12)
            let payload = (0..<count).map { _ in fragments[Int(generator.next() % UInt64(fragments.count))] }.joined()
            refusal(verifier, try craft(header: hs256Header, payload: payload, signer: signer))
        }
    }
}

@Suite("Claims")
struct ClaimTests {
    func token(_ overrides: [String: String?]) async throws -> String {
        try craft(header: hs256Header, payload: claims(overrides), signer: try await hmacSigner(testSecret))
    }

    @Test func requiredClaims() async throws {
        let verifier = try await hsVerifier()
        #expect(refusal(verifier, try await token(["sub": nil]))?.code == .missingClaim("sub"))
        #expect(refusal(verifier, try await token(["role": nil]))?.code == .missingClaim("role"))
    }

    @Test(arguments: [
        ("sub", #""""#), ("sub", "42"), ("sub", #""a\nb""#), ("sub", "\"\(String(repeating: "x", count: 257))\""),
        ("role", #""admin""#), ("role", #""User""#), ("role", "1"), ("sessions", #""s1""#), ("sessions", "[1]"),
        ("sessions", #"["a",null]"#), ("sessions", "{}"), ("tier", "5"), ("tier", "[]"),
    ])
    func badClaimValues(claim: String, value: String) async throws {
        #expect(refusal(try await hsVerifier(), try await token([claim: value]))?.code == .badClaim(claim))
    }

    @Test func wildcardIsHonouredOnlyForAgentsAndOperators() async throws {
        let verifier = try await hsVerifier()
        let user = try verifier.verifySync(try await token(["sessions": #"["*"]"#]), at: fixedNow)
        #expect(!user.anySession && user.sessions.isEmpty && !user.mayJoin(session: "anything"))
        let agent = try verifier.verifySync(
            try await token(["sessions": #"["*"]"#, "role": #""agent""#]),
            at: fixedNow
        )
        #expect(agent.anySession && agent.mayJoin(session: "anything"))
    }
}

@Suite("Configuration errors")
struct VerifierConfigurationTests {
    func configurationError(_ config: AuthConfiguration) async -> AuthError? {
        do {
            _ = try await TokenVerifier(config)
            Issue.record("configuration accepted")
            return nil
        } catch let error as AuthError {
            #expect(error.code == .invalidConfiguration)
            return error
        } catch {
            Issue.record("unexpected error \(error)")
            return nil
        }
    }

    @Test func noKeyConfigured() async {
        #expect(await configurationError(AuthConfiguration())?.detail?.contains("no verification key") == true)
    }

    @Test func shortSecret() async {
        let error = await configurationError(AuthConfiguration(hs256Secret: String(repeating: "k", count: 31)))
        #expect(error?.detail?.contains("32 bytes") == true)
        #expect(error?.description.contains(String(repeating: "k", count: 31)) == false)
    }

    @Test func missingPEMFileIsNamed() async {
        let path = "/nonexistent/dir/gateway-key.pem"
        let error = await configurationError(
            AuthConfiguration(publicKeys: [PublicKeyConfig(algorithm: .rs256, pemPath: path)])
        )
        #expect(error?.detail?.contains(path) == true)
    }

    @Test func privateKeyIsRefused() async {
        let keys = KeyFixture.shared
        let error = await configurationError(
            AuthConfiguration(publicKeys: [PublicKeyConfig(algorithm: .rs256, pemPath: keys.rsaPrivatePath)])
        )
        #expect(error?.detail?.contains("private key") == true)
        #expect(error?.detail?.contains(keys.rsaPrivatePath) == true)
    }

    @Test func keyOfTheWrongTypeOrSizeIsRefused() async {
        let keys = KeyFixture.shared
        let ecAsRSA = await configurationError(
            AuthConfiguration(publicKeys: [PublicKeyConfig(algorithm: .rs256, pemPath: keys.ecPublicPath)])
        )
        #expect(ecAsRSA?.detail?.contains(keys.ecPublicPath) == true)
        let rsaAsEC = await configurationError(
            AuthConfiguration(publicKeys: [PublicKeyConfig(algorithm: .es256, pemPath: keys.rsaPublicPath)])
        )
        #expect(rsaAsEC?.detail?.contains("P-256") == true)
        let weak = await configurationError(
            AuthConfiguration(publicKeys: [PublicKeyConfig(algorithm: .rs256, pemPath: keys.weakRSAPublicPath)])
        )
        #expect(weak?.detail?.contains("2048") == true)
    }

    @Test func duplicateKidsAndBadLimits() async {
        let keys = KeyFixture.shared
        #expect(
            await configurationError(
                AuthConfiguration(
                    hs256Secret: testSecret,
                    hs256KeyID: "k",
                    publicKeys: [
                        PublicKeyConfig(kid: "k", algorithm: .rs256, pemPath: keys.rsaPublicPath)
                    ]
                )
            )?.detail?.contains("twice") == true
        )
        #expect(await configurationError(AuthConfiguration(hs256Secret: testSecret, leewaySeconds: -1)) != nil)
        #expect(await configurationError(AuthConfiguration(hs256Secret: testSecret, maxTokenBytes: 10)) != nil)
        #expect(await configurationError(AuthConfiguration(hs256Secret: testSecret, audience: "")) != nil)
    }

    @Test func descriptionRedactsTheSecret() {
        let config = AuthConfiguration(hs256Secret: testSecret)
        #expect(!"\(config)".contains(testSecret))
        #expect(!String(reflecting: config).contains(testSecret))
        var dumped = ""
        dump(config, to: &dumped)
        #expect(!dumped.contains(testSecret))
    }

    @Test func minterRefusesShortSecret() async {
        await #expect(throws: AuthError.self) {
            _ = try await TokenMinter.hs256(
                secret: "short",
                sub: "u",
                role: .user,
                sessions: [],
                tier: nil,
                ttlSeconds: 60
            )
        }
    }
}

/// A tiny deterministic PRNG so failures replay.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
