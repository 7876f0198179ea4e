import Foundation
import GatewayAuth
import GatewayClient
import GatewayConfig
import GatewayCore
import Logging
import Synchronization
import TranscriptLog
import TranscriptLogTesting

/// A real gateway for a test: in this process (`GatewayServer`) or the built `gateway` binary as a child process.
/// Either way it listens on an ephemeral loopback port (unless told otherwise) with a temporary data directory.
///
/// Tests use it through ``withGateway(dataDir:settings:tlsDir:configJSON:withSecret:fileIO:_:)`` and
/// ``withGatewayProcess(dataDir:port:environment:executable:arguments:listeners:_:)``, which always await
/// ``stop(allowingFailure:)`` and remove what the gateway owns, so a gateway that does not shut down cleanly fails
/// the test. `stop` is idempotent: a test may stop (or kill) the gateway itself, for example to read its data
/// directory afterwards.
///
/// `@unchecked Sendable` invariant: everything is immutable after start except the stop state, which lives in a
/// `Mutex`.
public final class GatewayUnderTest: @unchecked Sendable {
    /// One listening socket.
    public struct Listener: Sendable, Hashable {
        /// The bound port.
        public var port: Int
        /// `true` for a TLS listener.
        public var tls: Bool
    }

    private enum Backend {
        case inProcess(GatewayServer)
        case child(ProcessRunner, outputDir: String)
    }

    private enum StopState { case running, stopped, killed }

    private let backend: Backend
    private let state = Mutex(StopState.running)
    private let ownedPaths: [String]

    /// The listeners in configuration order (the first is `listen`).
    public let listeners: [Listener]
    /// The data directory.
    public let dataDir: String
    /// The HS256 secret tokens for this gateway are signed with.
    public let secret: String

    /// Port of the first listener.
    public var port: Int { listeners[0].port }
    /// `true` when the first listener is TLS.
    public var tls: Bool { listeners[0].tls }
    /// WebSocket URL of the first listener.
    public var url: String { url(of: listeners[0]) }
    /// WebSocket URL of `listener`.
    public func url(of listener: Listener) -> String {
        "\(listener.tls ? "wss" : "ws")://127.0.0.1:\(listener.port)/v1/ws"
    }

    /// The child process (`nil` in-process): pid, signals, captured stdout and stderr.
    public var process: ProcessRunner? {
        if case .child(let runner, _) = backend { return runner }
        return nil
    }

    /// Storage batches (group commits) so far; in-process gateways only (0 for a child).
    public var storageBatches: Int {
        if case .inProcess(let server) = backend { return server.storageBatches }
        return 0
    }

    /// Why an in-process gateway stopped on its own, if it did (`nil` for a child).
    public var fatalReason: String? {
        if case .inProcess(let server) = backend { return server.fatalReason }
        return nil
    }

    private init(backend: Backend, listeners: [Listener], dataDir: String, secret: String, ownedPaths: [String]) {
        self.backend = backend
        self.listeners = listeners
        self.dataDir = dataDir
        self.secret = secret
        self.ownedPaths = ownedPaths
    }

    // MARK: Starting

    /// Starts a gateway in this process.
    ///
    /// In-process gateways use lws's poll loop unless `settings` say otherwise: libev allows a signal watcher (lws
    /// adds one for SIGINT) on only one loop per process, and tests run many gateways at once. Child gateways run
    /// the default libev loop.
    /// - Parameters:
    ///   - dataDir: An existing data directory (kept afterwards), or `nil` for a new temporary one (removed).
    ///   - settings: Dotted configuration keys (Config/README.md), applied as overrides.
    ///   - tlsDir: A directory with `cert.pem`/`key.pem` for a TLS listener.
    ///   - configJSON: The text of a configuration file (for file-only keys such as `auth.public_keys`).
    ///   - withSecret: Configure ``GatewayEnvironment/secret`` as the HS256 key.
    ///   - fileIO: The file layer of the transcript log (fault injection).
    ///   - logLevel: Level of the gateway's logger.
    public static func start(
        dataDir: String? = nil, settings: [String: String] = [:], tlsDir: String? = nil, configJSON: String? = nil,
        withSecret: Bool = true, fileIO: (any FileIO)? = nil, logLevel: Logger.Level = .warning
    ) async throws -> GatewayUnderTest {
        let dir = try dataDir ?? TemporaryDirectory.make(prefix: "gw")
        do {
            let env = GatewayEnvironment.variables(
                dataDir: dir, secret: withSecret ? GatewayEnvironment.secret : nil, tlsDir: tlsDir)
            var configFile: String?
            if let configJSON {
                let file = dir + ".json"
                try configJSON.write(toFile: file, atomically: true, encoding: .utf8)
                configFile = file
            }
            defer { if let configFile { try? FileManager.default.removeItem(atPath: configFile) } }
            var settings = settings
            if settings["server.event_loop"] == nil { settings["server.event_loop"] = "poll" }
            let config = try await GatewayConfiguration.load(
                configFile: configFile, environment: env, overrides: settings)
            var logger = Logger(label: "gateway-under-test")
            logger.logLevel = logLevel
            let server =
                if let fileIO {
                    try await GatewayServer(configuration: config, logger: logger, fileIO: fileIO)
                } else {
                    try await GatewayServer(configuration: config, logger: logger)
                }
            let bound = try server.start()
            return GatewayUnderTest(
                backend: .inProcess(server), listeners: bound.map { Listener(port: $0.port, tls: $0.tls) },
                dataDir: dir, secret: GatewayEnvironment.secret, ownedPaths: dataDir == nil ? [dir] : [])
        } catch {
            if dataDir == nil { TemporaryDirectory.remove(dir) }
            throw error
        }
    }

    /// Starts the built `gateway` binary (or `executable`, for example a sandbox wrapper that runs it) as a child
    /// process with the ``GatewayEnvironment`` variables, and waits until `listeners` sockets are listening.
    /// - Parameters:
    ///   - dataDir: An existing data directory (kept afterwards), or `nil` for a new temporary one (removed).
    ///   - port: `GATEWAY_LISTEN_PORT` (0: ephemeral; `nil`: from the configuration file).
    ///   - environment: More variables (`GATEWAY_LOG_LEVEL` is `info` unless given); they override the defaults.
    ///   - executable: The program to start.
    ///   - arguments: Its arguments.
    ///   - listeners: How many "listening" lines to wait for.
    ///   - timeout: Bound for start-up.
    public static func launch(
        dataDir: String? = nil, port: Int? = 0, environment: [String: String] = [:],
        executable: String = BuiltProduct.gateway, arguments: [String] = [], listeners: Int = 1,
        timeout: Duration = .seconds(30)
    ) throws -> GatewayUnderTest {
        let dir = try dataDir ?? TemporaryDirectory.make(prefix: "child")
        let out: String
        do {
            out = try TemporaryDirectory.make(prefix: "child-out")
        } catch {
            if dataDir == nil { TemporaryDirectory.remove(dir) }
            throw error
        }
        let owned = (dataDir == nil ? [dir] : []) + [out]
        let env = GatewayEnvironment.variables(dataDir: dir, port: port, logLevel: "info", extra: environment)
        let runner: ProcessRunner
        do {
            runner = try ProcessRunner(
                executable: executable, arguments: arguments, environment: env, outputDirectory: out)
        } catch {
            for path in owned { TemporaryDirectory.remove(path) }
            throw error
        }
        do {
            let bound = try waitForListeners(runner, count: listeners, timeout: timeout)
            return GatewayUnderTest(
                backend: .child(runner, outputDir: out), listeners: bound, dataDir: dir,
                secret: GatewayEnvironment.secret, ownedPaths: owned)
        } catch {
            try? runner.kill()
            _ = try? runner.wait(timeout: .seconds(5))
            let detail = "gateway did not start: \(error)\nstdout: \(runner.stdout().suffix(2000))\nstderr: \(runner.stderr().suffix(3000))"
            for path in owned { TemporaryDirectory.remove(path) }
            throw GatewayTestingError.processFailed(detail)
        }
    }

    /// Waits for `count` complete "listening … port=N" lines on the child's stdout or stderr.
    private static func waitForListeners(_ runner: ProcessRunner, count: Int, timeout: Duration) throws -> [Listener] {
        let deadline = ContinuousClock.now + timeout
        while true {
            let exited = runner.poll()
            var found: [Listener] = []
            for text in [runner.stdout(), runner.stderr()] {
                let lines = text.split(separator: "\n", omittingEmptySubsequences: true)
                let complete = text.hasSuffix("\n") ? lines.count : max(0, lines.count - 1)
                for line in lines.prefix(complete) {
                    if let port = ProcessRunner.listeningPort(in: String(line)) {
                        found.append(Listener(port: port, tls: line.contains("wss://") || line.contains("tls=true")))
                    }
                }
            }
            if found.count >= count { return Array(found.prefix(count)) }
            if let exited { throw GatewayTestingError.processFailed("process \(runner.pid) ended (\(exited))") }
            guard ContinuousClock.now < deadline else {
                throw GatewayTestingError.timeout("\(found.count) of \(count) listening lines")
            }
            usleep(10_000)
        }
    }

    // MARK: Stopping

    /// Shuts the gateway down gracefully and waits (bounded) until it has stopped. Idempotent; after ``kill()``
    /// it does nothing.
    ///
    /// In-process: `beginShutdown()`, then `stoppedAsync()` within `timeout`. Child: SIGTERM, then the exit within
    /// `timeout` (SIGKILL if it is still running).
    /// - Parameters:
    ///   - allowingFailure: Accept a fatal stop (`fatalReason`) or a non-zero exit, for tests that cause one.
    ///   - timeout: Bound for the shutdown.
    /// - Throws: `GatewayTestingError.gatewayFailed` if the gateway did not stop in time, stopped with a fatal
    ///   reason, or exited other than with status 0.
    public func stop(allowingFailure: Bool = false, timeout: Duration = .seconds(30)) async throws {
        let first = state.withLock { s -> Bool in
            guard s == .running else { return false }
            s = .stopped
            return true
        }
        guard first else { return }
        switch backend {
        case .inProcess(let server):
            server.beginShutdown()
            guard await Self.stopped(server, within: timeout) else {
                throw GatewayTestingError.gatewayFailed("in-process gateway did not stop within \(timeout)")
            }
            if let reason = server.fatalReason, !allowingFailure {
                throw GatewayTestingError.gatewayFailed("in-process gateway stopped fatally: \(reason)")
            }
        case .child:
            try stopChild(allowingFailure: allowingFailure, timeout: timeout)
        }
    }

    /// ``stop(allowingFailure:timeout:)`` for a child gateway, without `async` (SIGTERM, bounded wait for the
    /// exit, SIGKILL if it still runs). Idempotent; does nothing after ``kill()``.
    /// - Throws: `.gatewayFailed` as `stop`; `.processFailed` for an in-process gateway.
    public func terminate(allowingFailure: Bool = false, timeout: Duration = .seconds(30)) throws {
        guard case .child = backend else {
            throw GatewayTestingError.processFailed("terminate() needs a child-process gateway; use stop()")
        }
        let first = state.withLock { s -> Bool in
            guard s == .running else { return false }
            s = .stopped
            return true
        }
        guard first else { return }
        try stopChild(allowingFailure: allowingFailure, timeout: timeout)
    }

    private func stopChild(allowingFailure: Bool, timeout: Duration) throws {
        guard case .child(let runner, _) = backend else { return }
        try? runner.terminate()
        let status: ProcessExitStatus
        do {
            status = try runner.wait(timeout: timeout)
        } catch {
            try? runner.kill()
            _ = try? runner.wait(timeout: .seconds(5))
            throw GatewayTestingError.gatewayFailed(
                "gateway \(runner.pid) did not exit within \(timeout) of SIGTERM; stderr: \(runner.stderr().suffix(3000))")
        }
        if !status.isSuccess && !allowingFailure {
            throw GatewayTestingError.gatewayFailed(
                "gateway \(runner.pid) exited with \(status) on SIGTERM; stderr: \(runner.stderr().suffix(3000))")
        }
    }

    /// Waits (bounded) until an in-process gateway has stopped without being asked to, for example after a fatal
    /// storage error; it does not begin a shutdown.
    /// - Returns: `true` if it stopped within `timeout`; `false` if it still runs, or for a child gateway.
    public func stoppedOnItsOwn(within timeout: Duration) async -> Bool {
        guard case .inProcess(let server) = backend else { return false }
        return await Self.stopped(server, within: timeout)
    }

    /// `stoppedAsync()` raced against a timer (`stoppedAsync` itself cannot be cancelled).
    private static func stopped(_ server: GatewayServer, within timeout: Duration) async -> Bool {
        let once = ResumeOnce()
        return await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
            once.set(c)
            Task {
                await server.stoppedAsync()
                once.resume(true)
            }
            Task {
                try? await Task.sleep(for: timeout)
                once.resume(false)
            }
        }
    }

    /// SIGKILL and reap (child gateways only): a crash. ``stop(allowingFailure:timeout:)`` does nothing afterwards.
    /// - Throws: `.processFailed` for an in-process gateway or if the child does not die within 10 s.
    public func kill() throws {
        guard case .child(let runner, _) = backend else {
            throw GatewayTestingError.processFailed("kill() needs a child-process gateway")
        }
        state.withLock { $0 = .killed }
        try runner.kill()
        try runner.wait(timeout: .seconds(10))
    }

    /// Removes the temporary directories this gateway owns (its data directory unless one was given, and a child's
    /// output directory). Call after stopping; ``withGateway(dataDir:settings:tlsDir:configJSON:withSecret:fileIO:_:)``
    /// does.
    public func remove() {
        for path in ownedPaths { TemporaryDirectory.remove(path) }
    }

    /// Runs `body` with this gateway, then always stops it and removes what it owns. The body's error wins;
    /// otherwise a failed shutdown is thrown.
    public func use<R>(_ body: (GatewayUnderTest) async throws -> R) async throws -> R {
        let result: R
        do {
            result = try await body(self)
        } catch {
            try? await stop(allowingFailure: true)
            remove()
            throw error
        }
        do {
            try await stop()
        } catch {
            remove()
            throw error
        }
        remove()
        return result
    }

    // MARK: Clients

    /// Resident set size of a child gateway, KiB (-1 if unknown).
    public func rssKiB() -> Int {
        guard let pid = process?.pid,
            let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
        else { return -1 }
        return Int(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "") ?? -1
    }

    /// A token for this gateway.
    public func token(_ role: Role, sub: String, sessions: [String] = [], tier: String? = nil, ttl: Int = 3600)
        async throws -> String
    {
        try await TestTokens.mint(role, sub: sub, sessions: sessions, tier: tier, ttl: ttl, secret: secret)
    }

    /// Connects to the first listener, sends hello with a fresh token and waits for welcome.
    public func client(
        _ role: Role, sub: String, sessions: [String] = [], tlsOptions: TLSOptions? = nil, tier: String? = nil
    ) async throws -> Peer {
        try Peer.connect(url: url, token: try await token(role, sub: sub, sessions: sessions, tier: tier), tls: tlsOptions)
    }
}

/// Starts an in-process gateway (``GatewayUnderTest/start(dataDir:settings:tlsDir:configJSON:withSecret:fileIO:logLevel:)``),
/// runs `body`, and always awaits its shutdown and removes its temporary directory; a shutdown failure fails the
/// test, and the body's own error is rethrown first.
@discardableResult
public func withGateway<R>(
    dataDir: String? = nil, settings: [String: String] = [:], tlsDir: String? = nil, configJSON: String? = nil,
    withSecret: Bool = true, fileIO: (any FileIO)? = nil, _ body: (GatewayUnderTest) async throws -> R
) async throws -> R {
    let gw = try await GatewayUnderTest.start(
        dataDir: dataDir, settings: settings, tlsDir: tlsDir, configJSON: configJSON, withSecret: withSecret,
        fileIO: fileIO)
    return try await gw.use(body)
}

/// Starts the `gateway` binary as a child (``GatewayUnderTest/launch(dataDir:port:environment:executable:arguments:listeners:timeout:)``),
/// runs `body`, and always awaits its exit (SIGTERM, status 0 required) and removes its temporary directories.
@discardableResult
public func withGatewayProcess<R>(
    dataDir: String? = nil, port: Int? = 0, environment: [String: String] = [:],
    executable: String = BuiltProduct.gateway, arguments: [String] = [], listeners: Int = 1,
    _ body: (GatewayUnderTest) async throws -> R
) async throws -> R {
    let gw = try GatewayUnderTest.launch(
        dataDir: dataDir, port: port, environment: environment, executable: executable, arguments: arguments,
        listeners: listeners)
    return try await gw.use(body)
}

extension GatewayUnderTest {
    /// Everything a child gateway wrote so far, stdout then stderr ("" in-process).
    public func output() -> String { process.map { $0.stdout() + $0.stderr() } ?? "" }
}

/// A continuation resumed by whichever of two racing tasks comes first.
private final class ResumeOnce: Sendable {
    private let continuation = Mutex<CheckedContinuation<Bool, Never>?>(nil)
    func set(_ c: CheckedContinuation<Bool, Never>) { continuation.withLock { $0 = c } }
    func resume(_ value: Bool) { continuation.withLock { $0.take() }?.resume(returning: value) }
}
