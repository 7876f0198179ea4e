/// The type and constraints of a scalar configuration key.
enum ConfigKind: Sendable {
    case string(nonEmpty: Bool)
    case int(ClosedRange<Int>)
    case double(ClosedRange<Double>)
    case bool
    case stringList
    case choice([String])

    var expectation: String {
        switch self {
        case .string(let nonEmpty): return nonEmpty ? "a non-empty string" : "a string"
        case .int(let range): return "an integer in \(range.lowerBound)...\(range.upperBound)"
        case .double(let range):
            return "a number in \(Self.format(range.lowerBound))...\(Self.format(range.upperBound))"
        case .bool: return "a boolean (true/false; in the environment also 1/0, yes/no)"
        case .stringList: return "a list of strings (comma-separated in the environment)"
        case .choice(let choices): return "one of \(choices.joined(separator: ", "))"
        }
    }

    static func format(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
    }
}

/// A documented key: its file spelling, environment spelling(s), type and whether it is secret.
/// `Config/README.md` documents each of these; a test checks that it does.
public struct ConfigKeyDescriptor: Sendable, CustomStringConvertible {
    /// The dotted file/override spelling, for example `listen.port`.
    public let key: String
    /// Environment variables that set it, canonical first (empty for file-only keys).
    public let environmentVariables: [String]
    /// Whether the value is secret (never logged or printed).
    public let isSecret: Bool
    /// Whether the key can only be set in the file (nested or list values).
    public let fileOnly: Bool
    let kind: ConfigKind?

    init(_ key: String, _ kind: ConfigKind, secret: Bool = false, aliases: [String] = []) {
        self.key = key
        self.environmentVariables = [Self.environmentName(for: key)] + aliases
        self.isSecret = secret
        self.fileOnly = false
        self.kind = kind
    }

    init(fileOnly key: String) {
        self.key = key
        self.environmentVariables = []
        self.isSecret = false
        self.fileOnly = true
        self.kind = nil
    }

    /// `GATEWAY_` + the key's components upper-cased and joined by `_` (the swift-configuration
    /// environment encoding with a `gateway` prefix).
    static func environmentName(for key: String) -> String {
        "GATEWAY_" + key.split(separator: ".").map { $0.uppercased() }.joined(separator: "_")
    }

    /// `key (env GATEWAY_KEY)` for messages.
    public var description: String {
        environmentVariables.isEmpty
            ? "\(key) (file only)" : "\(key) (env \(environmentVariables.joined(separator: " or ")))"
    }
}

enum ConfigKeys {
    static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
    static let seconds: ClosedRange<Double> = 0.001...86_400

    static let scalars: [ConfigKeyDescriptor] = [
        .init("listen.host", .string(nonEmpty: true)),
        .init("listen.port", .int(0...65_535)),
        .init("tls.cert", .string(nonEmpty: true)),
        .init("tls.key", .string(nonEmpty: true)),
        .init("data.dir", .string(nonEmpty: true)),
        .init("storage.fsync", .choice(["always", "interval", "never"]), aliases: ["GATEWAY_FSYNC"]),
        .init("storage.fsync_interval_ms", .int(1...60_000)),
        .init("storage.commit_window_us", .int(0...10_000_000)),
        .init("storage.segment_max_bytes", .int(1_048_576...1_099_511_627_776)),
        .init("storage.retention_max_age_seconds", .int(0...Int(Int32.max) * 100)),
        .init("storage.retention_max_total_bytes", .int(0...Int.max)),
        .init("storage.skip_damaged_records", .bool),
        .init("storage.engine", .choice(["local", "redis"])),
        .init("redis.url", .string(nonEmpty: true)),
        .init("redis.key_prefix", .string(nonEmpty: true)),
        .init("redis.require_fsync", .bool),
        .init("redis.timeout_seconds", .double(0.05...60)),
        .init("redis.dedupe_window", .int(100...10_000_000)),
        .init("dedupe.min_window_seconds", .int(0...2_592_000)),
        .init("cluster.node_id", .string(nonEmpty: true), aliases: ["GATEWAY_NODE_ID"]),
        .init("auth.hs256_secret", .string(nonEmpty: true), secret: true),
        .init("auth.hs256_kid", .string(nonEmpty: true)),
        .init("auth.leeway_seconds", .int(0...3600)),
        .init("auth.audience", .string(nonEmpty: true)),
        .init("auth.issuer", .string(nonEmpty: true)),
        .init("auth.max_token_bytes", .int(256...1_048_576)),
        .init("limits.max_message_bytes", .int(1024...67_108_864)),
        .init("limits.auth_timeout_seconds", .double(seconds)),
        .init("limits.max_sessions_per_connection", .int(1...1_000_000)),
        .init("limits.outbound_buffer_bytes", .int(65_536...1_073_741_824)),
        .init("limits.max_connections_per_sub", .int(1...1_000_000)),
        .init("limits.handshake_timeout_seconds", .double(seconds)),
        .init("limits.token_recheck_seconds", .double(seconds)),
        .init("limits.replay_chunk_events", .int(1...65_536)),
        .init("limits.write_pacing_max_us", .int(0...20_000)),
        .init("limits.reads_per_turn", .int(1...256)),
        .init("limits.storage_inbox_bytes", .int(65_536...1_099_511_627_776)),
        .init("limits.total_outbound_bytes", .int(0...1_099_511_627_776)),
        .init("streams.idle_timeout_seconds", .double(0.1...86_400)),
        .init("streams.max_per_session", .int(1...100_000)),
        .init("rate_limits.strikes_before_close", .int(1...1_000_000)),
        .init("rate_limits.roles.user.rate_per_second", .double(0...1_000_000)),
        .init("rate_limits.roles.user.burst", .int(0...10_000_000)),
        .init("rate_limits.roles.agent.rate_per_second", .double(0...1_000_000)),
        .init("rate_limits.roles.agent.burst", .int(0...10_000_000)),
        .init("rate_limits.roles.operator.rate_per_second", .double(0...1_000_000)),
        .init("rate_limits.roles.operator.burst", .int(0...10_000_000)),
        .init("origins.allow_list", .stringList),
        .init("shutdown.deadline_seconds", .double(seconds)),
        .init("log.level", .choice(logLevels)),
        .init("diag.echo", .bool),
        .init("metrics.enabled", .bool),
        .init("web.root", .string(nonEmpty: false)),
        .init("server.event_loop", .choice(["libev", "poll"])),
    ]

    static let fileOnly: [ConfigKeyDescriptor] = [
        .init(fileOnly: "listen.additional"),
        .init(fileOnly: "auth.public_keys"),
        .init(fileOnly: "rate_limits.tiers"),
    ]

    static let byKey: [String: ConfigKeyDescriptor] = Dictionary(
        uniqueKeysWithValues: (scalars + fileOnly).map { ($0.key, $0) }
    )

    static let environmentNames: Set<String> = Set(scalars.flatMap(\.environmentVariables))

    /// `GATEWAY_*` variables that are not keys but are read by the executables (`GATEWAY_CONFIG`: the file path),
    /// so they are not reported as unrecognized.
    static let reservedEnvironmentNames: Set<String> = ["GATEWAY_CONFIG"]
}

extension GatewayConfiguration {
    /// Every documented key, scalars first, then the file-only (nested or list) keys.
    public static let knownKeys: [ConfigKeyDescriptor] = ConfigKeys.scalars + ConfigKeys.fileOnly
}
