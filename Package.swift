// swift-tools-version: 6.1
// The Samokoder realtime gateway: a WebSocket server on libwebsockets with a durable transcript log.
// Module graph (docs/architecture.md, "Modules"):
//   leaves: CCRC32C <- TranscriptLog (the log); GatewayProtocol (frames); GatewayAuth (JWT, jwt-kit)
//   GatewayConfig -> GatewayAuth, TranscriptLog (their settings types, one per concept)
//   CLWS (C shim over Debian's libwebsockets), CHiredis (Debian's hiredis, cluster mode) <- GatewayCore (Transport/ Sessions/ Storage/ HTTP/) <- `gateway`
//   `gatewayctl` (operators' CLI) -> GatewayAuth, GatewayConfig, TranscriptLog, GatewayProtocol, the WebSocket client
//   `gateway-loadtest` (loadtest/) -> GatewayAuth, CLoadTest; benches: transcript-bench, protocol-bench
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "samokoder-gateway",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "gateway", targets: ["gateway"]),
        .executable(name: "gatewayctl", targets: ["gatewayctl"]),
        .library(name: "TranscriptLog", targets: ["TranscriptLog"]),
        .executable(name: "gateway-loadtest", targets: ["gateway-loadtest"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-configuration.git", from: "1.4.0"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
    ],
    targets: [
        // C shim: the only place that sees <libwebsockets.h> macros and variadic functions.
        .target(
            name: "CLWS",
            cSettings: [.define("_GNU_SOURCE")],
            linkerSettings: [.linkedLibrary("websockets"), .linkedLibrary("ssl")]
        ),
        // OpenSSL for the test/CLI WebSocket client (wss).
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        // hiredis 0.14 (Debian) for cluster mode: the blocking API on the Redis engine's own threads.
        .systemLibrary(name: "CHiredis", pkgConfig: "hiredis", providers: [.apt(["libhiredis-dev"])]),

        // The append-only transcript log: no dependency on the gateway or libwebsockets.
        .target(name: "TranscriptLog", dependencies: ["CCRC32C"], swiftSettings: swiftSettings),
        // CRC32C with the CPU's crc32 instruction (SSE4.2); TranscriptLog falls back to its portable code.
        .target(name: "CCRC32C"),
        // Wire protocol: strict JSON scanner, client frame decoding, server frame encoding.
        .target(name: "GatewayProtocol", swiftSettings: swiftSettings),
        // JWT verification (jwt-kit), principals, roles.
        .target(
            name: "GatewayAuth",
            dependencies: [.product(name: "JWTKit", package: "jwt-kit")],
            swiftSettings: swiftSettings
        ),
        // Configuration: Config/gateway.json + GATEWAY_* environment + flags (swift-configuration). Its settings are
        // the consuming modules' own types (AuthConfiguration, FsyncPolicy): one type per concept, no mapping.
        .target(
            name: "GatewayConfig",
            dependencies: ["GatewayAuth", "TranscriptLog", .product(name: "Configuration", package: "swift-configuration")],
            swiftSettings: swiftSettings
        ),
        // The server: lws transport, sessions and fan-out, the storage interface and local engine, HTTP, metrics.
        .target(
            name: "GatewayCore",
            dependencies: [
                "CLWS", "CHiredis", "TranscriptLog", "GatewayProtocol", "GatewayAuth", "GatewayConfig",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "gateway",
            dependencies: [
                "GatewayCore", "GatewayConfig",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "gatewayctl",
            dependencies: [
                "GatewayAuth", "GatewayConfig", "GatewayClient", "TranscriptLog", "GatewayProtocol",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        // Load generator (docs/benchmarks.md): own RFC 6455 framing on epoll, gateway and room protocols.
        .executableTarget(
            name: "gateway-loadtest",
            dependencies: ["GatewayAuth", "CLoadTest", .product(name: "Histogram", package: "hdrhistogram-swift")],
            path: "loadtest/Sources/gateway-loadtest",
            swiftSettings: swiftSettings
        ),
        // epoll and memmem for gateway-loadtest (not in Swift's Glibc module), and its OpenSSL client for wss.
        .target(
            name: "CLoadTest",
            path: "loadtest/Sources/CLoadTest",
            cSettings: [.define("_GNU_SOURCE")],
            linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto")]
        ),
        .executableTarget(name: "transcript-bench", dependencies: ["TranscriptLog"], swiftSettings: swiftSettings),
        .executableTarget(name: "transcript-crash-child", dependencies: ["TranscriptLog"], swiftSettings: swiftSettings),
        .executableTarget(name: "protocol-bench", dependencies: ["GatewayProtocol"], swiftSettings: swiftSettings),
        // A real WebSocket client (own RFC 6455 framing over POSIX sockets, OpenSSL for wss) for tests and the CLI.
        .target(name: "GatewayClient", dependencies: ["COpenSSL"], swiftSettings: swiftSettings),
        // Test-only: the gateway under test (in-process or child), peers, child processes, certificates, seeds.
        // Only test targets depend on it.
        .target(
            name: "GatewayTesting",
            dependencies: [
                "GatewayClient", "GatewayCore", "GatewayConfig", "GatewayAuth", "TranscriptLog", "TranscriptLogTesting",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Test-only, on TranscriptLog alone: seeded events and the locator of built executables.
        .target(name: "TranscriptLogTesting", dependencies: ["TranscriptLog"], swiftSettings: swiftSettings),

        .testTarget(
            name: "TranscriptLogTests", dependencies: ["TranscriptLog", "TranscriptLogTesting", "transcript-crash-child"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "WebSocketClientTests", dependencies: ["GatewayClient", "GatewayTesting"], swiftSettings: swiftSettings
        ),
        .testTarget(name: "GatewayProtocolTests", dependencies: ["GatewayProtocol"], swiftSettings: swiftSettings),
        .testTarget(name: "GatewayAuthTests", dependencies: ["GatewayAuth"], swiftSettings: swiftSettings),
        .testTarget(name: "GatewayConfigTests", dependencies: ["GatewayConfig", "GatewayAuth", "TranscriptLog"], swiftSettings: swiftSettings),
        .testTarget(
            name: "GatewayIntegrationTests",
            dependencies: [
                "GatewayCore", "GatewayClient", "GatewayTesting", "TranscriptLog", "TranscriptLogTesting", "GatewayProtocol",
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
