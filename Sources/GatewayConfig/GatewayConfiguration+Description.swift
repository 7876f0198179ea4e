import GatewayAuth
import TranscriptLog

extension GatewayConfiguration {
    /// The effective configuration, one `key = value` line per key in file spelling, for logging at start-up.
    /// Secrets (`auth.hs256_secret`) are shown as `<redacted>`.
    public var redactedDescription: String {
        var lines: [String] = []
        func add(_ key: String, _ value: String) { lines.append("\(key) = \(value)") }
        func optional(_ value: (some CustomStringConvertible)?) -> String { value.map { "\($0)" } ?? "none" }

        for (index, listener) in listeners.enumerated() {
            let tls = listener.tls.map { "tls(cert: \($0.certPath), key: \($0.keyPath))" } ?? "plain"
            add(index == 0 ? "listen" : "listen.additional[\(index - 1)]", "\(listener.host):\(listener.port) \(tls)")
        }
        add("data.dir", dataDir)
        switch fsync {
        case .always: add("storage.fsync", "always")
        case .interval(let milliseconds): add("storage.fsync", "interval (\(milliseconds) ms)")
        case .never: add("storage.fsync", "never")
        }
        add("storage.segment_max_bytes", "\(segmentMaxBytes)")
        add("storage.retention_max_age_seconds", optional(retentionMaxAgeSeconds))
        add("storage.retention_max_total_bytes", optional(retentionMaxTotalBytes))
        add("storage.skip_damaged_records", "\(skipDamagedRecords)")
        add("storage.engine", storageEngine.rawValue)
        add("dedupe.min_window_seconds", "\(dedupeMinWindowSeconds)")
        add("redis.url", "\(redis.endpoint)")
        add("redis.key_prefix", redis.keyPrefix)
        add("redis.require_fsync", "\(redis.requireFsync)")
        add("redis.timeout_seconds", "\(redis.timeoutSeconds)")
        add("redis.dedupe_window", "\(redis.dedupeWindow)")
        add("cluster.node_id", optional(nodeID))
        add("auth.hs256_secret", auth.hs256Secret == nil ? "none" : "<redacted>")
        add("auth.hs256_kid", optional(auth.hs256KeyID))
        for (index, key) in auth.publicKeys.enumerated() {
            add("auth.public_keys[\(index)]", "\(key.algorithm.rawValue) kid \(key.kid ?? "none") pem \(key.pemPath)")
        }
        add("auth.leeway_seconds", "\(auth.leewaySeconds)")
        add("auth.audience", optional(auth.audience))
        add("auth.issuer", optional(auth.issuer))
        add("auth.max_token_bytes", "\(auth.maxTokenBytes)")
        add("limits.max_message_bytes", "\(limits.maxMessageBytes)")
        add("limits.auth_timeout_seconds", "\(limits.authTimeoutSeconds)")
        add("limits.max_sessions_per_connection", "\(limits.maxSessionsPerConnection)")
        add("limits.outbound_buffer_bytes", "\(limits.outboundBufferBytes)")
        add("limits.max_connections_per_sub", "\(limits.maxConnectionsPerSub)")
        add("limits.handshake_timeout_seconds", "\(limits.handshakeTimeoutSeconds)")
        add("limits.token_recheck_seconds", "\(limits.tokenRecheckSeconds)")
        add("limits.replay_chunk_events", "\(limits.replayChunkEvents)")
        add("limits.write_pacing_max_us", "\(limits.writePacingMaxMicroseconds)")
        add("limits.reads_per_turn", "\(limits.readsPerTurn)")
        add("limits.storage_inbox_bytes", "\(limits.storageInboxBytes)")
        add("limits.total_outbound_bytes", "\(limits.totalOutboundBytes)")
        add("streams.idle_timeout_seconds", "\(streams.idleTimeoutSeconds)")
        add("streams.max_per_session", "\(streams.maxPerSession)")
        add("rate_limits.strikes_before_close", "\(rateLimits.strikesBeforeClose)")
        func describe(_ limit: GatewayConfiguration.RateLimit) -> String {
            limit.isUnlimited ? "unlimited" : "\(limit.ratePerSecond)/s burst \(limit.burst)"
        }
        for (role, limit) in rateLimits.roleDefaults.sorted(by: { $0.key < $1.key }) {
            add("rate_limits.roles.\(role)", describe(limit))
        }
        for (tier, limit) in rateLimits.tiers.sorted(by: { $0.key < $1.key }) {
            add("rate_limits.tiers.\(tier)", describe(limit))
        }
        add(
            "origins.allow_list",
            origins.allowList.isEmpty ? "[] (all origins allowed)" : origins.allowList.joined(separator: ", ")
        )
        add("shutdown.deadline_seconds", "\(shutdownDeadlineSeconds)")
        add("log.level", logLevel)
        add("diag.echo", "\(diagEcho)")
        add("metrics.enabled", "\(metricsEnabled)")
        add("web.root", webRoot)
        add("server.event_loop", eventLoop)
        return lines.joined(separator: "\n")
    }
}
