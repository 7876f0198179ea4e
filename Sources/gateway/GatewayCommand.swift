import ArgumentParser
import Foundation
import GatewayConfig
import GatewayCore
import Logging
import Dispatch

/// `gateway`: the Samokoder realtime gateway server.
@main
struct GatewayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway",
        abstract: "The Samokoder realtime gateway: WebSocket sessions for browsers and agents, with a durable transcript log.",
        discussion: """
            Configuration comes from (lowest to highest precedence): built-in defaults, the JSON file given with
            --config (or GATEWAY_CONFIG), GATEWAY_* environment variables, then these flags. See Config/README.md.

            Examples:
              GATEWAY_AUTH_HS256_SECRET=$(openssl rand -hex 32) gateway
              gateway --config Config/gateway.json --port 8443 --tls-cert dev.crt --tls-key dev.key
            """)

    @Option(name: .long, help: "Path of the JSON configuration file (default: none, or $GATEWAY_CONFIG).")
    var config: String?
    @Option(name: .long, help: "Listen address of the first listener (IPv4/IPv6 literal).")
    var host: String?
    @Option(name: .long, help: "Listen port of the first listener (0 = pick a free port).")
    var port: Int?
    @Option(name: .customLong("data-dir"), help: "Directory of the transcript log.")
    var dataDir: String?
    @Option(name: .long, help: "fsync policy: always | interval | never.")
    var fsync: String?
    @Option(name: .customLong("tls-cert"), help: "TLS certificate (PEM) of the first listener.")
    var tlsCert: String?
    @Option(name: .customLong("tls-key"), help: "TLS private key (PEM) of the first listener.")
    var tlsKey: String?
    @Option(name: .customLong("log-level"), help: "trace | debug | info | notice | warning | error | critical.")
    var logLevel: String?

    func run() throws {
        // Signals first, before any other thread exists: SIGTERM/SIGINT are blocked in every thread (the lws,
        // libev, storage and Swift concurrency threads inherit the mask) and taken by one sigwait thread. No
        // signal can arrive between "listening" and a handler being ready, and the event library's own SIGINT
        // watcher never fires (lws-notes §3.13).
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGTERM)
        sigaddset(&signals, SIGINT)
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        GatewayServer.tuneAllocator()

        let environment = ProcessInfo.processInfo.environment
        var overrides: [String: String] = [:]
        if let host { overrides["listen.host"] = host }
        if let port { overrides["listen.port"] = String(port) }
        if let dataDir { overrides["data.dir"] = dataDir }
        if let fsync { overrides["storage.fsync"] = fsync }
        if let tlsCert { overrides["tls.cert"] = tlsCert }
        if let tlsKey { overrides["tls.key"] = tlsKey }
        if let logLevel { overrides["log.level"] = logLevel }
        let configFile = config ?? environment["GATEWAY_CONFIG"]
        let settings = overrides

        let configuration: GatewayConfiguration
        do {
            configuration = try blocking {
                try await GatewayConfiguration.load(configFile: configFile, environment: environment, overrides: settings)
            }
        } catch {
            FileHandle.standardError.write(Data("gateway: configuration error: \(error)\n".utf8))
            throw ExitCode(2)
        }
        let level = Logger.Level(rawValue: configuration.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "gateway")

        let server: GatewayServer
        let bound: [GatewayServer.BoundListener]
        do {
            server = try blocking { try await GatewayServer(configuration: configuration, logger: logger) }
            bound = try server.start()
        } catch {
            logger.critical("gateway failed to start", metadata: ["error": "\(error)"])
            FileHandle.standardError.write(Data("gateway: failed to start: \(error)\n".utf8))
            throw ExitCode(1)
        }

        let waitSet = signals
        let waiter = Thread {
            var set = waitSet
            var seen = 0
            while true {
                var signal: Int32 = 0
                guard sigwait(&set, &signal) == 0 else { continue }
                seen += 1
                if seen == 1 {
                    logger.info("signal received: draining", metadata: ["signal": "\(signal)"])
                    server.beginShutdown()
                } else {
                    FileHandle.standardError.write(Data("gateway: second signal, exiting now\n".utf8))
                    _exit(1)
                }
            }
        }
        waiter.name = "gateway-signals"
        waiter.start()

        // One machine-readable line per listener on stdout, for harnesses and humans.
        for l in bound {
            let scheme = l.tls ? "wss" : "ws"
            let host = l.host.contains(":") ? "[\(l.host)]" : l.host
            FileHandle.standardOutput.write(Data("gateway listening url=\(scheme)://\(host):\(l.port)/v1/ws port=\(l.port)\n".utf8))
        }
        server.waitUntilStopped()
        if let reason = server.fatalReason {
            FileHandle.standardError.write(Data("gateway: stopped after a storage failure: \(reason)\n".utf8))
            throw ExitCode(70)  // EX_SOFTWARE: the supervisor restarts us; open re-verifies the log
        }
    }
}

/// Runs async start-up work from the synchronous entry point (before the server's threads exist).
private func blocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let done = DispatchSemaphore(value: 0)
    let box = ResultBox<T>()
    Task.detached {
        do { box.result = .success(try await body()) } catch { box.result = .failure(error) }
        done.signal()
    }
    done.wait()
    return try box.result!.get()
}

private final class ResultBox<T>: @unchecked Sendable {
    // @unchecked Sendable: written once by the task before `done.signal()`, read after `done.wait()`.
    var result: Result<T, any Error>?
}
