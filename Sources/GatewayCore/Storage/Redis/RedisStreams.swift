// Cluster mode: ephemeral events and token streams across nodes.
extension RedisEventStore {
    var sharesStreams: Bool { false }
    func publishEphemeral(_ event: EphemeralPublish) {}
    func closeStream(session: String, sub: String, id: String) {}
    func openStreams(session: String) -> [StreamSnapshot] { [] }
}
