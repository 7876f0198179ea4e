import Foundation

/// The `GATEWAY_*` variables every gateway under test starts with, in-process or as a child: one place, so the
/// launchers cannot drift apart.
public enum GatewayEnvironment {
    /// The HS256 secret of every gateway under test in this process (tokens from ``TestTokens`` use it).
    public static let secret = "integration-test-secret-" + UUID().uuidString

    /// The variables for a gateway on loopback with its own data directory.
    /// - Parameters:
    ///   - dataDir: `GATEWAY_DATA_DIR`.
    ///   - host: `GATEWAY_LISTEN_HOST`, or `nil` to leave it to the configuration file.
    ///   - port: `GATEWAY_LISTEN_PORT` (0: ephemeral), or `nil` to leave it to the configuration file.
    ///   - fsync: `GATEWAY_FSYNC`, or `nil` for the gateway's default.
    ///   - logLevel: `GATEWAY_LOG_LEVEL` (a child's stderr), or `nil` for the default.
    ///   - secret: `GATEWAY_AUTH_HS256_SECRET`, or `nil` for none (keys from a configuration file only).
    ///   - tlsDir: A directory with `cert.pem` and `key.pem` (``TestCertificates``): `GATEWAY_TLS_CERT`/`_KEY`.
    ///   - extra: More variables; they override the ones above.
    public static func variables(
        dataDir: String, host: String? = "127.0.0.1", port: Int? = 0, fsync: String? = "always",
        logLevel: String? = nil, secret: String? = GatewayEnvironment.secret, tlsDir: String? = nil,
        extra: [String: String] = [:]
    ) -> [String: String] {
        var env = ["GATEWAY_DATA_DIR": dataDir]
        if let host { env["GATEWAY_LISTEN_HOST"] = host }
        if let port { env["GATEWAY_LISTEN_PORT"] = String(port) }
        if let fsync { env["GATEWAY_FSYNC"] = fsync }
        if let logLevel { env["GATEWAY_LOG_LEVEL"] = logLevel }
        if let secret { env["GATEWAY_AUTH_HS256_SECRET"] = secret }
        if let tlsDir {
            env["GATEWAY_TLS_CERT"] = tlsDir + "/cert.pem"
            env["GATEWAY_TLS_KEY"] = tlsDir + "/key.pem"
        }
        for (key, value) in extra { env[key] = value }
        return env
    }
}
