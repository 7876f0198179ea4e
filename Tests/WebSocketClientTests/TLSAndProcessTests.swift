import Foundation
import Testing
@testable import GatewayClient
import GatewayTesting

/// Certificates generated once for the TLS tests (RSA key generation takes a moment).
private let certificates: Result<(good: TestCertificates.Paths, other: TestCertificates.Paths, directory: String), any Error> = Result {
    let directory = try TemporaryDirectory.make(prefix: "wsclient-tls")
    return (
        try TestCertificates.generate(in: directory),
        try TestCertificates.generate(in: directory, certificateName: "other.pem", keyName: "other-key.pem"), directory
    )
}

/// `wss://` against an in-process OpenSSL server using a certificate from `TestCertificates`.
@Suite("TLS")
struct TLSTests {
    @Test func verifiesSelfSignedCertificateOverIPv4AndLocalhost() throws {
        let certs = try certificates.get()
        let context = try TLSContext(serverCertificate: certs.good.certificatePath, keyFile: certs.good.privateKeyPath)
        try TestServer.with(tls: context, handler: TestServer.echo) { server in
            let client = try WebSocketClient.connect(
                url: server.secureURL, tls: .verifying(caFile: certs.good.certificatePath, alpn: ["http/1.1"])
            )
            defer { client.close() }
            #expect(client.negotiatedALPN == "http/1.1")
            let big = String(repeating: "tls!", count: 60_000)
            try client.sendText(big)
            #expect(try client.receiveText(timeout: .seconds(10)) == big)
            try client.sendClose(code: 1000)
            #expect(try client.waitForClose().code == 1000)

            let byName = try WebSocketClient.connect(
                url: "wss://localhost:\(server.port)/ws", tls: .verifying(caFile: certs.good.certificatePath)
            )
            defer { byName.close() }
            #expect(byName.negotiatedALPN == nil)
            try byName.sendText("sni")
            #expect(try byName.receiveText() == "sni")
        }
    }

    @Test(.enabled(if: ipv6LoopbackAvailable)) func verifiesOverIPv6() throws {
        let certs = try certificates.get()
        let context = try TLSContext(serverCertificate: certs.good.certificatePath, keyFile: certs.good.privateKeyPath)
        try TestServer.with(ipv6: true, tls: context, handler: TestServer.echo) { server in
            let client = try WebSocketClient.connect(url: server.secureURL, tls: .verifying(caFile: certs.good.certificatePath))
            defer { client.close() }
            try client.sendText("v6 tls")
            #expect(try client.receiveText() == "v6 tls")
        }
    }

    @Test func rejectsWrongCAAndWrongNameButInsecureModeConnects() throws {
        let certs = try certificates.get()
        let context = try TLSContext(serverCertificate: certs.good.certificatePath, keyFile: certs.good.privateKeyPath)
        try TestServer.with(tls: context, handler: TestServer.echo) { server in
            let wrongCA = #expect(throws: GatewayClientError.tlsFailed()) {
                try WebSocketClient.connect(url: server.secureURL, tls: .verifying(caFile: certs.other.certificatePath))
            }
            #expect(wrongCA?.detail.contains("verify") == true)
            var wrongName = TLSOptions.verifying(caFile: certs.good.certificatePath)
            wrongName.serverName = "gateway.example"
            #expect(throws: GatewayClientError.tlsFailed()) {
                try WebSocketClient.connect(url: server.secureURL, tls: wrongName)
            }
            #expect(throws: GatewayClientError.tlsFailed()) {
                try WebSocketClient.connect(url: server.secureURL, tls: .verifying(caFile: "/nonexistent.pem"))
            }
            let insecure = try WebSocketClient.connect(url: server.secureURL, tls: .insecure())
            defer { insecure.close() }
            try insecure.sendText("ok")
            #expect(try insecure.receiveText() == "ok")
        }
    }

    @Test func offeringOnlyH2IsRefusedByAnHTTP11Server() throws {
        let certs = try certificates.get()
        let context = try TLSContext(serverCertificate: certs.good.certificatePath, keyFile: certs.good.privateKeyPath)
        try TestServer.with(tls: context, handler: TestServer.echo) { server in
            #expect(throws: GatewayClientError.tlsFailed()) {
                try WebSocketClient.connect(url: server.secureURL, tls: .verifying(caFile: certs.good.certificatePath, alpn: ["h2"]))
            }
        }
    }

    @Test func rawHTTPOverTLS() throws {
        let certs = try certificates.get()
        let context = try TLSContext(serverCertificate: certs.good.certificatePath, keyFile: certs.good.privateKeyPath)
        try TestServer.with(tls: context, handler: { connection in
            _ = try connection.readRequest()
            try connection.sendRaw("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        }) { server in
            let response = try RawHTTP.get(
                host: "127.0.0.1", port: server.port, path: "/healthz", tls: .verifying(caFile: certs.good.certificatePath)
            )
            #expect(response.status == 200 && response.body == Array("ok".utf8))
        }
    }

    @Test func plainClientAgainstTLSServerFailsFast() throws {
        let certs = try certificates.get()
        let context = try TLSContext(serverCertificate: certs.good.certificatePath, keyFile: certs.good.privateKeyPath)
        try TestServer.with(tls: context, handler: TestServer.echo) { server in
            let start = ContinuousClock.now
            #expect(throws: (any Error).self) { try WebSocketClient.connect(url: server.url, timeout: .seconds(3)) }
            #expect(ContinuousClock.now - start < .seconds(4))
        }
    }
}

/// `ProcessRunner` with `/bin/sh` children.
@Suite("ProcessRunner")
struct ProcessRunnerTests {
    /// Output files go here and are removed with the suite instance.
    let output: String

    init() throws { output = try TemporaryDirectory.make(prefix: "wsclient-proc") }

    /// Not a deinit (structs have none): each test calls it via `defer`.
    func cleanUp() { TemporaryDirectory.remove(output) }

    @Test func readsListeningPortAndSurvivesKill9() throws {
        let runner = try ProcessRunner(
            executable: "/bin/sh",
            arguments: ["-c", "echo starting; sleep 0.1; echo \"info gateway listening host=127.0.0.1 port=$PORT\" >&2; exec sleep 30"],
            environment: ["PORT": "4242"], outputDirectory: output
        )
        defer { cleanUp() }
        #expect(runner.pid > 0)
        #expect(try runner.waitForListeningPort(timeout: .seconds(5)) == 4242)
        #expect(runner.isRunning)
        #expect(throws: GatewayTestingError.timeout()) { try runner.wait(timeout: .milliseconds(50)) }
        try runner.kill()
        #expect(try runner.wait(timeout: .seconds(5)) == .signaled(SIGKILL))
        #expect(runner.stdout() == "starting\n")
        try runner.kill()  // after reaping: ignored, never signals a recycled PID
    }

    @Test func reportsExitCodesWorkingDirectoryAndSIGTERM() throws {
        let directory = output
        defer { cleanUp() }
        let exiting = try ProcessRunner(
            executable: "/bin/sh", arguments: ["-c", "pwd; exit 3"], workingDirectory: directory, outputDirectory: directory
        )
        #expect(try exiting.wait(timeout: .seconds(5)) == .exited(3))
        #expect(exiting.stdout().trimmingCharacters(in: .whitespacesAndNewlines).hasSuffix((directory as NSString).lastPathComponent))

        // The child gets default signal dispositions even though the test process ignores SIGPIPE.
        let sleeper = try ProcessRunner(executable: "/bin/sleep", arguments: ["30"], outputDirectory: output)
        try sleeper.terminate()
        #expect(try sleeper.wait(timeout: .seconds(5)) == .signaled(SIGTERM))
    }

    @Test func waitForLineFailsWhenTheChildExitsFirst() throws {
        defer { cleanUp() }
        let runner = try ProcessRunner(
            executable: "/bin/sh", arguments: ["-c", "echo boom >&2; exit 1"], outputDirectory: output
        )
        let error = #expect(throws: GatewayTestingError.processFailed()) {
            try runner.waitForListeningPort(timeout: .seconds(5))
        }
        #expect(error?.detail.contains("boom") == true)
        #expect(throws: GatewayTestingError.processFailed()) {
            try ProcessRunner(executable: "/nonexistent/gateway", outputDirectory: output)
        }
    }

    @Test func deinitKillsTheChild() throws {
        defer { cleanUp() }
        var pid: pid_t = 0
        do {
            let runner = try ProcessRunner(executable: "/bin/sleep", arguments: ["30"], outputDirectory: output)
            pid = runner.pid
        }
        #expect(Glibc.kill(pid, 0) == -1)  // reaped: no such process
    }
}
