// swift-tools-version: 6.1
// libFuzzer targets for the gateway (docs/reliability.md, "Fuzzing"). A separate package so the root build is
// untouched: `GatewayProtocol`, `TranscriptLog` and `CCRC32C` are symlinks to the root package's sources (leaf
// modules), so building this package compiles only them and the fuzz entry points.
//
// Build with libFuzzer + ASan (scripts/fuzz.sh does this):
//   swift build -c debug -Xswiftc -sanitize=fuzzer,address --scratch-path ../.build-fuzz --product fuzz-frame-decoder
// A plain `swift build` also works: FuzzDriver's weak LLVMFuzzerRunDriver then just replays the files named on
// the command line (a regression runner without libFuzzer).
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "samokoder-gateway-fuzz",
    products: [
        .executable(name: "fuzz-frame-decoder", targets: ["fuzz-frame-decoder"]),
        .executable(name: "fuzz-log-reader", targets: ["fuzz-log-reader"]),
        .executable(name: "fuzz-strict-json", targets: ["fuzz-strict-json"]),
        .executable(name: "fuzz-seeds", targets: ["fuzz-seeds"]),
    ],
    targets: [
        .target(name: "GatewayProtocol", swiftSettings: swiftSettings),
        .target(name: "TranscriptLog", dependencies: ["CCRC32C"], swiftSettings: swiftSettings),
        .target(name: "CCRC32C"),
        // LLVMFuzzerRunDriver declaration (+ a weak stand-in for builds without -sanitize=fuzzer).
        .target(name: "FuzzDriver"),
        .executableTarget(name: "fuzz-frame-decoder", dependencies: ["GatewayProtocol", "FuzzDriver"], swiftSettings: swiftSettings),
        .executableTarget(name: "fuzz-log-reader", dependencies: ["TranscriptLog", "FuzzDriver"], swiftSettings: swiftSettings),
        // GatewayAuth's StrictJSON.swift (symlinked into the target: its types are internal) + the entry point.
        .executableTarget(name: "fuzz-strict-json", dependencies: ["FuzzDriver"], swiftSettings: swiftSettings),
        // Writes the seed corpora (valid frames; segments written by TranscriptLog itself).
        .executableTarget(name: "fuzz-seeds", dependencies: ["TranscriptLog", "GatewayProtocol"], swiftSettings: swiftSettings),
    ]
)
