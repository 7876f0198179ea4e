/// The role a token grants, from its `role` claim (protocol-v1.md, "Roles").
///
/// - `user`: a browser; joins and publishes `chat.*` kinds to the sessions in its claim.
/// - `agent`: a worker; joins and publishes any kind to the sessions in its claim (or any session with `"*"`).
/// - `operator`: read-only oversight; joins any session, never publishes.
public enum Role: String, Sendable, Hashable, CaseIterable {
    /// A browser acting for a user.
    case user
    /// An agent worker.
    case agent
    /// Read-only oversight.
    case `operator`
}
