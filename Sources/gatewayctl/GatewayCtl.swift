import ArgumentParser
import Foundation
import Glibc
import Logging

/// `gatewayctl`: the operator's command line for the Samokoder gateway.
@main
struct GatewayCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gatewayctl",
        abstract: "Operate a Samokoder gateway: mint development tokens, tail sessions, read transcripts.",
        discussion: """
            Online (a running gateway; URL and operator token from --url/--token or GATEWAY_URL/GATEWAY_TOKEN):
              tail SESSION        replay a session and follow it live
              sessions            live sessions with subscribers, head and last event time
              publish SESSION     publish one event through the HTTP API (--kind, --data)
            Offline (a data directory, read-only unless stated):
              log cat|sessions|verify|repair DATA_DIR
              export SESSION DATA_DIR --format jsonl|markdown
            Development:
              token mint          an HS256 token from the configured secret

            Exit codes: 0 ok, 1 usage or local failure, 2 connection or authentication, \
            3 not found or forbidden, 4 damaged transcript log. \
            Diagnostics (reconnects, resets) go to stderr through swift-log; GATEWAYCTL_LOG_LEVEL sets the level \
            (default notice). docs/operations.md has the details.

            Examples:
              gatewayctl token mint --role operator --sub ops --ttl 8h > ops.jwt
              export GATEWAY_TOKEN=$(cat ops.jwt)   # or: --token-file ops.jwt
              gatewayctl tail demo --last 20 --follow
              gatewayctl sessions
              gatewayctl log verify data
            """,
        subcommands: [Tail.self, Sessions.self, Publish.self, Log.self, Export.self, Token.self])

    /// Parses, runs, and maps failures to the documented exit codes: usage errors exit 1 (not
    /// ArgumentParser's 64), ``CtlError`` prints one line and exits with its code, nothing prints a stack trace.
    static func main() async {
        bootstrapLogging()
        // A closed stdout pipe (`| head`) must surface as EPIPE from write(2), which OutputSink turns into a quiet
        // exit 0, rather than kill the process in the middle of a line.
        signal(SIGPIPE, SIG_IGN)
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as CtlError {
            if !error.message.isEmpty { writeStandardError("gatewayctl: " + error.message) }
            Glibc.exit(error.exitCode.rawValue)
        } catch {
            if exitCode(for: error) == .validationFailure {
                writeStandardError(fullMessage(for: error))
                Glibc.exit(CtlExitCode.usage.rawValue)
            }
            exit(withError: error)
        }
    }

    /// swift-log to stderr at `GATEWAYCTL_LOG_LEVEL` (default `notice`).
    static func bootstrapLogging() {
        let level =
            ProcessInfo.processInfo.environment["GATEWAYCTL_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .notice
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}
