import Foundation

/// A self-signed certificate for `localhost`, `127.0.0.1` and `::1`, made with `/usr/bin/openssl`.
public enum TestCertificates {
    /// Paths of a generated certificate and key.
    public struct Paths: Sendable, Hashable {
        /// PEM certificate; also the CA file clients verify against (`TLSOptions.verifying(caFile:)`).
        public var certificatePath: String
        /// PEM private key (unencrypted).
        public var privateKeyPath: String
    }

    /// Generates an RSA-2048 self-signed certificate valid for two days.
    ///
    /// The default file names, `cert.pem` and `key.pem`, are the ones the integration harness passes to the
    /// gateway as `GATEWAY_TLS_CERT` / `GATEWAY_TLS_KEY`.
    /// - Parameters:
    ///   - directory: Existing or new directory for the two files.
    ///   - certificateName: File name of the certificate.
    ///   - keyName: File name of the private key.
    ///   - openssl: Path of the openssl binary.
    ///   - timeout: Bound for key generation.
    /// - Returns: The paths.
    /// - Throws: `.processFailed` if openssl fails (stderr in the detail), `.timeout`.
    public static func generate(
        in directory: String, certificateName: String = "cert.pem", keyName: String = "key.pem",
        openssl: String = "/usr/bin/openssl",
        timeout: Duration = .seconds(60)
    ) throws -> Paths {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw GatewayTestingError.ioFailed("cannot create \(directory): \(error)")
        }
        let paths = Paths(certificatePath: "\(directory)/\(certificateName)", privateKeyPath: "\(directory)/\(keyName)")
        let runner = try ProcessRunner(
            executable: openssl,
            arguments: [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1", "-days", "2",
                "-keyout", paths.privateKeyPath, "-out", paths.certificatePath,
            ],
            outputDirectory: directory
        )
        let status: ProcessExitStatus
        do {
            status = try runner.wait(timeout: timeout)
        } catch {
            try? runner.kill()
            throw error
        }
        guard status.isSuccess, FileManager.default.fileExists(atPath: paths.certificatePath),
            FileManager.default.fileExists(atPath: paths.privateKeyPath)
        else {
            throw GatewayTestingError.processFailed("openssl req failed (\(status)): \(runner.stderr().suffix(1000))")
        }
        try? FileManager.default.removeItem(atPath: runner.stdoutPath)
        try? FileManager.default.removeItem(atPath: runner.stderrPath)
        return paths
    }
}
