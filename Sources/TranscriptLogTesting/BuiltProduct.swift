import Foundation

/// Executables built by this package (`gateway`, `gatewayctl`, `transcript-crash-child`, …), found next to the
/// running test bundle: `swift build --build-tests` puts them in the same directory.
public enum BuiltProduct {
    /// The path of the executable product `name`: the first directory, walking up from the test process's own
    /// executable (inside an `.xctest` bundle on some layouts), that holds an executable file of that name.
    /// When none does, the path next to the test executable (so a "build it first" message can name it).
    /// - Parameters:
    ///   - name: The product name, for example `"gateway"`.
    /// - Returns: An absolute path.
    public static func path(_ name: String) -> String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        let start = (exe as NSString).deletingLastPathComponent
        var dir = start
        while !dir.isEmpty && dir != "/" {
            if FileManager.default.isExecutableFile(atPath: dir + "/" + name) { return dir + "/" + name }
            dir = (dir as NSString).deletingLastPathComponent
        }
        return start + "/" + name
    }

    /// The `gateway` server executable.
    public static var gateway: String { path("gateway") }
}
