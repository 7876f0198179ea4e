/// Why a token was refused, or why the verifier could not be built.
///
/// ``reason`` is short, fixed text chosen by this module (never bytes from the token), so it can go into a
/// WebSocket close reason (close code ``closeCode``, 4001) or an HTTP 401 body. ``description`` adds the
/// internal detail and source location for logs; it never contains the token either.
public struct AuthError: Error, Sendable, CustomStringConvertible {
    /// The kind of failure.
    public enum Code: Sendable, Hashable {
        /// No token, or an empty one.
        case missingToken
        /// Not three base64url segments, bad base64url, header or payload not a strict JSON object,
        /// duplicate JSON keys, invalid UTF-8, or a header field of the wrong type.
        case malformed
        /// Longer than ``AuthConfiguration/maxTokenBytes``; refused before parsing.
        case tooLarge
        /// The signature does not verify with the selected key(s), is empty, or has the wrong length.
        case badSignature
        /// `alg` is `none` (any case), unknown, or not the algorithm pinned to the selected key.
        case algorithmNotAllowed
        /// `kid` names no configured key, or the header carries a key reference (`jku`, `x5u`, `jwk`, `x5c`).
        case unknownKey
        /// `exp` is past, beyond the leeway.
        case expired
        /// `nbf` or `iat` is in the future, beyond the leeway.
        case notYetValid
        /// `aud` is missing or does not name the configured audience.
        case badAudience
        /// `iss` is missing or is not the configured issuer.
        case badIssuer
        /// A required claim is absent (the associated value names it: `exp`, `sub`, `role`).
        case missingClaim(String)
        /// A claim or header parameter has the wrong type or an unacceptable value (named).
        case badClaim(String)
        /// The ``AuthConfiguration`` is unusable (thrown only by ``TokenVerifier/init(_:)`` and ``TokenMinter``).
        case invalidConfiguration
    }

    /// The kind of failure.
    public let code: Code
    /// Internal detail for logs (key path, setting); fixed text, never token contents.
    public let detail: String?
    /// The file that raised the error (`#fileID`).
    public let fileID: String
    /// The line that raised the error.
    public let line: Int

    /// Creates an error.
    /// - Parameters:
    ///   - code: The kind of failure.
    ///   - detail: Internal detail for logs; must not contain the token.
    ///   - fileID: Source file, defaults to the caller's.
    ///   - line: Source line, defaults to the caller's.
    public init(_ code: Code, detail: String? = nil, fileID: String = #fileID, line: Int = #line) {
        self.code = code
        self.detail = detail
        self.fileID = fileID
        self.line = line
    }

    /// Short text safe for a WebSocket close reason (well under 123 bytes) or a 401 body.
    public var reason: String {
        switch code {
        case .missingToken: return "missing token"
        case .malformed: return "malformed token"
        case .tooLarge: return "token too large"
        case .badSignature: return "bad signature"
        case .algorithmNotAllowed: return "algorithm not allowed"
        case .unknownKey: return "unknown signing key"
        case .expired: return "token expired"
        case .notYetValid: return "token not yet valid"
        case .badAudience: return "wrong audience"
        case .badIssuer: return "wrong issuer"
        case .missingClaim(let claim): return "missing claim: \(claim)"
        case .badClaim(let claim): return "invalid claim: \(claim)"
        case .invalidConfiguration: return "invalid auth configuration"
        }
    }

    /// The WebSocket close code for an authentication failure (protocol-v1.md: 4001).
    public var closeCode: UInt16 { 4001 }

    /// `AuthError(<reason>[: <detail>] at <file>:<line>)`.
    public var description: String {
        if let detail {
            return "AuthError(\(reason): \(detail) at \(fileID):\(line))"
        }
        return "AuthError(\(reason) at \(fileID):\(line))"
    }
}
