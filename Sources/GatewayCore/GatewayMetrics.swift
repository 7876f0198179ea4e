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
    let acks: Counter
    let duplicateAcks: Counter
    let slowConsumerCloses: Counter
    let ephemeralDropped: Counter
    let authFailures: Counter
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
            r.makeGauge(name: "gateway_connections", labels: [("role", role)], help: "Open WebSocket connections by role")
        }
        connectionsUser = conn("user")
        connectionsAgent = conn("agent")
        connectionsOperator = conn("operator")
        connectionsUnauthenticated = conn("unauthenticated")
        joinedSubscriptions = r.makeGauge(name: "gateway_joined_subscriptions", help: "Session subscriptions across all connections")
        liveSessions = r.makeGauge(name: "gateway_live_sessions", help: "Sessions with at least one subscriber")
        outboundQueueBytes = r.makeGauge(name: "gateway_outbound_queue_bytes", help: "Bytes queued for clients, all connections")
        storageQueueDepth = r.makeGauge(name: "gateway_storage_queue_depth", help: "Durable publishes waiting for the log")
        func evIn(_ c: String) -> Counter {
            r.makeCounter(name: "gateway_events_in_total", labels: [("class", c)], help: "Events published, by kind class")
        }
        eventsInChat = evIn("chat")
        eventsInProgress = evIn("progress")
        eventsInOther = evIn("other")
        eventsInEphemeral = evIn("ephemeral")
        func evOut(_ c: String) -> Counter {
            r.makeCounter(name: "gateway_events_out_total", labels: [("class", c)], help: "Event frames delivered to subscribers")
        }
        eventsOutDurable = evOut("durable")
        eventsOutEphemeral = evOut("ephemeral")
        eventsOutReplay = evOut("replay")
        acks = r.makeCounter(name: "gateway_acks_total", help: "Acks sent to publishers")
        duplicateAcks = r.makeCounter(name: "gateway_duplicate_acks_total", help: "Acks for re-published ids (nothing appended)")
        slowConsumerCloses = r.makeCounter(name: "gateway_slow_consumer_closes_total", help: "Connections closed 4009 at their outbound cap")
        ephemeralDropped = r.makeCounter(name: "gateway_ephemeral_dropped_total", help: "Ephemeral frames dropped at a full outbound buffer")
        authFailures = r.makeCounter(name: "gateway_auth_failures_total", help: "Refused tokens")
        storageErrors = r.makeCounter(name: "gateway_storage_errors_total", help: "Batches the transcript log refused")
        committedEvents = r.makeCounter(name: "gateway_committed_events_total", help: "Durable events committed to the log")
        var errors: [String: Counter] = [:]
        for code in Self.errorCodes {
            errors[code] = r.makeCounter(name: "gateway_errors_total", labels: [("code", code)], help: "Error frames sent, by code")
        }
        errorsByCode = errors
        var closes: [UInt16: Counter] = [:]
        for code in Self.closeCodes {
            closes[code] = r.makeCounter(name: "gateway_closes_total", labels: [("code", String(code))], help: "Connections closed by the gateway, by close code")
        }
        closesByCode = closes
        commitLatency = r.makeDurationHistogram(
            name: "gateway_fsync_batch_seconds",
            buckets: [
                .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
                .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
                .milliseconds(250), .seconds(1),
            ],
            help: "Latency of one group commit (write + fsync per policy)")
    }

    func recordCommit(duration: Duration, events: Int) {
        commitLatency.record(duration)
        committedEvents.increment(by: Int64(events))
    }

    func error(_ code: String) { errorsByCode[code]?.increment() }
    func closed(_ code: UInt16) { closesByCode[code]?.increment() }

    func render() -> [UInt8] { registry.emitToBuffer() }
}
