/// The identity and permissions carried by a verified token.
///
/// A `Principal` is only produced by ``TokenVerifier`` (or built by a test). Its `description` prints the
/// subject and the role only, never the token or the session list, so it is safe in logs.
public struct Principal: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The `sub` claim: a user id or a worker id.
    public let sub: String
    /// The `role` claim.
    public let role: Role
    /// The session ids from the `sessions` claim, without `"*"`.
    public let sessions: Set<String>
    /// Whether the token claimed `"*"` in `sessions` and the role may use it (agents and operators only).
    public let anySession: Bool
    /// The `tier` claim (a plan name that selects rate limits), if any.
    public let tier: String?
    /// The `exp` claim, in Unix seconds.
    public let expiresAt: Int64

    /// Creates a principal.
    ///
    /// - Parameters:
    ///   - sub: The subject.
    ///   - role: The role.
    ///   - sessions: The claimed session ids; a `"*"` element is removed and sets `anySession` for agents and operators.
    ///   - anySession: Whether the principal may use any session; ignored (forced to `false`) for ``Role/user``.
    ///   - tier: The plan name, if any.
    ///   - expiresAt: The expiry in Unix seconds.
    public init(
        sub: String,
        role: Role,
        sessions: Set<String>,
        anySession: Bool = false,
        tier: String?,
        expiresAt: Int64
    ) {
        var sessions = sessions
        let hadWildcard = sessions.remove("*") != nil
        self.sub = sub
        self.role = role
        self.sessions = sessions
        self.anySession = role != .user && (anySession || hadWildcard)
        self.tier = tier
        self.expiresAt = expiresAt
    }

    /// Whether this principal may join (subscribe to and replay) `session`.
    ///
    /// Operators may read any session whatever their claim says; agents may join claimed sessions or any
    /// session with `"*"`; users may join only the sessions listed in their claim.
    /// - Parameter session: The session id.
    /// - Returns: `true` if joining is allowed.
    public func mayJoin(session: String) -> Bool {
        switch role {
        case .operator: return true
        case .agent: return anySession || sessions.contains(session)
        case .user: return sessions.contains(session)
        }
    }

    /// Whether this principal may publish an event of `kind` to `session`.
    ///
    /// Users publish only `chat.*` kinds to claimed sessions, agents any kind to claimed sessions (or any
    /// session with `"*"`), operators never.
    /// - Parameters:
    ///   - session: The session id.
    ///   - kind: The event kind, for example `chat.message`.
    /// - Returns: ``PublishDecision/allowed`` or the reason it is forbidden.
    public func mayPublish(session: String, kind: String) -> PublishDecision {
        switch role {
        case .operator:
            return .readOnlyRole
        case .agent:
            return anySession || sessions.contains(session) ? .allowed : .sessionNotClaimed
        case .user:
            guard sessions.contains(session) else { return .sessionNotClaimed }
            return kind.hasPrefix("chat.") && kind.utf8.count > 5 ? .allowed : .kindNotAllowed
        }
    }

    /// `Principal(sub: <sub>, role: <role>)`: no token, no sessions.
    public var description: String { "Principal(sub: \(sub), role: \(role.rawValue))" }

    /// Same as ``description``.
    public var debugDescription: String { description }
}

/// The answer of ``Principal/mayPublish(session:kind:)``.
public enum PublishDecision: Sendable, Hashable {
    /// The publish is allowed.
    case allowed
    /// The session is not in the token's `sessions` claim.
    case sessionNotClaimed
    /// The role may not publish this kind (users publish only `chat.*`).
    case kindNotAllowed
    /// The role is read-only (operators).
    case readOnlyRole

    /// Whether the publish is allowed.
    public var isAllowed: Bool { self == .allowed }

    /// A short reason for a `forbidden` error reply; empty when allowed.
    public var reason: String {
        switch self {
        case .allowed: return ""
        case .sessionNotClaimed: return "session not in token"
        case .kindNotAllowed: return "kind not allowed for role"
        case .readOnlyRole: return "role is read-only"
        }
    }
}
