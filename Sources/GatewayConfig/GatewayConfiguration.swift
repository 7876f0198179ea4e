import GatewayAuth
import TranscriptLog

/// The gateway's effective configuration: `Config/gateway.json` (or no file), overridden by `GATEWAY_*`
/// environment variables, overridden by command-line overrides. Every key is documented in
/// `Config/README.md`; ``load(configFile:environment:overrides:)`` validates all of them.
///
/// `description` is ``redactedDescription``: the HS256 secret never appears in it.
public struct GatewayConfiguration: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    /// Listening sockets. The first is `listen.host`/`listen.port` (TLS with `tls.cert` + `tls.key`);
    /// the rest come from `listen.additional` in the file.
    public var listeners: [ListenerConfig]
    /// `data.dir`: the transcript log directory.
    public var dataDir: String
    /// `storage.fsync` (+ `storage.fsync_interval_ms`): when appended records are flushed to disk (the log's own
    /// policy type, handed to it as it is).
    public var fsync: FsyncPolicy
    /// `storage.commit_window_us`: group-commit window. Under load, a batch starts at most once per window
    /// (events arriving meanwhile join it), so fsyncs and thread wake-ups are paid per window, not per event;
    /// after a quiet spell the first event commits at once. 0 commits whatever is queued immediately.
    public var commitWindowMicroseconds: Int
    /// `storage.segment_max_bytes`: size at which the log starts a new segment file.
    public var segmentMaxBytes: Int
    /// `storage.retention_max_age_seconds`: segments older than this are removed; `nil` keeps them.
    public var retentionMaxAgeSeconds: Int?
    /// `storage.retention_max_total_bytes`: oldest segments are removed above this total; `nil` keeps them.
    public var retentionMaxTotalBytes: Int?
    /// `storage.skip_damaged_records`: start even if the log has damage in the middle (operator decision).
    public var skipDamagedRecords: Bool
    /// `auth.*`: token verification settings, handed to ``TokenVerifier`` as they are.
    public var auth: AuthConfiguration
    /// `limits.*`: per-connection and per-subject limits.
    public var limits: LimitSettings
    /// `rate_limits.*`: publish rate limits per tier and per role.
    public var rateLimits: RateLimitSettings
    /// `origins.*`: the browser `Origin` allow-list.
    public var origins: OriginSettings
    /// `shutdown.deadline_seconds`: how long a graceful shutdown may take before the process exits anyway.
    public var shutdownDeadlineSeconds: Double
    /// `log.level`: one of `trace`, `debug`, `info`, `notice`, `warning`, `error`, `critical`.
    public var logLevel: String
    /// `diag.echo`: enable the diagnostic echo endpoint (for the Autobahn conformance run only).
    public var diagEcho: Bool
    /// `metrics.enabled`: serve `GET /metrics`.
    public var metricsEnabled: Bool
    /// `web.root`: directory whose files are served read-only at `/<relative path>` (the browser client at
    /// `/client/v1/gateway-client.js`, the session page at `/console/`); loaded into memory at start. Empty = off.
    public var webRoot: String
    /// `server.event_loop`: `libev` (epoll, O(active connections) per wake-up; lws's evlib plugin) or `poll`.
    public var eventLoop: String
    /// `GATEWAY_*` environment variables that matched no key (likely typos); the gateway should warn about them.
    public var unrecognizedEnvironmentVariables: [String]
    /// `storage.engine`: `local` (the embedded transcript log, one node; the default) or `redis` (cluster mode).
    public var storageEngine: StorageEngine = .local
    /// `redis.*`: the Redis server of cluster mode (used only with `storage.engine = redis`).
    public var redis = RedisSettings()
    /// `cluster.node_id` (env `GATEWAY_NODE_ID`): this node's name in the cluster; `nil` = a random id per start.
    public var nodeID: String? = nil
    /// `dedupe.min_window_seconds`: the local engine remembers, per session, at least the last 10,000 publish ids
    /// and at least those of the last this many seconds (0 = the count alone).
    public var dedupeMinWindowSeconds: Int = 300
    /// `streams.*`: token streams (protocol v1.1 §3).
    public var streams = StreamSettings()

    /// The configuration that ``load(configFile:environment:overrides:)`` yields with no file and no
    /// overrides, except that ``AuthConfiguration/hs256Secret`` is `nil` here (it has no default).
    public static let defaults = GatewayConfiguration(
        listeners: [ListenerConfig(host: "127.0.0.1", port: 8080, tls: nil)],
        dataDir: "./data",
        fsync: .always,
        commitWindowMicroseconds: 1_000,
        segmentMaxBytes: 64 * 1024 * 1024,
        retentionMaxAgeSeconds: nil,
        retentionMaxTotalBytes: nil,
        skipDamagedRecords: false,
        auth: AuthConfiguration(),
        limits: LimitSettings(),
        rateLimits: RateLimitSettings(),
        origins: OriginSettings(),
        shutdownDeadlineSeconds: 10,
        logLevel: "info",
        diagEcho: false,
        metricsEnabled: true,
        webRoot: "clients/web",
        eventLoop: "libev",
        unrecognizedEnvironmentVariables: []
    )

    /// Creates a configuration from its parts; prefer ``load(configFile:environment:overrides:)``, which validates.
    public init(
        listeners: [ListenerConfig],
        dataDir: String,
        fsync: FsyncPolicy,
        commitWindowMicroseconds: Int = 1_000,
        segmentMaxBytes: Int,
        retentionMaxAgeSeconds: Int?,
        retentionMaxTotalBytes: Int?,
        skipDamagedRecords: Bool,
        auth: AuthConfiguration,
        limits: LimitSettings,
        rateLimits: RateLimitSettings,
        origins: OriginSettings,
        shutdownDeadlineSeconds: Double,
        logLevel: String,
        diagEcho: Bool,
        metricsEnabled: Bool,
        webRoot: String = "clients/web",
        eventLoop: String = "libev",
        unrecognizedEnvironmentVariables: [String] = []
    ) {
        self.listeners = listeners
        self.dataDir = dataDir
        self.fsync = fsync
        self.commitWindowMicroseconds = commitWindowMicroseconds
        self.segmentMaxBytes = segmentMaxBytes
        self.retentionMaxAgeSeconds = retentionMaxAgeSeconds
        self.retentionMaxTotalBytes = retentionMaxTotalBytes
        self.skipDamagedRecords = skipDamagedRecords
        self.auth = auth
        self.limits = limits
        self.rateLimits = rateLimits
        self.origins = origins
        self.shutdownDeadlineSeconds = shutdownDeadlineSeconds
        self.logLevel = logLevel
        self.diagEcho = diagEcho
        self.metricsEnabled = metricsEnabled
        self.webRoot = webRoot
        self.eventLoop = eventLoop
        self.unrecognizedEnvironmentVariables = unrecognizedEnvironmentVariables
    }

    /// Same as ``redactedDescription``.
    public var description: String { redactedDescription }
    /// Same as ``redactedDescription``.
    public var debugDescription: String { redactedDescription }
}

extension GatewayConfiguration: CustomReflectable {
    /// Mirrors the redacted description, so `dump(_:)` cannot print the secret.
    public var customMirror: Mirror { Mirror(self, children: ["redacted": redactedDescription]) }
}

/// One listening socket.
public struct ListenerConfig: Sendable, Equatable {
    /// The IP address (or host name) to bind exactly.
    public var host: String
    /// The TCP port; 0 asks the OS for an ephemeral port.
    public var port: Int
    /// TLS certificate and key; `nil` for plain `ws://`.
    public var tls: TLSConfig?

    /// Creates a listener.
    public init(host: String, port: Int, tls: TLSConfig?) {
        self.host = host
        self.port = port
        self.tls = tls
    }
}

/// PEM paths of a TLS listener's certificate (chain) and private key. The paths are not secret; the key
/// file's contents are, and this module never reads them.
public struct TLSConfig: Sendable, Equatable {
    /// Path of the PEM certificate (chain).
    public var certPath: String
    /// Path of the PEM private key.
    public var keyPath: String

    /// Creates a TLS configuration.
    public init(certPath: String, keyPath: String) {
        self.certPath = certPath
        self.keyPath = keyPath
    }
}

/// `streams.*`: token streams (`*.delta` publishes with a `data.stream`, protocol v1.1 §3).
public struct StreamSettings: Sendable, Equatable {
    /// `streams.idle_timeout_seconds`: a stream with no delta for this long is finalized by the gateway (a durable
    /// `chat.message` with `status: interrupted`).
    public var idleTimeoutSeconds: Double = 30
    /// `streams.max_per_session`: open streams per session; one more open is refused `rate_limited`.
    public var maxPerSession: Int = 16

    /// The defaults.
    public init() {}
}

/// `limits.*`.
public struct LimitSettings: Sendable, Equatable {
    /// `limits.max_message_bytes`: largest inbound message (close 1009 above it).
    public var maxMessageBytes: Int = 1_048_576
    /// `limits.auth_timeout_seconds`: time allowed between connect and `hello`.
    public var authTimeoutSeconds: Double = 5
    /// `limits.max_sessions_per_connection`: sessions one connection may join at once.
    public var maxSessionsPerConnection: Int = 64
    /// `limits.outbound_buffer_bytes`: per-connection outbound buffer (durable overflow closes 4009).
    public var outboundBufferBytes: Int = 4 * 1_048_576
    /// `limits.max_connections_per_sub`: concurrent connections per token subject.
    public var maxConnectionsPerSub: Int = 32
    /// `limits.handshake_timeout_seconds`: time allowed for the TLS/HTTP upgrade handshake.
    public var handshakeTimeoutSeconds: Double = 10
    /// `limits.token_recheck_seconds`: how often connected tokens are re-checked for expiry.
    public var tokenRecheckSeconds: Double = 30
    /// `limits.replay_chunk_events`: events read from the log per replay chunk.
    public var replayChunkEvents: Int = 256
    /// `limits.write_pacing_max_us`: the cap of the adaptive flush interval under load (µs; 0 = no pacing).
    public var writePacingMaxMicroseconds: Int = 2_000
    /// `limits.reads_per_turn`: reads of one busy socket per loop turn (the read budget).
    public var readsPerTurn: Int = 1
    /// `limits.storage_inbox_bytes`: bytes of durable publishes accepted by the storage engine and not yet answered
    /// (queued or being committed); a publish that would exceed it is answered `unavailable`.
    public var storageInboxBytes: Int = 256 * 1_048_576
    /// `limits.total_outbound_bytes`: bytes queued to every connection together; over it, the connection with the
    /// largest queue is closed 4009 first (0 = no global budget, only the per-connection cap).
    public var totalOutboundBytes: Int = 1_073_741_824

    /// Creates the default limits.
    public init() {}
}

extension GatewayConfiguration {
    /// A token bucket: `ratePerSecond` refill, `burst` capacity. A rate of 0 means unlimited.
    public struct RateLimit: Sendable, Equatable {
        /// Tokens added per second; 0 means unlimited.
        public var ratePerSecond: Double
        /// Bucket capacity (the largest burst).
        public var burst: Int

        /// No limit.
        public static let unlimited = RateLimit(ratePerSecond: 0, burst: 0)

        /// Whether this is no limit at all.
        public var isUnlimited: Bool { ratePerSecond == 0 }

        /// Creates a rate limit.
        public init(ratePerSecond: Double, burst: Int) {
            self.ratePerSecond = ratePerSecond
            self.burst = burst
        }
    }
}

/// `rate_limits.*`: publish rate limits, applied per connection.
public struct RateLimitSettings: Sendable, Equatable {
    /// `rate_limits.tiers`: limits by the token's `tier` claim (file only).
    public var tiers: [String: GatewayConfiguration.RateLimit] = [:]
    /// `rate_limits.roles.<role>`: the limit for tokens whose tier is absent or not in ``tiers``, keyed by
    /// role name (`user`, `agent`, `operator`).
    public var roleDefaults: [String: GatewayConfiguration.RateLimit] = [
        "user": GatewayConfiguration.RateLimit(ratePerSecond: 20, burst: 40),
        "agent": .unlimited,
        "operator": .unlimited,
    ]
    /// `rate_limits.strikes_before_close`: `rate_limited` errors a connection may get before it is closed with 4008.
    public var strikesBeforeClose: Int = 20

    /// Creates the shipped defaults: users 20/s burst 40, agents and operators unlimited, 20 strikes.
    public init() {}

    /// The limit for a token: its tier's if the tier is configured, else its role's; `nil` means unlimited.
    /// - Parameters:
    ///   - tier: The token's `tier` claim.
    ///   - role: The token's role name.
    /// - Returns: The limit, or `nil` for none.
    public func limit(tier: String?, role: String) -> GatewayConfiguration.RateLimit? {
        let limit = tier.flatMap { tiers[$0] } ?? roleDefaults[role] ?? .unlimited
        return limit.isUnlimited ? nil : limit
    }
}

/// `origins.*`.
public struct OriginSettings: Sendable, Equatable {
    /// `origins.allow_list`: exact `Origin` values allowed to connect; empty allows every origin (development).
    public var allowList: [String] = []

    /// Creates settings with an empty allow-list.
    public init() {}
}

/// `storage.engine`.
public enum StorageEngine: String, Sendable, Equatable {
    /// The embedded transcript log on local disk (one node).
    case local
    /// Redis shared by every node (cluster mode, docs/scaling.md).
    case redis
}

/// `redis.*`: where cluster mode keeps sessions.
public struct RedisSettings: Sendable, Equatable {
    /// A parsed `redis://HOST:PORT[/DB]`.
    public struct Endpoint: Sendable, Equatable, CustomStringConvertible {
        public var host: String
        public var port: Int
        public var database: Int

        public init(host: String, port: Int, database: Int = 0) {
            self.host = host
            self.port = port
            self.database = database
        }

        /// Parses `redis://HOST:PORT[/DB]` (`[v6]` hosts allowed); nil for anything else (credentials, TLS, paths).
        public init?(url: String) {
            guard url.hasPrefix("redis://") else { return nil }
            var rest = Substring(url.dropFirst("redis://".count))
            var database = 0
            if let slash = rest.firstIndex(of: "/") {
                let db = rest[rest.index(after: slash)...]
                rest = rest[..<slash]
                if !db.isEmpty {
                    guard let n = Int(db), (0...15).contains(n) else { return nil }
                    database = n
                }
            }
            guard !rest.contains("@") else { return nil }
            var host: Substring
            var portText: Substring = "6379"
            if rest.hasPrefix("[") {
                guard let close = rest.firstIndex(of: "]") else { return nil }
                host = rest[rest.index(after: rest.startIndex)..<close]
                let after = rest[rest.index(after: close)...]
                if !after.isEmpty {
                    guard after.hasPrefix(":") else { return nil }
                    portText = after.dropFirst()
                }
            } else if let colon = rest.lastIndex(of: ":") {
                host = rest[..<colon]
                portText = rest[rest.index(after: colon)...]
            } else {
                host = rest
            }
            guard !host.isEmpty, let port = Int(portText), (1...65_535).contains(port) else { return nil }
            self.init(host: String(host), port: port, database: database)
        }

        public var description: String { "redis://\(host.contains(":") ? "[\(host)]" : host):\(port)/\(database)" }
    }

    /// `redis.url` (env `GATEWAY_REDIS_URL`), default `redis://127.0.0.1:6379`.
    public var endpoint = Endpoint(host: "127.0.0.1", port: 6379)
    /// `redis.key_prefix` (env `GATEWAY_REDIS_KEY_PREFIX`), default `gw`: gateways with different prefixes on one
    /// Redis share nothing.
    public var keyPrefix = "gw"
    /// `redis.require_fsync`: refuse to write unless the server runs `appendonly yes` + `appendfsync always`
    /// (otherwise only a warning is logged).
    public var requireFsync = false
    /// `redis.timeout_seconds`: connect and command timeout of every Redis connection.
    public var timeoutSeconds = 2.0
    /// `redis.dedupe_window`: publish ids remembered per session (at least this many of the latest).
    public var dedupeWindow = 10_000

    public init() {}
}
