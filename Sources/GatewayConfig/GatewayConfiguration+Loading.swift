import TranscriptLog
import Configuration
import GatewayAuth
import Foundation

extension GatewayConfiguration {
    /// Loads and validates the configuration.
    ///
    /// Precedence, highest first: `overrides` (dotted keys, e.g. `["listen.port": "0"]`, from the command
    /// line), then `GATEWAY_*` variables in `environment` (`GATEWAY_<SECTION>_<KEY>`, plus the alias
    /// `GATEWAY_FSYNC` for `storage.fsync`), then the file, then the built-in defaults. Nested and list
    /// values (`listen.additional`, `auth.public_keys`, `rate_limits.tiers`) come from the file only;
    /// `origins.allow_list` is comma-separated in the environment. Empty environment values count as unset.
    ///
    /// Keys read (see `Config/README.md` for types, defaults and meaning):
    /// `listen.host`, `listen.port`, `listen.additional`, `tls.cert`, `tls.key`, `data.dir`, `storage.fsync`,
    /// `storage.fsync_interval_ms`, `storage.commit_window_us`, `storage.segment_max_bytes`, `storage.retention_max_age_seconds`,
    /// `storage.retention_max_total_bytes`, `storage.skip_damaged_records`, `auth.hs256_secret` (secret),
    /// `auth.hs256_kid`, `auth.public_keys`, `auth.leeway_seconds`, `auth.audience`, `auth.issuer`,
    /// `auth.max_token_bytes`, `limits.*`, `rate_limits.*`, `origins.allow_list`, `shutdown.deadline_seconds`,
    /// `log.level`, `diag.echo`, `metrics.enabled`.
    ///
    /// - Parameters:
    ///   - configFile: Path of the JSON file, or `nil` for none (defaults only).
    ///   - environment: The process environment (only `GATEWAY_*` entries are read).
    ///   - overrides: Command-line overrides by dotted key.
    /// - Returns: The validated configuration.
    /// - Throws: ``GatewayConfigError`` naming the key (file and environment spelling): a missing file, invalid
    ///   JSON, an unknown key, a value of the wrong type, out of range or not one of the allowed values, a
    ///   missing `auth.hs256_secret` (unless public keys are configured), `tls.cert` without `tls.key`, a
    ///   missing TLS or PEM file, or inconsistent limits.
    public static func load(
        configFile: String?,
        environment: [String: String],
        overrides: [String: String]
    ) async throws -> GatewayConfiguration {
        let file = try configFile.map(ConfigFile.load(path:)) ?? .none

        var env: [String: String] = [:]
        var unrecognized: [String] = []
        for (name, value) in environment where name.hasPrefix("GATEWAY_") {
            guard ConfigKeys.environmentNames.contains(name) else {
                if !ConfigKeys.reservedEnvironmentNames.contains(name) { unrecognized.append(name) }
                continue
            }
            if !value.isEmpty { env[name] = value }
        }
        // A key with two environment spellings (canonical and short alias) must not get two different values.
        for (key, canonicalName, aliasName) in [
            ("cluster.node_id", "GATEWAY_CLUSTER_NODE_ID", "GATEWAY_NODE_ID"),
            ("storage.fsync", "GATEWAY_STORAGE_FSYNC", "GATEWAY_FSYNC"),
        ] {
            if let canonical = env[canonicalName], let alias = env[aliasName], canonical != alias {
                throw GatewayConfigError(
                    key: key, environmentVariables: [canonicalName, aliasName],
                    message: "\(key) is set twice with different values: \(canonicalName)=\(canonical) and \(aliasName)=\(alias)"
                )
            }
        }

        // Overrides are fed through an EnvironmentVariablesProvider (unprefixed names) so that their string
        // values are parsed exactly like environment values.
        var overrideVariables: [String: String] = [:]
        for (key, value) in overrides {
            guard let descriptor = ConfigKeys.byKey[key] else {
                throw GatewayConfigError(key: key, message: "unknown override key \(key) (see Config/README.md)")
            }
            guard !descriptor.fileOnly else {
                throw GatewayConfigError(key: key, message: "\(key) can only be set in the configuration file")
            }
            overrideVariables[String(ConfigKeyDescriptor.environmentName(for: key).dropFirst("GATEWAY_".count))] = value
        }

        let secretKey = "auth.hs256_secret"
        let environmentProvider = EnvironmentVariablesProvider(
            environmentVariables: env,
            secretsSpecifier: .specific([ConfigKeyDescriptor.environmentName(for: secretKey)])
        )
        let reader = ConfigReader(providers: [
            EnvironmentVariablesProvider(
                environmentVariables: overrideVariables,
                secretsSpecifier: .specific(["AUTH_HS256_SECRET"])
            ),
            environmentProvider.prefixKeys(with: "gateway"),
            // The short aliases GATEWAY_FSYNC for storage.fsync and GATEWAY_NODE_ID for cluster.node_id; every other
            // key maps to its canonical name again.
            environmentProvider.mapKeys { key in
                switch key.components {
                case ["storage", "fsync"]: AbsoluteConfigKey(["gateway", "fsync"])
                case ["cluster", "node_id"]: AbsoluteConfigKey(["gateway", "node_id"])
                default: key.prepending("gateway")
                }
            },
            InMemoryProvider(name: file.source, values: file.scalars),
        ])
        let values = ValueResolver(reader: reader, file: file, environment: env, overrides: overrides)
        var config = try await values.configuration()
        config.unrecognizedEnvironmentVariables = unrecognized.sorted()
        return config
    }
}

/// Reads each key through the `ConfigReader` and turns every failure into a ``GatewayConfigError`` that
/// names the key, its environment spelling and where the bad value came from.
struct ValueResolver {
    let reader: ConfigReader
    let file: ConfigFile
    let environment: [String: String]
    let overrides: [String: String]

    func descriptor(_ key: String) -> ConfigKeyDescriptor {
        guard let descriptor = ConfigKeys.byKey[key] else {
            preconditionFailure("\(key) is not in ConfigKeys.scalars")  // programmer error, not input
        }
        return descriptor
    }

    /// Where the effective value of `descriptor` comes from, and its raw text (for messages).
    func origin(of descriptor: ConfigKeyDescriptor) -> (source: String, raw: String?) {
        if let value = overrides[descriptor.key] { return ("override \(descriptor.key)", value) }
        for name in descriptor.environmentVariables {
            if let value = environment[name] { return ("environment \(name)", value) }
        }
        return (file.source, nil)
    }

    func invalid(_ descriptor: ConfigKeyDescriptor, _ problem: String, value: String? = nil) -> GatewayConfigError {
        let (source, raw) = origin(of: descriptor)
        var shown = ""
        if !descriptor.isSecret, let text = value ?? raw {
            shown = " \"\(text.count > 80 ? String(text.prefix(80)) + "…" : text)\""
        }
        return GatewayConfigError(
            key: descriptor.key,
            environmentVariables: descriptor.environmentVariables,
            message: "invalid value\(shown) for \(descriptor) from \(source): \(problem)"
        )
    }

    func string(_ key: String) async throws -> String? {
        let descriptor = descriptor(key)
        let value: String?
        do {
            value = try await reader.fetchString(forKey: ConfigKey(key), isSecret: descriptor.isSecret)
        } catch {
            throw invalid(descriptor, "expected \(descriptor.kind?.expectation ?? "a string")")
        }
        guard let value else { return nil }
        switch descriptor.kind {
        case .string(let nonEmpty)? where nonEmpty:
            guard !value.trimmingCharacters(in: .whitespaces).isEmpty else {
                throw invalid(descriptor, "must not be empty")
            }
        case .choice(let choices)?:
            guard choices.contains(value) else {
                throw invalid(descriptor, "expected one of \(choices.joined(separator: ", "))")
            }
        default:
            break
        }
        return value
    }

    func int(_ key: String) async throws -> Int? {
        let descriptor = descriptor(key)
        guard case .int(let range)? = descriptor.kind else { preconditionFailure("\(key) is not an int key") }
        let value: Int?
        do {
            value = try await reader.fetchInt(forKey: ConfigKey(key))
        } catch {
            throw invalid(descriptor, "expected \(ConfigKind.int(range).expectation)")
        }
        guard let value else { return nil }
        guard range.contains(value) else {
            throw invalid(descriptor, "expected \(ConfigKind.int(range).expectation)", value: String(value))
        }
        return value
    }

    func double(_ key: String) async throws -> Double? {
        let descriptor = descriptor(key)
        guard case .double(let range)? = descriptor.kind else { preconditionFailure("\(key) is not a double key") }
        let value: Double?
        do {
            value = try await reader.fetchDouble(forKey: ConfigKey(key))
        } catch {
            throw invalid(descriptor, "expected \(ConfigKind.double(range).expectation)")
        }
        guard let value else { return nil }
        guard value.isFinite, range.contains(value) else {
            throw invalid(descriptor, "expected \(ConfigKind.double(range).expectation)", value: String(value))
        }
        return value
    }

    func bool(_ key: String) async throws -> Bool? {
        let descriptor = descriptor(key)
        do {
            return try await reader.fetchBool(forKey: ConfigKey(key))
        } catch {
            throw invalid(descriptor, "expected \(ConfigKind.bool.expectation)")
        }
    }

    func stringList(_ key: String) async throws -> [String]? {
        let descriptor = descriptor(key)
        let value: [String]?
        do {
            value = try await reader.fetchStringArray(forKey: ConfigKey(key))
        } catch {
            throw invalid(descriptor, "expected \(ConfigKind.stringList.expectation)")
        }
        // "a, b," in the environment: drop empty elements left by separators.
        return value.map { $0.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
    }

    func configuration() async throws -> GatewayConfiguration {
        let defaults = GatewayConfiguration.defaults
        var config = defaults

        // Listeners: the primary one from listen.* and tls.*, then listen.additional.
        let primaryDefault = defaults.listeners[0]
        let host = try await string("listen.host") ?? primaryDefault.host
        let port = try await int("listen.port") ?? primaryDefault.port
        let cert = try await string("tls.cert")
        let key = try await string("tls.key")
        let tls: TLSConfig?
        switch (cert, key) {
        case (let cert?, let key?):
            try requireFile(cert, descriptor("tls.cert"))
            try requireFile(key, descriptor("tls.key"))
            tls = TLSConfig(certPath: cert, keyPath: key)
        case (nil, nil):
            tls = nil
        case (_?, nil):
            throw invalid(
                descriptor("tls.key"),
                "tls.cert is set, so tls.key (GATEWAY_TLS_KEY) must be set too",
                value: ""
            )
        case (nil, _?):
            throw invalid(
                descriptor("tls.cert"),
                "tls.key is set, so tls.cert (GATEWAY_TLS_CERT) must be set too",
                value: ""
            )
        }
        config.listeners = [ListenerConfig(host: host, port: port, tls: tls)] + (try additionalListeners())
        var seen = Set<String>()
        for listener in config.listeners where listener.port != 0 {
            guard seen.insert("\(listener.host):\(listener.port)").inserted else {
                throw GatewayConfigError(
                    key: "listen.additional",
                    message:
                        "listener \(listener.host):\(listener.port) is configured twice (listen.host/listen.port and listen.additional)"
                )
            }
        }

        // Storage.
        config.dataDir = try await string("data.dir") ?? defaults.dataDir
        let interval = try await int("storage.fsync_interval_ms") ?? 50
        switch try await string("storage.fsync") ?? "always" {
        case "interval": config.fsync = .interval(milliseconds: interval)
        case "never": config.fsync = .never
        default: config.fsync = .always
        }
        config.commitWindowMicroseconds =
            try await int("storage.commit_window_us") ?? defaults.commitWindowMicroseconds
        config.segmentMaxBytes = try await int("storage.segment_max_bytes") ?? defaults.segmentMaxBytes
        config.retentionMaxAgeSeconds = try await int("storage.retention_max_age_seconds").flatMap {
            $0 == 0 ? nil : $0
        }
        config.retentionMaxTotalBytes = try await int("storage.retention_max_total_bytes").flatMap {
            $0 == 0 ? nil : $0
        }
        config.skipDamagedRecords = try await bool("storage.skip_damaged_records") ?? false
        config.dedupeMinWindowSeconds = try await int("dedupe.min_window_seconds") ?? defaults.dedupeMinWindowSeconds

        // Cluster mode (storage.engine = redis).
        config.storageEngine = StorageEngine(rawValue: try await string("storage.engine") ?? "local") ?? .local
        var redis = RedisSettings()
        if let url = try await string("redis.url") {
            guard let endpoint = RedisSettings.Endpoint(url: url) else {
                throw invalid(descriptor("redis.url"), "expected redis://HOST:PORT[/DB] (no user, password or TLS)")
            }
            redis.endpoint = endpoint
        }
        redis.keyPrefix = try await string("redis.key_prefix") ?? redis.keyPrefix
        guard !redis.keyPrefix.contains(where: { $0 == "{" || $0 == "}" || $0 == " " }) else {
            throw invalid(descriptor("redis.key_prefix"), "must not contain braces or spaces (keys are hash-tagged by session)")
        }
        redis.requireFsync = try await bool("redis.require_fsync") ?? redis.requireFsync
        redis.timeoutSeconds = try await double("redis.timeout_seconds") ?? redis.timeoutSeconds
        redis.dedupeWindow = try await int("redis.dedupe_window") ?? redis.dedupeWindow
        config.redis = redis
        config.nodeID = try await string("cluster.node_id")
        if let node = config.nodeID, !node.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == ".") }) || (config.nodeID?.count ?? 0) > 64 {
            throw invalid(descriptor("cluster.node_id"), "expected 1-64 characters of A-Z a-z 0-9 . _ -", value: node)
        }

        // Auth.
        var auth = AuthConfiguration()
        auth.hs256Secret = try await string("auth.hs256_secret")
        auth.hs256KeyID = try await string("auth.hs256_kid")
        auth.publicKeys = try publicKeys()
        auth.leewaySeconds = try await int("auth.leeway_seconds") ?? auth.leewaySeconds
        auth.audience = try await string("auth.audience")
        auth.issuer = try await string("auth.issuer")
        auth.maxTokenBytes = try await int("auth.max_token_bytes") ?? auth.maxTokenBytes
        if let secret = auth.hs256Secret {
            guard secret.utf8.count >= 32 else {
                throw invalid(
                    descriptor("auth.hs256_secret"),
                    "must be at least 32 bytes (256 bits); e.g. `openssl rand -hex 32`"
                )
            }
        } else if auth.publicKeys.isEmpty {
            let secret = descriptor("auth.hs256_secret")
            throw GatewayConfigError(
                key: secret.key,
                environmentVariables: secret.environmentVariables,
                message:
                    "missing required value auth.hs256_secret (env GATEWAY_AUTH_HS256_SECRET): set the HS256 secret "
                    + "(at least 32 bytes) or configure auth.public_keys in the file"
            )
        }
        if auth.hs256KeyID != nil, auth.hs256Secret == nil {
            throw invalid(descriptor("auth.hs256_kid"), "auth.hs256_kid needs auth.hs256_secret")
        }
        config.auth = auth

        // Limits.
        var limits = LimitSettings()
        limits.maxMessageBytes = try await int("limits.max_message_bytes") ?? limits.maxMessageBytes
        limits.authTimeoutSeconds = try await double("limits.auth_timeout_seconds") ?? limits.authTimeoutSeconds
        limits.maxSessionsPerConnection =
            try await int("limits.max_sessions_per_connection") ?? limits.maxSessionsPerConnection
        limits.outboundBufferBytes = try await int("limits.outbound_buffer_bytes") ?? limits.outboundBufferBytes
        limits.maxConnectionsPerSub = try await int("limits.max_connections_per_sub") ?? limits.maxConnectionsPerSub
        limits.handshakeTimeoutSeconds =
            try await double("limits.handshake_timeout_seconds") ?? limits.handshakeTimeoutSeconds
        limits.tokenRecheckSeconds = try await double("limits.token_recheck_seconds") ?? limits.tokenRecheckSeconds
        limits.replayChunkEvents = try await int("limits.replay_chunk_events") ?? limits.replayChunkEvents
        limits.writePacingMaxMicroseconds =
            try await int("limits.write_pacing_max_us") ?? limits.writePacingMaxMicroseconds
        limits.readsPerTurn = try await int("limits.reads_per_turn") ?? limits.readsPerTurn
        limits.storageInboxBytes = try await int("limits.storage_inbox_bytes") ?? limits.storageInboxBytes
        limits.totalOutboundBytes = try await int("limits.total_outbound_bytes") ?? limits.totalOutboundBytes
        guard limits.totalOutboundBytes == 0 || limits.totalOutboundBytes >= limits.outboundBufferBytes else {
            throw invalid(
                descriptor("limits.total_outbound_bytes"),
                "must be 0 (off) or at least limits.outbound_buffer_bytes (\(limits.outboundBufferBytes)), or one full queue would always be over it",
                value: String(limits.totalOutboundBytes)
            )
        }
        guard limits.outboundBufferBytes >= limits.maxMessageBytes else {
            throw invalid(
                descriptor("limits.outbound_buffer_bytes"),
                "must be at least limits.max_message_bytes (\(limits.maxMessageBytes)), or no maximal event could ever be delivered",
                value: String(limits.outboundBufferBytes)
            )
        }
        guard limits.storageInboxBytes >= limits.maxMessageBytes else {
            throw invalid(
                descriptor("limits.storage_inbox_bytes"),
                "must be at least limits.max_message_bytes (\(limits.maxMessageBytes)), or a maximal event is refused whenever anything else is queued",
                value: String(limits.storageInboxBytes)
            )
        }
        guard config.segmentMaxBytes >= limits.maxMessageBytes + 65_536 else {
            throw invalid(
                descriptor("storage.segment_max_bytes"),
                "must be at least limits.max_message_bytes + 65536 (\(limits.maxMessageBytes + 65_536)) so a maximal record fits",
                value: String(config.segmentMaxBytes)
            )
        }
        config.limits = limits

        // Token streams.
        var streams = StreamSettings()
        streams.idleTimeoutSeconds = try await double("streams.idle_timeout_seconds") ?? streams.idleTimeoutSeconds
        streams.maxPerSession = try await int("streams.max_per_session") ?? streams.maxPerSession
        config.streams = streams

        // Rate limits.
        var rateLimits = RateLimitSettings()
        rateLimits.strikesBeforeClose =
            try await int("rate_limits.strikes_before_close") ?? rateLimits.strikesBeforeClose
        for role in ["user", "agent", "operator"] {
            let fallback = rateLimits.roleDefaults[role] ?? .unlimited
            let rate = try await double("rate_limits.roles.\(role).rate_per_second") ?? fallback.ratePerSecond
            let burst = try await int("rate_limits.roles.\(role).burst") ?? fallback.burst
            if rate > 0, burst < 1 {
                throw invalid(
                    descriptor("rate_limits.roles.\(role).burst"),
                    "must be at least 1 when the rate is above 0",
                    value: String(burst)
                )
            }
            rateLimits.roleDefaults[role] = rate == 0 ? .unlimited : GatewayConfiguration.RateLimit(ratePerSecond: rate, burst: burst)
        }
        rateLimits.tiers = try tiers()
        config.rateLimits = rateLimits

        // The rest.
        config.origins.allowList = try await stringList("origins.allow_list") ?? []
        config.shutdownDeadlineSeconds =
            try await double("shutdown.deadline_seconds") ?? defaults.shutdownDeadlineSeconds
        config.logLevel = try await string("log.level") ?? defaults.logLevel
        config.diagEcho = try await bool("diag.echo") ?? defaults.diagEcho
        config.metricsEnabled = try await bool("metrics.enabled") ?? defaults.metricsEnabled
        config.webRoot = try await string("web.root") ?? defaults.webRoot
        config.eventLoop = try await string("server.event_loop") ?? defaults.eventLoop
        return config
    }

    func requireFile(_ path: String, _ descriptor: ConfigKeyDescriptor) throws {
        var isDirectory = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory else {
            throw invalid(descriptor, "no such file", value: path)
        }
    }

    // MARK: - File-only values

    func nestedError(_ path: String, _ problem: String) -> GatewayConfigError {
        GatewayConfigError(key: path, message: "invalid value for \(path) (file only) in \(file.source): \(problem)")
    }

    func entries(_ key: String) throws -> [[String: JSONTree]] {
        guard let value = file.nested[key] else { return [] }
        guard case .array(let elements) = value else { throw nestedError(key, "expected an array of objects") }
        return try elements.enumerated().map { index, element in
            guard case .object(let object) = element else {
                throw nestedError("\(key)[\(index)]", "expected an object")
            }
            return object
        }
    }

    func check(_ object: [String: JSONTree], at path: String, allowed: Set<String>) throws {
        for name in object.keys.sorted() where !allowed.contains(name) {
            throw nestedError("\(path).\(name)", "unknown key (allowed: \(allowed.sorted().joined(separator: ", ")))")
        }
    }

    func optionalString(_ object: [String: JSONTree], _ name: String, at path: String) throws -> String? {
        switch object[name] {
        case nil, .null?: return nil
        case .string(let value)? where !value.isEmpty: return value
        default: throw nestedError("\(path).\(name)", "expected a non-empty string")
        }
    }

    func additionalListeners() throws -> [ListenerConfig] {
        try entries("listen.additional").enumerated().map { index, object in
            let path = "listen.additional[\(index)]"
            try check(object, at: path, allowed: ["host", "port", "tls_cert", "tls_key"])
            guard let host = try optionalString(object, "host", at: path) else {
                throw nestedError("\(path).host", "required")
            }
            guard case .int(let port)? = object["port"], (0...65_535).contains(port) else {
                throw nestedError("\(path).port", "expected an integer in 0...65535")
            }
            let cert = try optionalString(object, "tls_cert", at: path)
            let key = try optionalString(object, "tls_key", at: path)
            switch (cert, key) {
            case (let cert?, let key?):
                for (name, file) in [("tls_cert", cert), ("tls_key", key)] {
                    var isDirectory = false
                    guard FileManager.default.fileExists(atPath: file, isDirectory: &isDirectory), !isDirectory else {
                        throw nestedError("\(path).\(name)", "no such file \"\(file)\"")
                    }
                }
                return ListenerConfig(host: host, port: port, tls: TLSConfig(certPath: cert, keyPath: key))
            case (nil, nil):
                return ListenerConfig(host: host, port: port, tls: nil)
            default:
                throw nestedError(path, "tls_cert and tls_key must be set together")
            }
        }
    }

    func publicKeys() throws -> [PublicKeyConfig] {
        try entries("auth.public_keys").enumerated().map { index, object in
            let path = "auth.public_keys[\(index)]"
            try check(object, at: path, allowed: ["kid", "alg", "pem_path"])
            guard case .string(let algName)? = object["alg"],
                let algorithm = PublicKeyAlgorithm(rawValue: algName)
            else {
                throw nestedError("\(path).alg", "expected one of RS256, ES256")
            }
            guard let pemPath = try optionalString(object, "pem_path", at: path) else {
                throw nestedError("\(path).pem_path", "required")
            }
            var isDirectory = false
            guard FileManager.default.fileExists(atPath: pemPath, isDirectory: &isDirectory), !isDirectory else {
                throw nestedError("\(path).pem_path", "no such file \"\(pemPath)\"")
            }
            return PublicKeyConfig(
                kid: try optionalString(object, "kid", at: path),
                algorithm: algorithm,
                pemPath: pemPath
            )
        }
    }

    func tiers() throws -> [String: GatewayConfiguration.RateLimit] {
        guard let value = file.nested["rate_limits.tiers"] else { return [:] }
        guard case .object(let tiers) = value else {
            throw nestedError("rate_limits.tiers", "expected an object keyed by tier name")
        }
        var result: [String: GatewayConfiguration.RateLimit] = [:]
        for (name, entry) in tiers {
            let path = "rate_limits.tiers.\(name)"
            guard !name.isEmpty, case .object(let object) = entry else {
                throw nestedError(path, "expected an object {\"rate_per_second\": number, \"burst\": integer}")
            }
            try check(object, at: path, allowed: ["rate_per_second", "burst"])
            let rate: Double
            switch object["rate_per_second"] {
            case .int(let value)?: rate = Double(value)
            case .double(let value)?: rate = value
            default: throw nestedError("\(path).rate_per_second", "required number in 0...1000000 (0 = unlimited)")
            }
            guard rate.isFinite, (0...1_000_000).contains(rate) else {
                throw nestedError("\(path).rate_per_second", "expected a number in 0...1000000 (0 = unlimited)")
            }
            guard case .int(let burst)? = object["burst"], (0...10_000_000).contains(burst), rate == 0 || burst >= 1
            else {
                throw nestedError("\(path).burst", "required integer in 1...10000000 (0 allowed only when unlimited)")
            }
            result[name] = rate == 0 ? .unlimited : GatewayConfiguration.RateLimit(ratePerSecond: rate, burst: burst)
        }
        return result
    }
}
