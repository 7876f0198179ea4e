import ArgumentParser
import Foundation
import GatewayAuth
import GatewayConfig

extension GatewayCtl {
    /// `gatewayctl token`: development tokens.
    struct Token: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Development tokens.", subcommands: [Mint.self])
    }
}

extension GatewayCtl.Token {
    /// `gatewayctl token mint`: an HS256 token from the configured development secret.
    struct Mint: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Mint an HS256 token from the configured secret; the token is printed alone on the last line.",
            discussion: """
                The secret comes from GATEWAY_AUTH_HS256_SECRET, or from auth.hs256_secret in --config.

                Examples:
                  gatewayctl token mint --role user --sub alice --session demo
                  gatewayctl token mint --role agent --sub worker-1 --session '*' --ttl 8h
                  gatewayctl token mint --role operator --sub ops --ttl 15m
                """)

        enum RoleArgument: String, ExpressibleByArgument, CaseIterable { case user, agent, `operator` }

        @Option(help: "Role: user | agent | operator.") var role: RoleArgument
        @Option(help: "Subject: the user id or worker id.") var sub: String
        @Option(
            name: .customLong("session"),
            help: "A session the token may join (repeatable; '*' = any, agents/operators).")
        var sessions: [String] = []
        @Option(help: "Plan tier that selects rate limits.") var tier: String?
        @Option(help: "Lifetime: e.g. 90s, 15m, 1h, 7d.") var ttl: String = "1h"
        @Option(help: "JSON configuration file to read auth.* from.") var config: String?

        func run() async throws {
            guard let seconds = Self.parseDuration(ttl), seconds > 0 else {
                throw ValidationError("--ttl must look like 90s, 15m, 1h or 7d")
            }
            let env = ProcessInfo.processInfo.environment
            let configuration: GatewayConfiguration
            do {
                configuration = try await GatewayConfiguration.load(
                    configFile: config ?? env["GATEWAY_CONFIG"], environment: env, overrides: [:])
            } catch {
                throw ValidationError("\(error)")
            }
            guard let secret = configuration.auth.hs256Secret else {
                throw ValidationError("no HS256 secret: set GATEWAY_AUTH_HS256_SECRET or auth.hs256_secret")
            }
            let role: Role
            switch self.role {
            case .user: role = .user
            case .agent: role = .agent
            case .operator: role = .operator
            }
            let token = try await TokenMinter.hs256(
                secret: secret, sub: sub, role: role, sessions: sessions, tier: tier, ttlSeconds: seconds,
                audience: configuration.auth.audience, issuer: configuration.auth.issuer)
            FileHandle.standardError.write(Data("role=\(role.rawValue) sub=\(sub) ttl=\(seconds)s\n".utf8))
            FileHandle.standardOutput.write(Data((token + "\n").utf8))
        }

        /// Parses `90s`, `15m`, `1h`, `7d` or plain seconds.
        /// - Parameters:
        ///   - s: The text.
        /// - Returns: Seconds, or `nil`.
        static func parseDuration(_ s: String) -> Int? {
            guard let unit = s.last, let n = Int(s.dropLast()) else { return Int(s) }
            let factor: Int
            switch unit {
            case "s": factor = 1
            case "m": factor = 60
            case "h": factor = 3_600
            case "d": factor = 86_400
            default: return nil
            }
            // No trap on a huge number: an overflowing ttl is simply invalid.
            let (seconds, overflow) = n.multipliedReportingOverflow(by: factor)
            return overflow ? nil : seconds
        }
    }
}
