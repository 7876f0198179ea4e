import CryptoExtras
import Foundation
import GatewayAuth
import JWTKit
import Testing

/// Shared test material. Keys are generated at test time (no private key is committed) and their public
/// halves written as PEM files into a fresh temporary directory.
struct KeyFixture: Sendable {
    static let shared = KeyFixture()

    let directory: String
    let rsaPrivatePEM: String
    let rsaPublicPath: String
    let rsaPublicPEM: String
    let rsaPublicDER: [UInt8]
    let ecPrivatePEM: String
    let ecPublicPath: String
    let ecPublicPEM: String
    let otherECPrivatePEM: String
    let rsaPrivatePath: String
    let weakRSAPublicPath: String

    init() {
        directory = makeTemporaryDirectory("auth-keys")
        // Test setup: failures here are programmer errors, so `try!` is acceptable in tests.
        let rsa = try! _RSA.Signing.PrivateKey(keySize: .bits2048)
        rsaPrivatePEM = rsa.pemRepresentation
        rsaPublicPEM = rsa.publicKey.pemRepresentation
        rsaPublicDER = [UInt8](rsa.publicKey.derRepresentation)
        rsaPublicPath = directory + "/rsa-public.pem"
        rsaPrivatePath = directory + "/rsa-private.pem"
        let ec = ES256PrivateKey()
        ecPrivatePEM = ec.pemRepresentation
        ecPublicPEM = ec.publicKey.pemRepresentation
        ecPublicPath = directory + "/ec-public.pem"
        otherECPrivatePEM = ES256PrivateKey().pemRepresentation
        let weak = try! _RSA.Signing.PrivateKey(unsafeKeySize: .init(bitCount: 1024))
        weakRSAPublicPath = directory + "/rsa-1024-public.pem"
        try! rsaPublicPEM.write(toFile: rsaPublicPath, atomically: true, encoding: .utf8)
        try! rsaPrivatePEM.write(toFile: rsaPrivatePath, atomically: true, encoding: .utf8)
        try! ecPublicPEM.write(toFile: ecPublicPath, atomically: true, encoding: .utf8)
        try! weak.publicKey.pemRepresentation.write(toFile: weakRSAPublicPath, atomically: true, encoding: .utf8)
    }
}

func makeTemporaryDirectory(_ label: String) -> String {
    let path = FileManager.default.temporaryDirectory
        .appendingPathComponent("gateway-\(label)-\(UUID().uuidString)").path
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

let testSecret = "test-secret-0123456789-abcdefghijklmnop"  // 39 bytes, test only
let fixedNow: Int64 = 1_800_000_000

func b64url(_ bytes: some Sequence<UInt8>) -> String {
    Data(bytes).base64EncodedString()
        .replacingOccurrences(of: "+", with: "-")
        .replacingOccurrences(of: "/", with: "_")
        .replacingOccurrences(of: "=", with: "")
}

func b64url(_ text: String) -> String { b64url(Array(text.utf8)) }

/// jwt-kit's signer for raw bytes, so tests can sign any header/payload they craft.
func hmacSigner(_ secret: String) async throws -> any JWTAlgorithm {
    let keys = JWTKeyCollection()
    await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256, kid: "k")
    return try await keys.getKey(for: "k")
}

func hmacSigner(keyBytes: [UInt8]) async throws -> any JWTAlgorithm {
    let keys = JWTKeyCollection()
    await keys.add(hmac: HMACKey(from: keyBytes), digestAlgorithm: .sha256, kid: "k")
    return try await keys.getKey(for: "k")
}

func rsaSigner(_ privatePEM: String) async throws -> any JWTAlgorithm {
    let keys = JWTKeyCollection()
    await keys.add(rsa: try Insecure.RSA.PrivateKey(pem: privatePEM), digestAlgorithm: .sha256, kid: "k")
    return try await keys.getKey(for: "k")
}

func ecSigner(_ privatePEM: String) async throws -> any JWTAlgorithm {
    let keys = JWTKeyCollection()
    await keys.add(ecdsa: try ES256PrivateKey(pem: privatePEM), kid: "k")
    return try await keys.getKey(for: "k")
}

/// Builds `b64(header).b64(payload).b64(signature)`; the signature is computed by `signer` over the
/// signing input unless `signature` is given (raw bytes), so tests can craft any shape of token.
func craft(
    header: String,
    payload: String,
    signer: (any JWTAlgorithm)?,
    signature: [UInt8]? = nil
) throws -> String {
    let input = b64url(header) + "." + b64url(payload)
    let sig = try signature ?? signer.map { try $0.sign(Array(input.utf8)) } ?? []
    return input + "." + b64url(sig)
}

/// A well-formed claim set at `fixedNow`, with replacements (`nil` removes a claim).
func claims(_ overrides: [String: String?] = [:]) -> String {
    var fields: [String: String] = [
        "sub": "\"user-1\"",
        "role": "\"user\"",
        "sessions": "[\"s1\",\"s2\"]",
        "exp": "\(fixedNow + 600)",
        "iat": "\(fixedNow)",
    ]
    for (key, value) in overrides {
        fields[key] = value
    }
    let body = fields.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\($0.value)" }.joined(separator: ",")
    return "{\(body)}"
}

let hs256Header = #"{"alg":"HS256","typ":"JWT"}"#

func hsVerifier(_ configure: (inout AuthConfiguration) -> Void = { _ in }) async throws -> TokenVerifier {
    var config = AuthConfiguration(hs256Secret: testSecret)
    configure(&config)
    return try await TokenVerifier(config)
}

/// Verifies at `fixedNow` and returns the refusal; records an issue if the token was accepted.
/// Also checks that the refusal never echoes the token and fits in a WebSocket close reason.
@discardableResult
func refusal(
    _ verifier: TokenVerifier,
    _ token: String,
    at now: Int64 = fixedNow,
    sourceLocation: SourceLocation = #_sourceLocation
) -> AuthError? {
    do {
        let principal = try verifier.verifySync(token, at: now)
        Issue.record("token was accepted as \(principal)", sourceLocation: sourceLocation)
        return nil
    } catch {
        #expect(error.reason.utf8.count <= 123, sourceLocation: sourceLocation)
        for segment in token.split(separator: ".") where segment.count >= 8 {
            #expect(!error.reason.contains(segment), sourceLocation: sourceLocation)
            #expect(!error.description.contains(segment), sourceLocation: sourceLocation)
        }
        return error
    }
}
