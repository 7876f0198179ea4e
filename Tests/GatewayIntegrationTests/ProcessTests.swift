import Foundation
import GatewayAuth
import GatewayClient
import GatewayTesting
import Testing

/// Tests that run the real `gateway` executable as a child process: kill -9 and SIGTERM.
@Suite("Gateway process", .serialized, .timeLimit(.minutes(3)))
struct ProcessTests {
    /// The `gateway` binary built next to the test bundle (`swift build --build-tests` builds it).
    static var gatewayBinary: String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        var dir = (exe as NSString).deletingLastPathComponent
        // Inside an .xctest bundle directory on some layouts.
        while !dir.isEmpty && dir != "/" && !FileManager.default.isExecutableFile(atPath: dir + "/gateway") {
            dir = (dir as NSString).deletingLastPathComponent
        }
        return dir + "/gateway"
    }

    static func launch(dataDir: String, extra: [String: String] = [:]) throws -> (ProcessRunner, Int) {
        var env = [
            "GATEWAY_AUTH_HS256_SECRET": TestGateway.secretForTests,
            "GATEWAY_LISTEN_HOST": "127.0.0.1",
            "GATEWAY_LISTEN_PORT": "0",
            "GATEWAY_DATA_DIR": dataDir,
            "GATEWAY_FSYNC": "always",
            "GATEWAY_LOG_LEVEL": "info",
        ]
        for (k, v) in extra { env[k] = v }
        let runner = try ProcessRunner(executable: gatewayBinary, environment: env)
        let port = try runner.waitForListeningPort(timeout: .seconds(20))
        return (runner, port)
    }

    static func connect(port: Int, role: Role, sub: String, sessions: [String]) async throws -> Peer {
        let token = try await TokenMinter.hs256(
            secret: TestGateway.secretForTests, sub: sub, role: role, sessions: sessions, tier: nil, ttlSeconds: 600)
        let p = Peer(try WebSocketClient.connect(url: "ws://127.0.0.1:\(port)/v1/ws"))
        try p.send(["type": "hello", "token": token])
        _ = try p.next(type: "welcome")
        return p
    }

    @Test func binaryExists() {
        #expect(FileManager.default.isExecutableFile(atPath: Self.gatewayBinary), "build the gateway first: \(Self.gatewayBinary)")
    }

    /// Acked events survive kill -9 of the gateway, in order, with no gap and no duplicate.
    @Test func killNineKeepsEveryAckedEvent() async throws {
        let dir = TestDirs.make("kill9")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var acked: [Int: String] = [:]  // seq -> id
        var next = 0
        for round in 0..<5 {
            let (proc, port) = try Self.launch(dataDir: dir)
            let agent = try await Self.connect(port: port, role: .agent, sub: "w", sessions: ["s"])
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
            try proc.kill()
            _ = try proc.wait(timeout: .seconds(10))
            agent.close()
            _ = round
        }
        // Restart and read everything back.
        let (proc, port) = try Self.launch(dataDir: dir)
        let reader = try await Self.connect(port: port, role: .operator, sub: "ops", sessions: [])
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
        try proc.terminate()
        #expect(try proc.wait(timeout: .seconds(15)) == .exited(0))
    }

    /// SIGTERM (and SIGINT): clients are closed with 1001, in-flight durable writes finish, exit 0.
    @Test(arguments: [SIGTERM, SIGINT])
    func signalDrainsAndExitsZero(signal: Int32) async throws {
        let dir = TestDirs.make("sigterm")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (proc, port) = try Self.launch(dataDir: dir)
        let user = try await Self.connect(port: port, role: .user, sub: "u", sessions: ["s"])
        _ = try user.join("s")
        let agent = try await Self.connect(port: port, role: .agent, sub: "w", sessions: ["s"])
        _ = try agent.publish("s", id: "before")
        try proc.send(signal: signal)
        #expect(try user.waitClose(timeout: .seconds(12)) == 1001)
        let status = try? proc.wait(timeout: .seconds(15))
        #expect(status == .exited(0), "gateway stderr: \(proc.stderr().suffix(3000))")
        if status == nil { try? proc.kill(); _ = try? proc.wait(timeout: .seconds(5)) }
        // The event is there after a restart.
        let (proc2, port2) = try Self.launch(dataDir: dir)
        let reader = try await Self.connect(port: port2, role: .operator, sub: "ops", sessions: [])
        #expect(try reader.join("s").int("head") == 1)
        try proc2.terminate()
        _ = try proc2.wait(timeout: .seconds(15))
    }

    /// A bad configuration stops start-up with a message naming the key.
    @Test func badConfigurationNamesTheKey() throws {
        let runner = try ProcessRunner(
            executable: Self.gatewayBinary,
            environment: ["GATEWAY_AUTH_HS256_SECRET": TestGateway.secretForTests, "GATEWAY_LISTEN_PORT": "not-a-port"])
        let status = try runner.wait(timeout: .seconds(20))
        #expect(status != .exited(0))
        #expect(runner.stderr().contains("GATEWAY_LISTEN_PORT") || runner.stderr().contains("listen.port"), "stderr: \(runner.stderr())")
    }
}
