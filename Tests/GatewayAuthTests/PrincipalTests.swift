import GatewayAuth
import Testing

@Suite("Principal permissions")
struct PrincipalTests {
    let user = Principal(sub: "u1", role: .user, sessions: ["s1", "*"], tier: "free", expiresAt: 0)
    let agent = Principal(sub: "w1", role: .agent, sessions: ["s1"], tier: nil, expiresAt: 0)
    let anyAgent = Principal(sub: "w2", role: .agent, sessions: ["*"], tier: nil, expiresAt: 0)
    let op = Principal(sub: "o1", role: .operator, sessions: [], tier: nil, expiresAt: 0)

    @Test func join() {
        #expect(user.mayJoin(session: "s1"))
        #expect(!user.mayJoin(session: "s2"))
        #expect(!user.mayJoin(session: "*"))
        #expect(!user.anySession)
        #expect(agent.mayJoin(session: "s1") && !agent.mayJoin(session: "s2"))
        #expect(anyAgent.mayJoin(session: "s2"))
        #expect(op.mayJoin(session: "whatever"))
    }

    @Test func publish() {
        #expect(user.mayPublish(session: "s1", kind: "chat.message") == .allowed)
        #expect(user.mayPublish(session: "s1", kind: "chat.delta").isAllowed)
        #expect(user.mayPublish(session: "s1", kind: "progress") == .kindNotAllowed)
        #expect(user.mayPublish(session: "s1", kind: "chat.") == .kindNotAllowed)
        #expect(user.mayPublish(session: "s1", kind: "chatx.message") == .kindNotAllowed)
        #expect(user.mayPublish(session: "s2", kind: "chat.message") == .sessionNotClaimed)
        #expect(agent.mayPublish(session: "s1", kind: "progress") == .allowed)
        #expect(agent.mayPublish(session: "s2", kind: "progress") == .sessionNotClaimed)
        #expect(anyAgent.mayPublish(session: "s9", kind: "tool.output") == .allowed)
        #expect(op.mayPublish(session: "s1", kind: "chat.message") == .readOnlyRole)
        #expect(!PublishDecision.readOnlyRole.reason.isEmpty)
    }

    @Test func descriptionShowsOnlySubAndRole() {
        let principal = Principal(sub: "u1", role: .user, sessions: ["secret-session"], tier: "pro", expiresAt: 42)
        #expect(principal.description == "Principal(sub: u1, role: user)")
        #expect("\(principal)" == principal.description)
        #expect(String(reflecting: principal) == principal.description)
        #expect(!principal.description.contains("secret-session"))
    }
}
