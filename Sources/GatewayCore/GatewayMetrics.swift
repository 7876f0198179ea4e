import TranscriptLog
import Glibc
import GatewayConfig
import Prometheus

/// Every metric of one gateway instance, created once with fixed, low-cardinality labels
/// (no session, user or connection ids). Served as Prometheus text at `GET /metrics`.
///
/// A registry per instance (no global bootstrap) so that tests can run several gateways in one process.
/// Hot-path counts (deliveries) are kept in plain integers on the service thread and flushed here
/// on the housekeeping tick, so a delivery costs no atomic operation.
final class GatewayMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()

    let connectionsUser: Gauge
    let connectionsAgent: Gauge
    let connectionsOperator: Gauge
    let connectionsUnauthenticated: Gauge
    let joinedSubscriptions: Gauge
    let liveSessions: Gauge
    let outboundQueueBytes: Gauge
    let storageQueueDepth: Gauge

    let eventsInChat: Counter
    let eventsInProgress: Counter
    let eventsInOther: Counter
    let eventsInEphemeral: Counter
    let eventsOutDurable: Counter
    let eventsOutEphemeral: Counter
    let eventsOutReplay: Counter
    let socketWrites: Counter
    let framesWritten: Counter
    let writesDeferred: Counter
    let extraReads: Counter
    let acks: Counter
    let duplicateAcks: Counter
    let slowConsumerCloses: Counter
    let outboundBudgetCloses: Counter
    let ephemeralDropped: Counter
    let streamsOpen: Gauge
    let streamsFinalized: Counter
    let clusterEphemeralDropped: Counter
    let authFailures: Counter
    let tokenRefreshes: Counter
    let gatewayLeaves: Counter
    let storageErrors: Counter
    let committedEvents: Counter
    let errorsByCode: [String: Counter]
    let closesByCode: [UInt16: Counter]
    let commitLatency: DurationHistogram

    static let errorCodes = [
        "bad_request", "unauthorized", "forbidden", "not_found", "rate_limited", "too_large", "unavailable",
    ]
    static let closeCodes: [UInt16] = [1000, 1001, 1003, 1007, 1009, 1011, 4000, 4001, 4008, 4009]

    init() {
        let r = registry
        func conn(_ role: String) -> Gauge {
            r.makeGauge(descriptor: Self.describe("gateway_connections", "Open WebSocket connections by role"), labels: [("role", role)])
        }
        connectionsUser = conn("user")
        connectionsAgent = conn("agent")
        connectionsOperator = conn("operator")
        connectionsUnauthenticated = conn("unauthenticated")
        joinedSubscriptions = r.makeGauge(descriptor: Self.describe("gateway_joined_subscriptions", "Session subscriptions across all connections"))
        liveSessions = r.makeGauge(descriptor: Self.describe("gateway_live_sessions", "Sessions with at least one subscriber"))
        outboundQueueBytes = r.makeGauge(descriptor: Self.describe("gateway_outbound_queue_bytes", "Bytes queued for clients, all connections"))
        storageQueueDepth = r.makeGauge(descriptor: Self.describe("gateway_storage_queue_depth", "Durable publishes waiting for the log"))
        func evIn(_ c: String) -> Counter {
            r.makeCounter(descriptor: Self.describe("gateway_events_in_total", "Events published, by kind class"), labels: [("class", c)])
        }
        eventsInChat = evIn("chat")
        eventsInProgress = evIn("progress")
        eventsInOther = evIn("other")
        eventsInEphemeral = evIn("ephemeral")
        func evOut(_ c: String) -> Counter {
            r.makeCounter(descriptor: Self.describe("gateway_events_out_total", "Event frames delivered to subscribers"), labels: [("class", c)])
        }
        eventsOutDurable = evOut("durable")
        eventsOutEphemeral = evOut("ephemeral")
        eventsOutReplay = evOut("replay")
        socketWrites = r.makeCounter(descriptor: Self.describe("gateway_socket_writes_total", "WebSocket socket writes (one lws_write of coalesced frames each)"))
        framesWritten = r.makeCounter(descriptor: Self.describe("gateway_frames_written_total", "WebSocket frames those writes carried"))
        writesDeferred = r.makeCounter(descriptor: Self.describe("gateway_writes_paced_total", "Write requests held back by write pacing"))
        extraReads = r.makeCounter(descriptor: Self.describe("gateway_extra_reads_total", "Socket reads beyond lws's one per loop turn (read budget)"))
        acks = r.makeCounter(descriptor: Self.describe("gateway_acks_total", "Acks sent to publishers"))
        duplicateAcks = r.makeCounter(descriptor: Self.describe("gateway_duplicate_acks_total", "Acks for re-published ids (nothing appended)"))
        slowConsumerCloses = r.makeCounter(descriptor: Self.describe("gateway_slow_consumer_closes_total", "Connections closed 4009 at their outbound cap"))
        outboundBudgetCloses = r.makeCounter(
            descriptor: Self.describe(
                "gateway_outbound_budget_closes_total",
                "Connections closed 4009 because all queues together passed limits.total_outbound_bytes (largest first)"))
        ephemeralDropped = r.makeCounter(descriptor: Self.describe("gateway_ephemeral_dropped_total", "Ephemeral frames dropped at a full outbound buffer"))
        streamsOpen = r.makeGauge(descriptor: Self.describe("gateway_streams_open", "Token streams open on this node (opened through it)"))
        streamsFinalized = r.makeCounter(descriptor: Self.describe("gateway_streams_finalized_total", "Token streams finalized by the gateway (idle or too large): status interrupted appended"))
        clusterEphemeralDropped = r.makeCounter(descriptor: Self.describe("gateway_cluster_ephemeral_dropped_total", "Ephemeral events not sent to other nodes (the engine's bounded queue was full)"))
        authFailures = r.makeCounter(descriptor: Self.describe("gateway_auth_failures_total", "Refused tokens"))
        tokenRefreshes = r.makeCounter(
            descriptor: Self.describe("gateway_token_refreshes_total", "Tokens renewed in-band (refresh frames accepted)"))
        gatewayLeaves = r.makeCounter(
            descriptor: Self.describe(
                "gateway_subscriptions_ended_total", "Subscriptions ended by the gateway (left with a reason)"))
        storageErrors = r.makeCounter(descriptor: Self.describe("gateway_storage_errors_total", "Batches the transcript log refused"))
        committedEvents = r.makeCounter(descriptor: Self.describe("gateway_committed_events_total", "Durable events committed to the log"))
        var errors: [String: Counter] = [:]
        for code in Self.errorCodes {
            errors[code] = r.makeCounter(descriptor: Self.describe("gateway_errors_total", "Error frames sent, by code"), labels: [("code", code)])
        }
        errorsByCode = errors
        var closes: [UInt16: Counter] = [:]
        for code in Self.closeCodes {
            closes[code] = r.makeCounter(descriptor: Self.describe("gateway_closes_total", "Connections closed by the gateway, by close code"), labels: [("code", String(code))])
        }
        closesByCode = closes
        commitLatency = r.makeDurationHistogram(
            descriptor: Self.describe("gateway_fsync_batch_seconds", "Latency of one group commit (write + fsync per policy)"),
            buckets: [
                .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
                .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
                .milliseconds(250), .seconds(1),
            ])
    }

    static func describe(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    func recordCommit(duration: Duration, events: Int) {
        commitLatency.record(duration)
        committedEvents.increment(by: Int64(events))
    }

    func error(_ code: String) { errorsByCode[code]?.increment() }
    func closed(_ code: UInt16) { closesByCode[code]?.increment() }

    func render() -> [UInt8] { registry.emitToBuffer() }
}
