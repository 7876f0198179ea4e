import Foundation
import GatewayAuth
import GatewayClient
import GatewayTesting
import TranscriptLogTesting
import Testing

/// Tests that run the real `gateway` executable as a child process: kill -9 and SIGTERM.
@Suite("Gateway process", .serialized, .timeLimit(.minutes(3)))
struct ProcessTests {
    @Test func binaryExists() {
        #expect(FileManager.default.isExecutableFile(atPath: BuiltProduct.gateway), "build the gateway first: \(BuiltProduct.gateway)")
    }

    /// Acked events survive kill -9 of the gateway, in order, with no gap and no duplicate.
    @Test func killNineKeepsEveryAckedEvent() async throws {
        let dir = TestDirs.make("kill9")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var acked: [Int: String] = [:]  // seq -> id
        var next = 0
        for round in 0..<5 {
            let gw = try GatewayUnderTest.launch(dataDir: dir)
            try await gw.use { gw in
                let agent = try await Peer.connect(port: gw.port, role: .agent, sub: "w", sessions: ["s"])
                // Publish without waiting, collect acks, kill at a random moment.
                let n = Int.random(in: 20...120)
                for _ in 0..<n {
                    next += 1
                    try agent.send(["type": "publish", "session": "s", "id": "k\(next)", "kind": "progress", "data": ["n": next]])
                }
                let stopAfter = Int.random(in: 1...n)
                var got = 0
                while got < stopAfter {
                    let f = try agent.next(type: "ack")
                    if let seq = f.int("seq"), let id = f.string("id") { acked[seq] = id }
                    got += 1
                }
                try gw.kill()
                agent.close()
            }
            _ = round
        }
        // Restart and read everything back; the final SIGTERM must exit 0.
        try await withGatewayProcess(dataDir: dir) { gw in
            let reader = try await Peer.connect(port: gw.port, role: .operator, sub: "ops", sessions: [])
            let joined = try reader.join("s", since: 0)
            let head = joined.int("head") ?? 0
            var seen: [Int: String] = [:]
            for expected in 1...max(1, head) where head > 0 {
                let ev = try reader.next(type: "event")
                #expect(ev.int("seq") == expected, "dense seqs")
                seen[expected] = ev.string("id")
            }
            for (seq, id) in acked {
                #expect(seen[seq] == id, "acked seq \(seq) (\(id)) lost or changed")
            }
            #expect(Set(seen.values).count == seen.count, "an id was stored twice")
        }
    }

    /// SIGTERM (and SIGINT): clients are closed with 1001, in-flight durable writes finish, exit 0.
    @Test(arguments: [SIGTERM, SIGINT])
    func signalDrainsAndExitsZero(signal: Int32) async throws {
        let dir = TestDirs.make("sigterm")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await withGatewayProcess(dataDir: dir) { gw in
            let proc = try #require(gw.process)
            let user = try await Peer.connect(port: gw.port, role: .user, sub: "u", sessions: ["s"])
            _ = try user.join("s")
            let agent = try await Peer.connect(port: gw.port, role: .agent, sub: "w", sessions: ["s"])
            _ = try agent.publish("s", id: "before")
            try proc.send(signal: signal)
            #expect(try user.waitClose(timeout: .seconds(12)) == 1001)
            let status = try? proc.wait(timeout: .seconds(15))
            #expect(status == .exited(0), "gateway stderr: \(proc.stderr().suffix(3000))")
        }
        // The event is there after a restart.
        try await withGatewayProcess(dataDir: dir) { gw in
            let reader = try await Peer.connect(port: gw.port, role: .operator, sub: "ops", sessions: [])
            #expect(try reader.join("s").int("head") == 1)
        }
    }

    /// A bad configuration stops start-up with a message naming the key.
    @Test func badConfigurationNamesTheKey() throws {
        let runner = try ProcessRunner(
            executable: BuiltProduct.gateway,
            environment: ["GATEWAY_AUTH_HS256_SECRET": GatewayEnvironment.secret, "GATEWAY_LISTEN_PORT": "not-a-port"])
        let status = try runner.wait(timeout: .seconds(20))
        #expect(status != .exited(0))
        #expect(runner.stderr().contains("GATEWAY_LISTEN_PORT") || runner.stderr().contains("listen.port"), "stderr: \(runner.stderr())")
    }
}
