/// A WebSocket opcode (RFC 6455 §5.2). A struct rather than an enum so tests can send reserved opcodes (0x3, 0xB).
public struct WebSocketOpcode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The 4-bit opcode value (only the low 4 bits are put on the wire).
    public var rawValue: UInt8

    /// Wraps a raw opcode.
    /// - Parameters:
    ///   - rawValue: The opcode; bits above the low 4 are dropped when encoding.
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// 0x0, continuation frame.
    public static let continuation = Self(rawValue: 0x0)
    /// 0x1, text frame.
    public static let text = Self(rawValue: 0x1)
    /// 0x2, binary frame.
    public static let binary = Self(rawValue: 0x2)
    /// 0x8, close frame.
    public static let close = Self(rawValue: 0x8)
    /// 0x9, ping frame.
    public static let ping = Self(rawValue: 0x9)
    /// 0xA, pong frame.
    public static let pong = Self(rawValue: 0xA)

    /// `true` for close, ping, pong and the reserved control range 0xB…0xF.
    public var isControl: Bool { rawValue & 0x08 != 0 }
    /// `true` for the six opcodes RFC 6455 defines.
    public var isKnown: Bool { [0x0, 0x1, 0x2, 0x8, 0x9, 0xA].contains(rawValue) }

    /// Name for diagnostics.
    public var description: String {
        switch rawValue {
        case 0x0: "continuation"
        case 0x1: "text"
        case 0x2: "binary"
        case 0x8: "close"
        case 0x9: "ping"
        case 0xA: "pong"
        default: "opcode(0x\(String(rawValue, radix: 16)))"
        }
    }
}

/// One WebSocket frame with its payload already unmasked.
public struct WebSocketFrame: Sendable, Hashable {
    /// FIN bit.
    public var fin: Bool
    /// RSV1…RSV3 as the low three bits (RSV1 = 0b100).
    public var rsv: UInt8
    /// Opcode.
    public var opcode: WebSocketOpcode
    /// Unmasked payload.
    public var payload: [UInt8]

    /// Creates a frame.
    /// - Parameters:
    ///   - opcode: Opcode.
    ///   - payload: Unmasked payload.
    ///   - fin: FIN bit (default `true`).
    ///   - rsv: RSV bits as the low three bits (default 0).
    public init(opcode: WebSocketOpcode, payload: [UInt8] = [], fin: Bool = true, rsv: UInt8 = 0) {
        self.fin = fin
        self.rsv = rsv
        self.opcode = opcode
        self.payload = payload
    }

    /// Encodes the frame; masks the payload with `maskKey` when given (clients must mask, servers must not).
    /// - Parameters:
    ///   - maskKey: Four masking bytes, or `nil` for an unmasked (server-style) frame. Extra bytes are ignored;
    ///     fewer than four are padded with zeros.
    public func encoded(maskKey: [UInt8]?) -> [UInt8] {
        var out: [UInt8] = []
        let count = payload.count
        out.reserveCapacity(count + 14)
        out.append((fin ? 0x80 : 0) | ((rsv & 0x07) << 4) | (opcode.rawValue & 0x0F))
        let maskBit: UInt8 = maskKey == nil ? 0 : 0x80
        if count <= 125 {
            out.append(maskBit | UInt8(count))
        } else if count <= 0xFFFF {
            out.append(maskBit | 126)
            out.append(UInt8(truncatingIfNeeded: count >> 8))
            out.append(UInt8(truncatingIfNeeded: count))
        } else {
            out.append(maskBit | 127)
            let length = UInt64(count)
            for shift in stride(from: 56, through: 0, by: -8) {
                out.append(UInt8(truncatingIfNeeded: length >> UInt64(shift)))
            }
        }
        if let maskKey {
            var key: [UInt8] = Array(maskKey.prefix(4))
            while key.count < 4 { key.append(0) }
            out.append(contentsOf: key)
            let start = out.count
            out.append(contentsOf: payload)
            out.withUnsafeMutableBufferPointer { buffer in
                for i in 0..<count { buffer[start + i] ^= key[i & 3] }
            }
        } else {
            out.append(contentsOf: payload)
        }
        return out
    }
}

/// Incremental frame parser for one direction of a connection (RFC 6455 §5.2); pure, no I/O.
///
/// Enforces the frame-level rules: known opcodes, RSV bits zero (no extensions are negotiated), control frames
/// unfragmented and ≤ 125 bytes, masking matching the direction, 64-bit lengths with the top bit clear, and the
/// payload limit. Non-minimal length encodings are accepted. Message-level rules (fragment order, UTF-8, close
/// payloads) belong to the caller.
struct WebSocketFrameDecoder: Sendable {
    /// Outcome of one `decode` call.
    enum Result: Equatable {
        /// Not enough bytes yet for a whole frame.
        case needMore
        /// A whole frame occupying `consumed` bytes from the start of the input.
        case frame(WebSocketFrame, consumed: Int)
    }

    /// `true` on the server side (client frames must be masked), `false` on the client side.
    var expectMasked: Bool
    /// Largest accepted payload in bytes.
    var maxPayload: Int

    /// Decodes one frame from the start of `bytes`.
    /// - Parameters:
    ///   - bytes: Buffered input.
    /// - Throws: `GatewayClientError.protocolViolation` or `.frameTooLarge`.
    func decode(_ bytes: ArraySlice<UInt8>) throws -> Result {
        let base = bytes.startIndex
        guard bytes.count >= 2 else { return .needMore }
        let b0 = bytes[base]
        let b1 = bytes[base + 1]
        let fin = b0 & 0x80 != 0
        let rsv = (b0 >> 4) & 0x07
        let opcode = WebSocketOpcode(rawValue: b0 & 0x0F)
        let masked = b1 & 0x80 != 0
        guard rsv == 0 else { throw GatewayClientError.protocolViolation("RSV bits \(rsv) set without extension") }
        guard opcode.isKnown else { throw GatewayClientError.protocolViolation("reserved \(opcode)") }
        guard masked == expectMasked else {
            throw GatewayClientError.protocolViolation(masked ? "masked frame from server" : "unmasked client frame")
        }
        var offset = 2
        var length: UInt64 = UInt64(b1 & 0x7F)
        if length == 126 {
            guard bytes.count >= offset + 2 else { return .needMore }
            length = UInt64(bytes[base + 2]) << 8 | UInt64(bytes[base + 3])
            offset += 2
        } else if length == 127 {
            guard bytes.count >= offset + 8 else { return .needMore }
            length = 0
            for i in 0..<8 { length = length << 8 | UInt64(bytes[base + 2 + i]) }
            offset += 8
            guard length & (1 << 63) == 0 else {
                throw GatewayClientError.protocolViolation("64-bit length with the top bit set")
            }
        }
        if opcode.isControl {
            guard fin else { throw GatewayClientError.protocolViolation("fragmented \(opcode) frame") }
            guard length <= 125 else { throw GatewayClientError.protocolViolation("\(opcode) payload \(length) > 125") }
        }
        guard length <= UInt64(max(0, maxPayload)) else {
            throw GatewayClientError.frameTooLarge("frame payload \(length) > limit \(maxPayload)")
        }
        let payloadLength = Int(length)
        var key: (UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0)
        if masked {
            guard bytes.count >= offset + 4 else { return .needMore }
            key = (bytes[base + offset], bytes[base + offset + 1], bytes[base + offset + 2], bytes[base + offset + 3])
            offset += 4
        }
        guard bytes.count - offset >= payloadLength else { return .needMore }
        var payload = Array(bytes[(base + offset)..<(base + offset + payloadLength)])
        if masked {
            let k = [key.0, key.1, key.2, key.3]
            payload.withUnsafeMutableBufferPointer { buffer in
                for i in 0..<buffer.count { buffer[i] ^= k[i & 3] }
            }
        }
        return .frame(WebSocketFrame(opcode: opcode, payload: payload, fin: fin, rsv: rsv), consumed: offset + payloadLength)
    }
}
