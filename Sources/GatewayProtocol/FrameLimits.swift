/// Size and shape limits applied while decoding a client frame.
///
/// The gateway builds one from its configuration; the defaults match protocol-v1.md ("Default limits").
public struct FrameLimits: Sendable, Equatable {
    /// The maximum message size in bytes; larger messages are refused with `too_large` (lws enforces it too, at the
    /// transport, with close 1009; this check keeps the decoder safe on its own).
    public var maxMessageBytes: Int
    /// The maximum JSON nesting depth, counting the frame object itself as 1.
    public var maxDepth: Int
    /// The maximum number of top-level members in a frame (unknown fields are ignored, but not without bound).
    public var maxMembers: Int

    /// The contract's defaults: 1 MiB messages, depth 64, 256 top-level members.
    public static let `default` = FrameLimits()

    /// Creates limits.
    /// - Parameters:
    ///   - maxMessageBytes: The maximum message size in bytes (default 1 MiB).
    ///   - maxDepth: The maximum nesting depth, counting the frame object as 1 (default 64).
    ///   - maxMembers: The maximum number of top-level members (default 256).
    public init(
        maxMessageBytes: Int = 1 << 20,
        maxDepth: Int = JSONScanner.defaultMaxDepth,
        maxMembers: Int = JSONScanner.defaultMaxMembers
    ) {
        self.maxMessageBytes = maxMessageBytes
        self.maxDepth = maxDepth
        self.maxMembers = maxMembers
    }
}
