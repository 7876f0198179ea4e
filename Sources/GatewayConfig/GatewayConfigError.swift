/// A configuration problem that stops start-up. The message names the key in its file spelling
/// (`listen.port`) and its environment spelling (`GATEWAY_LISTEN_PORT`), and never contains a secret value.
public struct GatewayConfigError: Error, Sendable, CustomStringConvertible {
    /// The key in file/override spelling, when the problem is about one key.
    public let key: String?
    /// The environment variables that set the key.
    public let environmentVariables: [String]
    /// The full, human-readable message.
    public let message: String
    /// The file that raised the error (`#fileID`).
    public let fileID: String
    /// The line that raised the error.
    public let line: Int

    init(
        key: String?,
        environmentVariables: [String] = [],
        message: String,
        fileID: String = #fileID,
        line: Int = #line
    ) {
        self.key = key
        self.environmentVariables = environmentVariables
        self.message = message
        self.fileID = fileID
        self.line = line
    }

    /// The message.
    public var description: String { message }
}
