import Foundation
import GatewayAuth
import GatewayConfig
import TranscriptLog
import Testing

let secret = "config-test-secret-0123456789abcdefghij"  // test only
let secretEnv = ["GATEWAY_AUTH_HS256_SECRET": secret]

/// The repository's `Config/` directory (the test directory may be reached through a symlink).
let configDirectory = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Config")

func temporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("gateway-config-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

func writeFile(_ contents: String, name: String = "gateway.json") throws -> String {
    let url = try temporaryDirectory().appendingPathComponent(name)
    try contents.write(to: url, atomically: true, encoding: .utf8)
    return url.path
}

/// Loads and returns the error, recording an issue if loading succeeded.
func loadError(
    file: String? = nil,
    environment: [String: String] = secretEnv,
    overrides: [String: String] = [:],
    sourceLocation: SourceLocation = #_sourceLocation
) async -> GatewayConfigError? {
    do {
        let config = try await GatewayConfiguration.load(
            configFile: file,
            environment: environment,
            overrides: overrides
        )
        Issue.record("configuration was accepted: \(config)", sourceLocation: sourceLocation)
        return nil
    } catch let error as GatewayConfigError {
        #expect(!error.message.contains(secret), sourceLocation: sourceLocation)
        return error
    } catch {
        Issue.record("unexpected error type: \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

@Suite("GatewayConfiguration defaults and the shipped file")
struct DefaultsTests {
    @Test func noFileAndOnlyTheSecretYieldsDefaults() async throws {
        let config = try await GatewayConfiguration.load(configFile: nil, environment: secretEnv, overrides: [:])
        #expect(config.listeners == [ListenerConfig(host: "127.0.0.1", port: 8080, tls: nil)])
        #expect(config.dataDir == "./data")
        #expect(config.fsync == .always)
        #expect(config.auth.hs256Secret == secret)
        #expect(config.auth.leewaySeconds == 60)
        #expect(config.limits.maxMessageBytes == 1_048_576)
        #expect(config.limits.authTimeoutSeconds == 5)
        #expect(config.limits.maxSessionsPerConnection == 64)
        #expect(config.limits.outboundBufferBytes == 4_194_304)
        #expect(config.limits.maxConnectionsPerSub == 32)
        #expect(config.limits.handshakeTimeoutSeconds == 10)
        #expect(config.limits.tokenRecheckSeconds == 30)
        #expect(config.limits.replayChunkEvents == 256)
        #expect(config.rateLimits.limit(tier: nil, role: "user") == GatewayConfiguration.RateLimit(ratePerSecond: 20, burst: 40))
        #expect(config.rateLimits.limit(tier: nil, role: "agent") == nil)
        #expect(config.rateLimits.limit(tier: nil, role: "operator") == nil)
        #expect(config.rateLimits.strikesBeforeClose == 20)
        #expect(config.origins.allowList.isEmpty)
        #expect(config.shutdownDeadlineSeconds == 10)
        #expect(config.logLevel == "info")
        #expect(!config.diagEcho && config.metricsEnabled && !config.skipDamagedRecords)
        #expect(config.retentionMaxAgeSeconds == nil && config.retentionMaxTotalBytes == nil)
        var expected = GatewayConfiguration.defaults
        expected.auth.hs256Secret = secret
        #expect(config == expected)
    }

    @Test func shippedFileLoadsToTheDefaults() async throws {
        let path = configDirectory.appendingPathComponent("gateway.json").path
        let fromFile = try await GatewayConfiguration.load(configFile: path, environment: secretEnv, overrides: [:])
        let fromDefaults = try await GatewayConfiguration.load(configFile: nil, environment: secretEnv, overrides: [:])
        #expect(fromFile == fromDefaults)
        // No secret is ever a constant in the repository.
        #expect(!(try String(contentsOfFile: path, encoding: .utf8)).contains("hs256_secret"))
    }

    @Test func readmeDocumentsEveryKey() throws {
        let readme = try String(contentsOf: configDirectory.appendingPathComponent("README.md"), encoding: .utf8)
        for descriptor in GatewayConfiguration.knownKeys {
            #expect(readme.contains("| `\(descriptor.key)` |"), "README lacks a row for \(descriptor.key)")
            for name in descriptor.environmentVariables {
                #expect(readme.contains("`\(name)`"), "README lacks \(name)")
            }
        }
        let required = [
            "GATEWAY_LISTEN_HOST", "GATEWAY_LISTEN_PORT", "GATEWAY_DATA_DIR", "GATEWAY_AUTH_HS256_SECRET",
            "GATEWAY_TLS_CERT", "GATEWAY_TLS_KEY", "GATEWAY_FSYNC",
        ]
        let known = Set(GatewayConfiguration.knownKeys.flatMap(\.environmentVariables))
        for name in required { #expect(known.contains(name)) }
    }

    @Test func shippedFileHasEveryKey() throws {
        let data = try Data(contentsOf: configDirectory.appendingPathComponent("gateway.json"))
        let root = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        for descriptor in GatewayConfiguration.knownKeys where descriptor.key != "auth.hs256_secret" {
            var node: Any? = root
            for component in descriptor.key.split(separator: ".") {
                node = (node as? [String: Any])?[String(component)]
            }
            #expect(node != nil, "Config/gateway.json lacks \(descriptor.key)")
        }
    }
}

@Suite("Environment overrides")
struct EnvironmentTests {
    func load(_ environment: [String: String], file: String? = nil) async throws -> GatewayConfiguration {
        try await GatewayConfiguration.load(
            configFile: file,
            environment: environment.merging(secretEnv) { a, _ in a },
            overrides: [:]
        )
    }

    @Test func listenHostAndPort() async throws {
        let config = try await load(["GATEWAY_LISTEN_HOST": "0.0.0.0", "GATEWAY_LISTEN_PORT": "0"])
        #expect(config.listeners == [ListenerConfig(host: "0.0.0.0", port: 0, tls: nil)])
    }

    @Test func dataDir() async throws {
        #expect(try await load(["GATEWAY_DATA_DIR": "/var/lib/gateway"]).dataDir == "/var/lib/gateway")
    }

    @Test func fsyncValues() async throws {
        #expect(try await load(["GATEWAY_FSYNC": "never"]).fsync == .never)
        #expect(try await load(["GATEWAY_FSYNC": "always"]).fsync == .always)
        #expect(try await load(["GATEWAY_FSYNC": "interval"]).fsync == .interval(milliseconds: 50))
        #expect(
            try await load(["GATEWAY_FSYNC": "interval", "GATEWAY_STORAGE_FSYNC_INTERVAL_MS": "200"]).fsync
                == .interval(milliseconds: 200)
        )
        #expect(try await load(["GATEWAY_STORAGE_FSYNC": "never"]).fsync == .never)
        #expect(try await load(["GATEWAY_STORAGE_FSYNC": "never", "GATEWAY_FSYNC": "never"]).fsync == .never)
    }

    @Test func conflictingFsyncSpellings() async {
        let error = await loadError(
            environment: secretEnv.merging(["GATEWAY_STORAGE_FSYNC": "never", "GATEWAY_FSYNC": "always"]) { a, _ in a }
        )
        #expect(
            error?.message.contains("GATEWAY_FSYNC") == true && error?.message.contains("GATEWAY_STORAGE_FSYNC") == true
        )
    }

    @Test func tlsOnWhenBothAreSet() async throws {
        let cert = try writeFile("CERT", name: "cert.pem")
        let key = try writeFile("KEY", name: "key.pem")
        let config = try await load(["GATEWAY_TLS_CERT": cert, "GATEWAY_TLS_KEY": key, "GATEWAY_LISTEN_PORT": "8443"])
        #expect(
            config.listeners == [
                ListenerConfig(host: "127.0.0.1", port: 8443, tls: TLSConfig(certPath: cert, keyPath: key))
            ]
        )
    }

    @Test func tlsWithOnlyOneHalfIsAnError() async throws {
        let cert = try writeFile("CERT", name: "cert.pem")
        let error = await loadError(environment: secretEnv.merging(["GATEWAY_TLS_CERT": cert]) { a, _ in a })
        #expect(error?.message.contains("tls.key") == true && error?.message.contains("GATEWAY_TLS_KEY") == true)
        let keyOnly = await loadError(environment: secretEnv.merging(["GATEWAY_TLS_KEY": cert]) { a, _ in a })
        #expect(keyOnly?.message.contains("GATEWAY_TLS_CERT") == true)
    }

    @Test func tlsFileMustExist() async {
        let error = await loadError(
            environment: secretEnv.merging([
                "GATEWAY_TLS_CERT": "/nonexistent/cert.pem", "GATEWAY_TLS_KEY": "/nonexistent/key.pem",
            ]) { a, _ in a }
        )
        #expect(error?.key == "tls.cert")
        #expect(error?.message.contains("/nonexistent/cert.pem") == true)
    }

    @Test func booleansListsAndOtherScalars() async throws {
        let config = try await load([
            "GATEWAY_DIAG_ECHO": "1", "GATEWAY_METRICS_ENABLED": "false", "GATEWAY_LOG_LEVEL": "debug",
            "GATEWAY_ORIGINS_ALLOW_LIST": "https://app.example, https://admin.example,",
            "GATEWAY_LIMITS_AUTH_TIMEOUT_SECONDS": "0.25", "GATEWAY_RATE_LIMITS_ROLES_USER_RATE_PER_SECOND": "0",
            "GATEWAY_RATE_LIMITS_ROLES_AGENT_RATE_PER_SECOND": "100", "GATEWAY_RATE_LIMITS_ROLES_AGENT_BURST": "200",
            "GATEWAY_STORAGE_RETENTION_MAX_AGE_SECONDS": "86400", "GATEWAY_AUTH_AUDIENCE": "gateway",
        ])
        #expect(config.diagEcho && !config.metricsEnabled && config.logLevel == "debug")
        #expect(config.origins.allowList == ["https://app.example", "https://admin.example"])
        #expect(config.limits.authTimeoutSeconds == 0.25)
        #expect(config.rateLimits.limit(tier: nil, role: "user") == nil)
        #expect(config.rateLimits.limit(tier: nil, role: "agent") == GatewayConfiguration.RateLimit(ratePerSecond: 100, burst: 200))
        #expect(config.retentionMaxAgeSeconds == 86_400)
        #expect(config.auth.audience == "gateway")
    }

    @Test func storageInboxBytes() async throws {
        #expect(try await load([:]).limits.storageInboxBytes == 256 * 1_048_576)
        let config = try await load([
            "GATEWAY_LIMITS_STORAGE_INBOX_BYTES": "2097152", "GATEWAY_LIMITS_MAX_MESSAGE_BYTES": "1048576",
        ])
        #expect(config.limits.storageInboxBytes == 2_097_152)
        #expect(config.redactedDescription.contains("limits.storage_inbox_bytes = 2097152"))
        let file = try await load([:], file: try writeFile(#"{"limits": {"storage_inbox_bytes": 65536, "max_message_bytes": 65536}}"#))
        #expect(file.limits.storageInboxBytes == 65_536)
        // Below the range, and below the largest message (which would then be refused whenever anything is queued).
        let low = await loadError(environment: secretEnv.merging(["GATEWAY_LIMITS_STORAGE_INBOX_BYTES": "1024"]) { a, _ in a })
        #expect(low?.key == "limits.storage_inbox_bytes")
        let belowMessage = await loadError(
            environment: secretEnv.merging(["GATEWAY_LIMITS_STORAGE_INBOX_BYTES": "524288"]) { a, _ in a })
        #expect(belowMessage?.key == "limits.storage_inbox_bytes")
        #expect(belowMessage?.message.contains("limits.max_message_bytes") == true, "\(String(describing: belowMessage))")
    }

    @Test func dedupeMinWindowSeconds() async throws {
        #expect(try await load([:]).dedupeMinWindowSeconds == 300)
        let config = try await load(["GATEWAY_DEDUPE_MIN_WINDOW_SECONDS": "0"])
        #expect(config.dedupeMinWindowSeconds == 0)
        #expect(config.redactedDescription.contains("dedupe.min_window_seconds = 0"))
        let file = try await load([:], file: try writeFile(#"{"dedupe": {"min_window_seconds": 900}}"#))
        #expect(file.dedupeMinWindowSeconds == 900)
        let bad = await loadError(environment: secretEnv.merging(["GATEWAY_DEDUPE_MIN_WINDOW_SECONDS": "-1"]) { a, _ in a })
        #expect(bad?.key == "dedupe.min_window_seconds")
    }

    @Test func emptyValuesCountAsUnset() async throws {
        let config = try await load(["GATEWAY_TLS_CERT": "", "GATEWAY_TLS_KEY": "", "GATEWAY_LISTEN_PORT": ""])
        #expect(config.listeners == [ListenerConfig(host: "127.0.0.1", port: 8080, tls: nil)])
    }

    @Test func unknownGatewayVariablesAreReported() async throws {
        let config = try await load(["GATEWAY_LISTEN_PROT": "9", "HOME": "/root", "GATEWAY_CONFIG": "/etc/gateway.json"])
        #expect(config.unrecognizedEnvironmentVariables == ["GATEWAY_LISTEN_PROT"])
    }
}

@Suite("Precedence: overrides > environment > file > defaults")
struct PrecedenceTests {
    let fileJSON = #"""
        {"listen": {"host": "127.0.0.2", "port": 9000}, "data": {"dir": "/from/file"},
         "storage": {"fsync": "interval", "fsync_interval_ms": 20}, "log": {"level": "warning"}}
        """#

    @Test func fileOverridesDefaults() async throws {
        let config = try await GatewayConfiguration.load(
            configFile: try writeFile(fileJSON),
            environment: secretEnv,
            overrides: [:]
        )
        #expect(config.listeners[0] == ListenerConfig(host: "127.0.0.2", port: 9000, tls: nil))
        #expect(
            config.dataDir == "/from/file" && config.fsync == .interval(milliseconds: 20)
                && config.logLevel == "warning"
        )
    }

    @Test func environmentOverridesFile() async throws {
        let environment = secretEnv.merging(["GATEWAY_LISTEN_PORT": "9100", "GATEWAY_FSYNC": "never"]) { a, _ in a }
        let config = try await GatewayConfiguration.load(
            configFile: try writeFile(fileJSON),
            environment: environment,
            overrides: [:]
        )
        #expect(config.listeners[0] == ListenerConfig(host: "127.0.0.2", port: 9100, tls: nil))
        #expect(config.fsync == .never)
        #expect(config.dataDir == "/from/file")
    }

    @Test func overridesBeatEnvironmentAndFile() async throws {
        let environment = secretEnv.merging(["GATEWAY_LISTEN_PORT": "9100", "GATEWAY_DATA_DIR": "/from/env"]) { a, _ in
            a
        }
        let config = try await GatewayConfiguration.load(
            configFile: try writeFile(fileJSON),
            environment: environment,
            overrides: ["listen.port": "9200", "storage.fsync": "always", "diag.echo": "true"]
        )
        #expect(config.listeners[0].port == 9200)
        #expect(config.dataDir == "/from/env")
        #expect(config.fsync == .always)
        #expect(config.diagEcho)
    }

    @Test func secretFromOverrideOrFile() async throws {
        let other = String(repeating: "z", count: 40)
        let viaOverride = try await GatewayConfiguration.load(
            configFile: nil,
            environment: secretEnv,
            overrides: ["auth.hs256_secret": other]
        )
        #expect(viaOverride.auth.hs256Secret == other)
        let viaFile = try await GatewayConfiguration.load(
            configFile: try writeFile(#"{"auth": {"hs256_secret": "\#(other)"}}"#),
            environment: [:],
            overrides: [:]
        )
        #expect(viaFile.auth.hs256Secret == other)
    }
}

@Suite("Errors name the key")
struct ErrorTests {
    @Test(arguments: ["abc", "70000", "-1", "80.5", "0x50"])
    func badPortFromEnvironment(value: String) async {
        let error = await loadError(environment: secretEnv.merging(["GATEWAY_LISTEN_PORT": value]) { a, _ in a })
        #expect(error?.key == "listen.port")
        #expect(error?.message.contains("listen.port") == true)
        #expect(error?.message.contains("GATEWAY_LISTEN_PORT") == true)
    }

    @Test func badPortFromFileAndOverride() async throws {
        let fromFile = await loadError(file: try writeFile(#"{"listen": {"port": "8080"}}"#))
        #expect(
            fromFile?.message.contains("listen.port") == true
                && fromFile?.message.contains("GATEWAY_LISTEN_PORT") == true
        )
        let outOfRange = await loadError(file: try writeFile(#"{"listen": {"port": 70000}}"#))
        #expect(outOfRange?.message.contains("0...65535") == true)
        let fromOverride = await loadError(overrides: ["listen.port": "abc"])
        #expect(fromOverride?.message.contains("override listen.port") == true)
    }

    @Test func unknownFsyncValue() async throws {
        let fromEnv = await loadError(environment: secretEnv.merging(["GATEWAY_FSYNC": "sometimes"]) { a, _ in a })
        #expect(fromEnv?.key == "storage.fsync")
        #expect(fromEnv?.message.contains("GATEWAY_FSYNC") == true)
        #expect(fromEnv?.message.contains("always, interval, never") == true)
        let fromFile = await loadError(file: try writeFile(#"{"storage": {"fsync": "Always"}}"#))
        #expect(fromFile?.message.contains("storage.fsync") == true)
    }

    @Test func missingSecret() async {
        let error = await loadError(environment: [:])
        #expect(error?.message.contains("GATEWAY_AUTH_HS256_SECRET") == true)
        #expect(error?.message.contains("auth.hs256_secret") == true)
    }

    @Test func secretNotRequiredWithPublicKeys() async throws {
        let pem = try writeFile("-----BEGIN PUBLIC KEY-----\n", name: "key.pem")
        let file = try writeFile(#"{"auth": {"public_keys": [{"kid": "k1", "alg": "ES256", "pem_path": "\#(pem)"}]}}"#)
        let config = try await GatewayConfiguration.load(configFile: file, environment: [:], overrides: [:])
        #expect(config.auth.hs256Secret == nil)
        #expect(config.auth.publicKeys == [PublicKeyConfig(kid: "k1", algorithm: .es256, pemPath: pem)])
    }

    @Test func shortSecretIsRefusedWithoutEchoingIt() async {
        let short = "too-short-secret"
        let error = await loadError(environment: ["GATEWAY_AUTH_HS256_SECRET": short])
        #expect(error?.message.contains("GATEWAY_AUTH_HS256_SECRET") == true)
        #expect(error?.message.contains(short) == false)
    }

    @Test func missingOrInvalidFile() async throws {
        let missing = "/nonexistent/gateway-\(UUID().uuidString).json"
        #expect(await loadError(file: missing)?.message.contains(missing) == true)
        let invalid = try writeFile("{ not json")
        #expect(await loadError(file: invalid)?.message.contains(invalid) == true)
        let array = try writeFile("[]")
        #expect(await loadError(file: array)?.message.contains("object") == true)
    }

    @Test func unknownKeys() async throws {
        #expect(await loadError(file: try writeFile(#"{"listen": {"prot": 1}}"#))?.key == "listen.prot")
        #expect(await loadError(file: try writeFile(#"{"lisen": {"port": 1}}"#))?.key == "lisen")
        #expect(await loadError(overrides: ["listen.prot": "1"])?.key == "listen.prot")
        #expect(await loadError(overrides: ["rate_limits.tiers": "x"])?.message.contains("file") == true)
    }

    @Test func badValuesOfOtherTypes() async throws {
        func envError(_ name: String, _ value: String) async -> GatewayConfigError? {
            await loadError(environment: secretEnv.merging([name: value]) { a, _ in a })
        }
        #expect(await envError("GATEWAY_DIAG_ECHO", "maybe")?.key == "diag.echo")
        #expect(await envError("GATEWAY_LOG_LEVEL", "verbose")?.key == "log.level")
        #expect(await envError("GATEWAY_LIMITS_AUTH_TIMEOUT_SECONDS", "0")?.key == "limits.auth_timeout_seconds")
        #expect(await envError("GATEWAY_LIMITS_AUTH_TIMEOUT_SECONDS", "nan")?.key == "limits.auth_timeout_seconds")
        #expect(await envError("GATEWAY_LISTEN_HOST", " ")?.key == "listen.host")
        #expect(await envError("GATEWAY_RATE_LIMITS_ROLES_USER_BURST", "0")?.key == "rate_limits.roles.user.burst")
        #expect(await envError("GATEWAY_LIMITS_OUTBOUND_BUFFER_BYTES", "65536")?.key == "limits.outbound_buffer_bytes")
        #expect(
            await envError("GATEWAY_AUTH_LEEWAY_SECONDS", "-5")?.message.contains("GATEWAY_AUTH_LEEWAY_SECONDS") == true
        )
        #expect(await loadError(file: try writeFile(#"{"diag": {"echo": 1}}"#))?.key == "diag.echo")
        #expect(
            await loadError(file: try writeFile(#"{"origins": {"allow_list": ["a", 1]}}"#))?.key == "origins.allow_list"
        )
    }
}

@Suite("File-only nested values")
struct NestedValueTests {
    @Test func additionalListenersKeysAndTiers() async throws {
        let directory = try temporaryDirectory()
        let cert = directory.appendingPathComponent("c.pem").path
        let key = directory.appendingPathComponent("k.pem").path
        let pem = directory.appendingPathComponent("rsa.pem").path
        for path in [cert, key, pem] { try "PEM".write(toFile: path, atomically: true, encoding: .utf8) }
        let json = #"""
            {"listen": {"port": 0, "additional": [{"host": "0.0.0.0", "port": 8443, "tls_cert": "\#(cert)", "tls_key": "\#(key)"},
                                                  {"host": "::1", "port": 0}]},
             "auth": {"public_keys": [{"alg": "RS256", "pem_path": "\#(pem)"}]},
             "rate_limits": {"tiers": {"free": {"rate_per_second": 5, "burst": 10}, "pro": {"rate_per_second": 50.5, "burst": 100},
                                       "internal": {"rate_per_second": 0, "burst": 0}}}}
            """#
        let config = try await GatewayConfiguration.load(
            configFile: try writeFile(json),
            environment: secretEnv,
            overrides: [:]
        )
        #expect(
            config.listeners == [
                ListenerConfig(host: "127.0.0.1", port: 0, tls: nil),
                ListenerConfig(host: "0.0.0.0", port: 8443, tls: TLSConfig(certPath: cert, keyPath: key)),
                ListenerConfig(host: "::1", port: 0, tls: nil),
            ]
        )
        #expect(config.auth.publicKeys == [PublicKeyConfig(kid: nil, algorithm: .rs256, pemPath: pem)])
        #expect(config.rateLimits.limit(tier: "free", role: "agent") == GatewayConfiguration.RateLimit(ratePerSecond: 5, burst: 10))
        #expect(config.rateLimits.limit(tier: "pro", role: "user") == GatewayConfiguration.RateLimit(ratePerSecond: 50.5, burst: 100))
        #expect(config.rateLimits.limit(tier: "internal", role: "user") == nil)
        #expect(config.rateLimits.limit(tier: "unknown", role: "user") == GatewayConfiguration.RateLimit(ratePerSecond: 20, burst: 40))
    }

    @Test func badNestedValuesNameTheirPath() async throws {
        func error(_ json: String) async throws -> GatewayConfigError? { await loadError(file: try writeFile(json)) }
        #expect(
            try await error(#"{"listen": {"additional": [{"host": "x", "port": 99999}]}}"#)?.key
                == "listen.additional[0].port"
        )
        #expect(
            try await error(#"{"listen": {"additional": [{"host": "x", "port": 1, "tls_cert": "/a"}]}}"#)?.key
                == "listen.additional[0]"
        )
        #expect(try await error(#"{"listen": {"additional": {"host": "x"}}}"#)?.key == "listen.additional")
        #expect(
            try await error(#"{"auth": {"public_keys": [{"alg": "HS256", "pem_path": "/x"}]}}"#)?.key
                == "auth.public_keys[0].alg"
        )
        #expect(
            try await error(#"{"auth": {"public_keys": [{"alg": "RS256", "pem_path": "/nonexistent.pem"}]}}"#)?.message
                .contains("/nonexistent.pem") == true
        )
        #expect(
            try await error(#"{"auth": {"public_keys": [{"alg": "RS256", "pem": "/x"}]}}"#)?.key
                == "auth.public_keys[0].pem"
        )
        #expect(
            try await error(#"{"rate_limits": {"tiers": {"free": {"rate_per_second": 5}}}}"#)?.key
                == "rate_limits.tiers.free.burst"
        )
        #expect(
            try await error(#"{"rate_limits": {"tiers": {"free": {"rate_per_second": -1, "burst": 1}}}}"#)?.key
                == "rate_limits.tiers.free.rate_per_second"
        )
        #expect(
            try await error(#"{"listen": {"port": 8080, "additional": [{"host": "127.0.0.1", "port": 8080}]}}"#)?
                .message.contains("twice") == true
        )
    }
}

@Suite("Redaction")
struct RedactionTests {
    @Test func secretNeverAppearsInDescriptions() async throws {
        let config = try await GatewayConfiguration.load(configFile: nil, environment: secretEnv, overrides: [:])
        #expect(!config.redactedDescription.contains(secret))
        #expect(config.redactedDescription.contains("auth.hs256_secret = <redacted>"))
        #expect(config.redactedDescription.contains("listen = 127.0.0.1:8080 plain"))
        #expect(!"\(config)".contains(secret))
        #expect(!String(reflecting: config).contains(secret))
        #expect(!"\(config.auth)".contains(secret))
        var dumped = ""
        dump(config, to: &dumped)
        #expect(!dumped.contains(secret))
        dumped = ""
        dump(config.auth, to: &dumped)
        #expect(!dumped.contains(secret))
    }
}
