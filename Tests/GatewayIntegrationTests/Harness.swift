import Foundation

// The gateway under test, its peers, tokens and environment live in GatewayTesting (GatewayUnderTest,
// withGateway, withGatewayProcess, Peer, TestTokens, GatewayEnvironment); only test-local helpers stay here.

enum TestDirs {
    static func make(_ prefix: String) -> String {
        let path = NSTemporaryDirectory() + "\(prefix)-\(UUID().uuidString.prefix(8))"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }
}
