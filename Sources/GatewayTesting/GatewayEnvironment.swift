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
    ///
    /// With `SAMOKODER_TEST_REDIS_URL` set in the test's environment (scripts/test.sh sets it for its cluster-mode
    /// pass), every gateway under test runs in cluster mode on that Redis, with a key prefix derived from its data
    /// directory: gateways of different tests share nothing, and a gateway restarted on the same directory finds
    /// its sessions again.
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
        if let url = redisURL {
            env["GATEWAY_STORAGE_ENGINE"] = "redis"
            env["GATEWAY_REDIS_URL"] = url
            env["GATEWAY_REDIS_KEY_PREFIX"] = redisPrefix(forDataDir: dataDir)
        }
        for (key, value) in extra { env[key] = value }
        return env
    }

    /// `SAMOKODER_TEST_REDIS_URL`: run every gateway under test in cluster mode on this Redis (nil: local engine).
    public static var redisURL: String? {
        let url = ProcessInfo.processInfo.environment["SAMOKODER_TEST_REDIS_URL"] ?? ""
        return url.isEmpty ? nil : url
    }

    /// A Redis key prefix unique to a data directory (FNV-1a of its path).
    public static func redisPrefix(forDataDir dir: String) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in dir.utf8 {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01b3
        }
        return "t" + String(h, radix: 16)
    }
}
