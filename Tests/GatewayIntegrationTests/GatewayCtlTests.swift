import Foundation
import GatewayAuth
import GatewayClient
import GatewayTesting
import Glibc
import Testing
import TranscriptLogTesting

/// The real `gatewayctl` binary against a real gateway on loopback and on real log directories.
@Suite("gatewayctl", .serialized, .timeLimit(.minutes(3)))
struct GatewayCtlTests {
    /// The `gatewayctl` binary built next to the test bundle (`swift build --build-tests` builds it).
    static var binary: String { BuiltProduct.path("gatewayctl") }

    /// A finished `gatewayctl` run.
    struct Run {
        var status: ProcessExitStatus
        var stdout: String
        var stderr: String
        var lines: [String] { stdout.split(separator: "\n").map(String.init) }
    }

    /// Environment for every run: no inherited gateway settings, UTC, no colour, quiet diagnostics.
    static func environment(_ extra: [String: String]) -> [String: String] {
        var env = [
            "GATEWAY_URL": "", "GATEWAY_TOKEN": "", "TZ": "UTC", "NO_COLOR": "1", "GATEWAYCTL_LOG_LEVEL": "notice",
        ]
        for (k, v) in extra { env[k] = v }
        return env
    }

    /// Starts `gatewayctl` with `arguments`.
    static func start(_ arguments: [String], env: [String: String] = [:]) throws -> ProcessRunner {
        try ProcessRunner(executable: binary, arguments: arguments, environment: environment(env))
    }

    /// Runs `gatewayctl` to completion (bounded).
    static func run(_ arguments: [String], env: [String: String] = [:], timeout: Duration = .seconds(30)) throws -> Run
    {
        let p = try start(arguments, env: env)
        let status: ProcessExitStatus
        do {
            status = try p.wait(timeout: timeout)
        } catch {
            try? p.kill()
            throw error
        }
        return Run(status: status, stdout: p.stdout(), stderr: p.stderr())
    }

    /// Waits until stdout holds at least `count` complete lines (bounded).
    static func waitForLines(_ p: ProcessRunner, count: Int, timeout: Duration = .seconds(15)) throws -> [String] {
        let deadline = ContinuousClock.now + timeout
        while true {
            let text = p.stdout()
            let complete =
                text.hasSuffix("\n")
                ? text : String(text[..<(text.lastIndex(of: "\n").map { text.index(after: $0) } ?? text.startIndex)])
            let lines = complete.split(separator: "\n").map(String.init)
            if lines.count >= count { return lines }
            if let exited = p.poll() {
                throw GatewayTestingError.processFailed(
                    "gatewayctl ended (\(exited)) with \(lines.count) lines; stderr: \(p.stderr())")
            }
            guard ContinuousClock.now < deadline else {
                throw GatewayClientError.timeout("\(lines.count) of \(count) lines; stderr: \(p.stderr())")
            }
            usleep(20_000)
        }
    }

    /// Stops a `tail --follow` with SIGTERM and returns its exit status (bounded).
    static func terminate(_ p: ProcessRunner) throws -> ProcessExitStatus {
        try p.terminate()
        do {
            return try p.wait(timeout: .seconds(10))
        } catch {
            try? p.kill()
            throw error
        }
    }

    /// The seqs of `--json` lines (every line must parse as a JSON event object).
    static func seqs(ofJSONLines lines: [String]) throws -> [Int] {
        try lines.map { line in
            let object = try #require(
                try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "not a JSON object: \(line)")
            #expect(object["type"] as? String == "event")
            return try #require(object.int("seq"), "no seq: \(line)")
        }
    }

    /// Publishes chat messages `texts` to `session` as an agent; returns their seqs.
    @discardableResult
    static func publish(_ gw: GatewayUnderTest, _ session: String, _ texts: [String], idPrefix: String = "m") async throws
        -> [Int]
    {
        let agent = try await gw.client(.agent, sub: "worker-1", sessions: ["*"])
        defer { agent.close() }
        var seqs: [Int] = []
        for (i, text) in texts.enumerated() {
            let ack = try agent.publish(session, id: "\(idPrefix)\(i)", kind: "chat.message", data: ["text": text])
            seqs.append(try #require(ack.int("seq"), "ack: \(ack)"))
        }
        return seqs
    }

    /// `--url` and `--token` for an operator of `gw`.
    static func endpoint(_ gw: GatewayUnderTest) async throws -> [String] {
        ["--url", gw.url, "--token", try await gw.token(.operator, sub: "ops")]
    }

    @Test func binaryExists() {
        #expect(FileManager.default.isExecutableFile(atPath: Self.binary), "build gatewayctl first: \(Self.binary)")
    }

    /// Without --follow: exactly the published events, in order, then exit 0.
    @Test func tailReplayPrintsPublishedEventsAndExits() async throws {
        try await withGateway { gw in
            let texts = ["first message", "second message", "third message", "fourth message"]
            try await Self.publish(gw, "replay-1", texts)
            let run = try Self.run(["tail", "replay-1"] + (try await Self.endpoint(gw)))
            #expect(run.status == .exited(0), "stderr: \(run.stderr)")
            #expect(run.lines.count == texts.count, "stdout: \(run.stdout)")
            for (i, text) in texts.enumerated() where i < run.lines.count {
                let line = run.lines[i]
                #expect(line.contains("#\(i + 1)"), "\(line)")
                #expect(line.contains("agent/worker-1"), "\(line)")
                #expect(line.contains("chat.message"), "\(line)")
                #expect(line.hasSuffix(text), "\(line)")
            }
        }
    }

    /// --follow prints the replay, then events published while it runs; SIGTERM ends it with 0.
    @Test func tailFollowReceivesLiveEvents() async throws {
        try await withGateway { gw in
            try await Self.publish(gw, "live-1", ["before"], idPrefix: "a")
            let token = try await gw.token(.operator, sub: "ops")
            // URL and token from the environment this time.
            let tail = try Self.start(
                ["tail", "live-1", "--follow"], env: ["GATEWAY_URL": gw.url, "GATEWAY_TOKEN": token])
            _ = try Self.waitForLines(tail, count: 1)
            try await Self.publish(gw, "live-1", ["during one", "during two", "during three"], idPrefix: "b")
            let lines = try Self.waitForLines(tail, count: 4)
            #expect(try Self.terminate(tail) == .exited(0))
            let final = tail.stdout().split(separator: "\n").map(String.init)
            #expect(final.count == 4, "\(final)")
            #expect(lines[0].hasSuffix("before"))
            #expect(lines[1].hasSuffix("during one") && lines[1].contains("#2"))
            #expect(lines[3].hasSuffix("during three") && lines[3].contains("#4"))
        }
    }

    /// --presence (v1.1): the list when joined, then one line per subject that joins or leaves; a second tab of the
    /// same subject prints nothing.
    @Test func tailPresenceShowsWhoComesAndGoes() async throws {
        try await withGateway { gw in
            try await Self.publish(gw, "pres-1", ["hello"], idPrefix: "p")
            let agent = try await gw.client(.agent, sub: "worker-9", sessions: ["*"])
            _ = try agent.join("pres-1")
            let tail = try Self.start(["tail", "pres-1", "--follow", "--presence"] + (try await Self.endpoint(gw)))
            var lines = try Self.waitForLines(tail, count: 2)
            #expect(lines.contains { $0.hasPrefix("presence: ") && $0.contains("agent/worker-9") && $0.contains("operator/ops") }, "\(lines)")
            let tab1 = try await gw.client(.user, sub: "alice", sessions: ["pres-1"])
            _ = try tab1.join("pres-1")
            let tab2 = try await gw.client(.user, sub: "alice", sessions: ["pres-1"])
            _ = try tab2.join("pres-1")
            lines = try Self.waitForLines(tail, count: 3)
            #expect(lines[2] == "+ user/alice joined", "\(lines)")
            tab1.close()
            tab2.close()
            lines = try Self.waitForLines(tail, count: 4)
            #expect(lines[3] == "- user/alice left", "\(lines)")
            #expect(try Self.terminate(tail) == .exited(0))
            #expect(tail.stdout().split(separator: "\n").count == 4, "\(tail.stdout())")
        }
    }

    /// --json: one event object per line with the right seqs; --last 3 prints only the last three.
    @Test func tailJSONAndLast() async throws {
        try await withGateway { gw in
            let seqs = try await Self.publish(gw, "json-1", (1...7).map { "message \($0)" })
            #expect(seqs == Array(1...7))
            let endpoint = try await Self.endpoint(gw)

            let all = try Self.run(["tail", "json-1", "--json"] + endpoint)
            #expect(all.status == .exited(0), "stderr: \(all.stderr)")
            #expect(try Self.seqs(ofJSONLines: all.lines) == Array(1...7))

            let last = try Self.run(["tail", "json-1", "--json", "--last", "3"] + endpoint)
            #expect(last.status == .exited(0), "stderr: \(last.stderr)")
            #expect(try Self.seqs(ofJSONLines: last.lines) == [5, 6, 7])

            let since = try Self.run(["tail", "json-1", "--since", "5"] + endpoint)
            #expect(since.lines.count == 2 && since.lines.first?.contains("#6") == true, "\(since.stdout)")

            // --last with --follow: the last 2, then live, no duplicate at the switch.
            let follow = try Self.start(["tail", "json-1", "--json", "--last", "2", "--follow"] + endpoint)
            _ = try Self.waitForLines(follow, count: 2)
            try await Self.publish(gw, "json-1", ["message 8"], idPrefix: "late")
            _ = try Self.waitForLines(follow, count: 3)
            #expect(try Self.terminate(follow) == .exited(0))
            #expect(try Self.seqs(ofJSONLines: follow.stdout().split(separator: "\n").map(String.init)) == [6, 7, 8])
        }
    }

    /// An ANSI escape and a newline inside chat text are printed escaped, never raw.
    @Test func controlCharactersAreEscaped() async throws {
        try await withGateway { gw in
            try await Self.publish(gw, "ansi-1", ["evil \u{1B}[31mred\u{1B}[0m\nsecond\u{7}line \u{202E}rtl"])
            let run = try Self.run(["tail", "ansi-1", "--color", "always"] + (try await Self.endpoint(gw)))
            #expect(run.status == .exited(0), "stderr: \(run.stderr)")
            let line = try #require(run.lines.first)
            #expect(line.contains(#"evil \x1b[31mred\x1b[0m\nsecond\x07line \u{202e}rtl"#), "\(line)")
            // The only raw ESC bytes are the CLI's own colour codes ("ESC[" + digits + "m"), none from the data.
            #expect(!line.contains("\u{1B}[31mred"))
            #expect(!run.stdout.contains("\u{7}") && !run.stdout.contains("\u{202E}"))
            #expect(run.lines.count == 1)

            let json = try Self.run(["tail", "ansi-1", "--json"] + (try await Self.endpoint(gw)))
            #expect(!json.stdout.contains("\u{1B}") && !json.stdout.contains("\u{202E}"))
            #expect(try Self.seqs(ofJSONLines: json.lines) == [1])
        }
    }

    /// `sessions --json` lists a live session with its subscribers and head; the table shows it too.
    @Test func sessionsListsLiveSessions() async throws {
        try await withGateway { gw in
            let user = try await gw.client(.user, sub: "alice", sessions: ["room-7"])
            defer { user.close() }
            _ = try user.join("room-7")
            try await Self.publish(gw, "room-7", ["hi", "there"])
            let endpoint = try await Self.endpoint(gw)

            let run = try Self.run(["sessions", "--json"] + endpoint)
            #expect(run.status == .exited(0), "stderr: \(run.stderr)")
            let object = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
            let sessions = try #require(object["sessions"] as? [[String: Any]])
            let room = try #require(sessions.first { $0["session"] as? String == "room-7" }, "\(run.stdout)")
            #expect(room.int("head") == 2)
            #expect((room["subscribers"] as? [String: Any])?.int("user") == 1)

            let table = try Self.run(["sessions"] + endpoint)
            #expect(table.status == .exited(0))
            #expect(table.lines.contains { $0.hasPrefix("room-7") && $0.contains(" 2 ") }, "\(table.stdout)")

            let userToken = try await gw.token(.user, sub: "alice", sessions: ["room-7"])
            let forbidden = try Self.run(["sessions", "--url", gw.url, "--token", userToken])
            #expect(forbidden.status == .exited(3), "\(forbidden.stderr)")
            #expect(forbidden.stderr.contains("403"))
        }
    }

    /// A bad token, an unreachable gateway and a forbidden session give one clear line and their exit codes.
    @Test func errorsAreClearWithExitCodes() async throws {
        try await withGateway { gw in
            try await Self.publish(gw, "err-1", ["x"])
            let wrongSecret = try await TokenMinter.hs256(
                secret: "a-different-secret-of-sufficient-length-0123456789", sub: "ops", role: .operator, sessions: [],
                tier: nil, ttlSeconds: 600)

            let badToken = try Self.run(["tail", "err-1", "--url", gw.url, "--token", wrongSecret])
            #expect(badToken.status == .exited(2))
            #expect(badToken.stderr.contains("bad signature") && badToken.stderr.contains("4001"), "\(badToken.stderr)")
            #expect(badToken.stderr.split(separator: "\n").count == 1, "one line: \(badToken.stderr)")

            let badListing = try Self.run(["sessions", "--url", gw.url, "--token", wrongSecret])
            #expect(badListing.status == .exited(2))
            #expect(badListing.stderr.contains("bad signature"), "\(badListing.stderr)")

            let noToken = try Self.run(["tail", "err-1", "--url", gw.url])
            #expect(noToken.status == .exited(1))
            #expect(noToken.stderr.contains("no token"))

            let closedPort = try Self.freePort()
            let unreachable = try Self.run([
                "tail", "err-1", "--url", "ws://127.0.0.1:\(closedPort)/v1/ws", "--token", wrongSecret,
            ])
            #expect(unreachable.status == .exited(2))
            #expect(unreachable.stderr.contains("cannot reach the gateway"), "\(unreachable.stderr)")

            let userToken = try await gw.token(.user, sub: "u", sessions: ["other"])
            let forbidden = try Self.run(["tail", "err-1", "--url", gw.url, "--token", userToken])
            #expect(forbidden.status == .exited(3))
            #expect(forbidden.stderr.contains("forbidden"), "\(forbidden.stderr)")

            let empty = try Self.run(["tail", "never-used"] + (try await Self.endpoint(gw)))
            #expect(empty.status == .exited(3))

            let usage = try Self.run(["tail", "err-1", "--since", "1", "--last", "1"])
            #expect(usage.status == .exited(1))
            for text in [badToken.stderr, forbidden.stderr, unreachable.stderr] {
                #expect(!text.contains("Fatal error") && !text.contains(".swift:"), "no traps or source locations: \(text)")
            }
        }
    }

    /// `log cat` and `log sessions` on the data directory of a stopped gateway, and `log cat` read-only while one runs.
    @Test func logCatReadsARealDataDirectory() async throws {
        try await withGateway { gw in
            try await Self.publish(gw, "cat-1", ["one", "two", "three"])
            let running = try Self.run(["log", "cat", gw.dataDir, "--session", "cat-1", "--json"])
            #expect(running.status == .exited(0), "read-only while running: \(running.stderr)")
            #expect(try Self.seqs(ofJSONLines: running.lines) == [1, 2, 3])
            try await gw.stop()

            let human = try Self.run(["log", "cat", gw.dataDir, "--session", "cat-1", "--since", "1"])
            #expect(human.status == .exited(0), "\(human.stderr)")
            #expect(
                human.lines.count == 2 && human.lines[0].hasSuffix("two") && human.lines[1].contains("#3"),
                "\(human.stdout)")

            let sessions = try Self.run(["log", "sessions", gw.dataDir])
            #expect(sessions.status == .exited(0))
            #expect(sessions.lines.contains { $0.hasPrefix("cat-1") && $0.contains(" 3 ") }, "\(sessions.stdout)")

            #expect(try Self.run(["log", "cat", gw.dataDir, "--session", "nope"]).status == .exited(3))
            #expect(try Self.run(["log", "cat", gw.dataDir + "-missing", "--session", "cat-1"]).status == .exited(3))
        }
    }

    /// A flipped byte in the middle of a segment: `log verify` names segment and offset and exits 4; `log repair`
    /// refuses without --yes, then keeps the valid prefix with a new epoch.
    @Test func logVerifyDetectsAFlippedByte() async throws {
        try await withGateway { gw in
            try await Self.publish(gw, "flip-1", (1...8).map { "message number \($0)" })
            try await gw.stop()

            let clean = try Self.run(["log", "verify", gw.dataDir])
            #expect(clean.status == .exited(0), "\(clean.stdout) \(clean.stderr)")

            let names = try FileManager.default.contentsOfDirectory(atPath: gw.dataDir).filter { $0.hasSuffix(".tlog") }
                .sorted()
            let segment = try #require(names.last)
            let path = gw.dataDir + "/" + segment
            var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
            // Record boundaries (docs/transcript-format.md): 64-byte header, then 18-byte record header + payload.
            var starts: [Int] = []
            var offset = 64
            while offset + 18 <= bytes.count {
                starts.append(offset)
                let length =
                    Int(bytes[offset + 2]) | Int(bytes[offset + 3]) << 8 | Int(bytes[offset + 4]) << 16 | Int(
                        bytes[offset + 5]) << 24
                offset += 18 + length
            }
            #expect(starts.count == 8)
            let damaged = starts[3]  // four records follow it
            bytes[damaged + 18 + 20] ^= 0x40
            try Data(bytes).write(to: URL(fileURLWithPath: path))

            let verify = try Self.run(["log", "verify", gw.dataDir])
            #expect(verify.status == .exited(4))
            #expect(verify.stdout.contains("DAMAGE segment \(segment) offset \(damaged)"), "\(verify.stdout)")
            let cat = try Self.run(["log", "cat", gw.dataDir, "--session", "flip-1"])
            #expect(cat.status == .exited(4))
            #expect(cat.stderr.contains(segment) && cat.stderr.contains("\(damaged)"), "\(cat.stderr)")

            let refused = try Self.run(["log", "repair", gw.dataDir])
            #expect(refused.status == .exited(1))
            #expect(try Self.run(["log", "verify", gw.dataDir]).status == .exited(4), "nothing changed without --yes")
            let repair = try Self.run(["log", "repair", gw.dataDir, "--yes"])
            #expect(repair.status == .exited(0), "\(repair.stderr)")
            #expect(repair.stdout.contains("offset \(damaged)") && repair.stdout.contains(" -> "), "\(repair.stdout)")
            #expect(repair.stdout.contains("flip-1: head 3"), "\(repair.stdout)")
            #expect(try Self.run(["log", "verify", gw.dataDir]).status == .exited(0))
        }
    }

    /// Markdown export: header, chat text with markdown characters escaped, progress steps as list items.
    @Test func exportMarkdownAndJSONL() async throws {
        try await withGateway { gw in
            let agent = try await gw.client(.agent, sub: "worker-1", sessions: ["*"])
            let user = try await gw.client(.user, sub: "alice", sessions: ["exp-1"])
            _ = try user.publish("exp-1", id: "u1", kind: "chat.message", data: ["text": "Build me a *todo* app"])
            _ = try agent.publish("exp-1", id: "p1", kind: "progress", data: ["step": 1, "of": 2, "text": "Scaffolding"])
            _ = try agent.publish(
                "exp-1", id: "a1", kind: "chat.message", data: ["text": "Done\n# not a heading \u{1B}[2J"])
            _ = try agent.publish("exp-1", id: "t1", kind: "tool.call", data: ["name": "npm"])
            agent.close()
            user.close()
            try await gw.stop()

            let outFile = gw.dataDir + "-export.md"
            defer { try? FileManager.default.removeItem(atPath: outFile) }
            let run = try Self.run(["export", "exp-1", gw.dataDir, "--format", "markdown", "--output", outFile])
            #expect(run.status == .exited(0), "\(run.stderr)")
            let md = try String(contentsOfFile: outFile, encoding: .utf8)
            #expect(md.hasPrefix("# Session exp-1"))
            #expect(md.contains("**alice** (user, "), "\(md)")
            #expect(md.contains(#"Build me a \*todo\* app"#), "\(md)")
            #expect(md.contains("- step 1 of 2: Scaffolding"), "\(md)")
            #expect(md.contains(##"\# not a heading \\x1b\[2J"##), "\(md)")
            #expect(md.contains("tool.call from **worker-1**"), "\(md)")
            #expect(!md.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" }, "no control characters")

            let jsonl = try Self.run(["export", "exp-1", gw.dataDir, "--format", "jsonl"])
            #expect(jsonl.status == .exited(0))
            #expect(try Self.seqs(ofJSONLines: jsonl.lines) == [1, 2, 3, 4])
        }
    }

    /// wss://: `tail` and `sessions` verify the gateway against --ca-file; an untrusted certificate is a clear exit 2.
    @Test func tlsWithCAFile() async throws {
        let certDir = TestDirs.make("ctl-tls")
        defer { try? FileManager.default.removeItem(atPath: certDir) }
        let cert = try TestCertificates.generate(in: certDir)
        try await withGateway(tlsDir: certDir) { gw in
            let agent = try await gw.client(
                .agent, sub: "w", sessions: ["*"], tlsOptions: .verifying(caFile: cert.certificatePath))
            _ = try agent.publish("tls-1", id: "t1", data: ["text": "over tls"])
            agent.close()
            let token = try await gw.token(.operator, sub: "ops")
            #expect(gw.url.hasPrefix("wss://"))

            let tail = try Self.run(["tail", "tls-1", "--url", gw.url, "--token", token, "--ca-file", cert.certificatePath])
            #expect(tail.status == .exited(0), "\(tail.stderr)")
            #expect(tail.lines.count == 1 && tail.lines[0].hasSuffix("over tls"), "\(tail.stdout)")

            let sessions = try Self.run([
                "sessions", "--json", "--url", gw.url, "--token", token, "--ca-file", cert.certificatePath,
            ])
            #expect(sessions.status == .exited(0), "\(sessions.stderr)")

            let untrusted = try Self.run(["tail", "tls-1", "--url", gw.url, "--token", token])
            #expect(untrusted.status == .exited(2))
            #expect(untrusted.stderr.contains("TLS"), "\(untrusted.stderr)")
        }
    }

    /// `tail --follow` survives a gateway restart on the same port: every event printed exactly once.
    @Test func tailResumesAfterGatewayRestart() async throws {
        let dir = TestDirs.make("ctl-restart")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let port = try Self.freePort()
        let token = try await TestTokens.mint(.operator, sub: "ops", ttl: 600)
        let tail = try await withGatewayProcess(dataDir: dir, port: port) { _ in
            let agent1 = try await Peer.connect(port: port, role: .agent, sub: "w", sessions: ["*"])
            for i in 1...3 { _ = try agent1.publish("restart-1", id: "r\(i)", data: ["text": "before \(i)"]) }
            agent1.close()
            let tail = try Self.start(
                ["tail", "restart-1", "--follow", "--json", "--url", "ws://127.0.0.1:\(port)/v1/ws", "--token", token])
            _ = try Self.waitForLines(tail, count: 3)
            return tail
        }  // SIGTERM, exit 0 required
        try await withGatewayProcess(dataDir: dir, port: port) { _ in
            let agent2 = try await Peer.connect(port: port, role: .agent, sub: "w", sessions: ["*"])
            for i in 4...6 { _ = try agent2.publish("restart-1", id: "r\(i)", data: ["text": "after \(i)"]) }
            agent2.close()

            _ = try Self.waitForLines(tail, count: 6, timeout: .seconds(30))
            usleep(300_000)  // anything duplicated would arrive right behind
            #expect(try Self.terminate(tail) == .exited(0))
        }
        #expect(try Self.seqs(ofJSONLines: tail.stdout().split(separator: "\n").map(String.init)) == Array(1...6))
        #expect(tail.stderr().contains("reconnecting"), "\(tail.stderr())")
    }

    /// A loopback port that was free a moment ago.
    static func freePort() throws -> Int { try RedisServer.freePort() }
}
