/// Tunables for a `WebSocketClient`; every limit has a safe default.
public struct WebSocketClientOptions: Sendable, Hashable {
    /// Largest accepted frame payload from the server (default 64 MiB); larger frames fail the connection.
    public var maxFrameSize: Int = 64 * 1024 * 1024
    /// Largest accepted reassembled message (default 64 MiB).
    public var maxMessageSize: Int = 64 * 1024 * 1024
    /// Largest accepted HTTP response head for the upgrade (default 64 KiB).
    public var maxHandshakeHeadSize: Int = 64 * 1024
    /// Largest body read from a rejected upgrade (default 1 MiB).
    public var maxHandshakeBodySize: Int = 1024 * 1024
    /// `SO_RCVBUF` set before `connect` (so the advertised window starts small), or `nil` for the kernel default.
    /// Slow-consumer tests set this to a few KiB and then stop calling `receive`.
    public var receiveBufferSize: Int?
    /// `SO_SNDBUF` set before `connect`, or `nil` for the kernel default.
    public var sendBufferSize: Int?
    /// Answer server pings with a pong carrying the same payload (inside `receive`, when the ping is read).
    public var autoPong: Bool = true
    /// Return server pings from `receive` as `.ping` (after the automatic pong, if enabled).
    public var deliverPings: Bool = true
    /// Return server pongs from `receive` as `.pong`.
    public var deliverPongs: Bool = true
    /// Echo the server's close frame (RFC 6455 §5.5.1) unless this client already sent one.
    public var autoReplyClose: Bool = true
    /// Deadline for each send call that does not pass its own `timeout`.
    public var writeTimeout: Duration = .seconds(10)

    /// Creates options with the defaults above.
    public init() {}

    /// Creates options with a small kernel receive buffer, for slow-consumer tests.
    /// - Parameters:
    ///   - bytes: `SO_RCVBUF` value (Linux doubles it and enforces a minimum of about 2 KiB).
    public static func receiveBufferSize(_ bytes: Int) -> Self {
        var options = Self()
        options.receiveBufferSize = bytes
        return options
    }
}
