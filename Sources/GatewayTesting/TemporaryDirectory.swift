import Foundation
import GatewayClient
import Glibc

/// Fresh temporary directories for test artifacts.
public enum TemporaryDirectory {
    /// Creates a new, empty directory under `$TMPDIR` (or `/tmp`).
    /// - Parameters:
    ///   - prefix: Name prefix.
    /// - Returns: The absolute path.
    /// - Throws: `.ioFailed` if `mkdtemp` fails.
    public static func make(prefix: String = "gateway-test") throws -> String {
        let base = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var template = Array("\(base)/\(prefix).XXXXXX".utf8CString)
        let result = template.withUnsafeMutableBufferPointer { buffer -> UnsafeMutablePointer<CChar>? in
            guard let base = buffer.baseAddress else { return nil }
            return mkdtemp(base)
        }
        guard result != nil else { throw GatewayTestingError.ioFailed("mkdtemp: \(errnoText())") }
        return String(decoding: template.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Removes a directory tree; errors are ignored (cleanup is best effort).
    /// - Parameters:
    ///   - path: Directory to remove.
    public static func remove(_ path: String) {
        try? FileManager.default.removeItem(atPath: path)
    }
}
