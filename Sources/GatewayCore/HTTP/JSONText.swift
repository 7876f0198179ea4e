import GatewayProtocol

/// Small JSON building for the HTTP endpoints (not on the hot path).
enum JSONText {
    enum Value {
        case string(String)
        case int(Int64)
        case raw([UInt8])
        case null
    }

    static func appendString(into out: inout [UInt8], _ s: String) {
        JSONWriter.appendString(s, to: &out)
    }

    static func appendObject(into out: inout [UInt8], _ members: [(String, Value)]) {
        out.append(UInt8(ascii: "{"))
        for (i, (key, value)) in members.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            appendString(into: &out, key)
            out.append(UInt8(ascii: ":"))
            switch value {
            case .string(let s): appendString(into: &out, s)
            case .int(let n): out.append(contentsOf: Array(String(n).utf8))
            case .raw(let bytes): out.append(contentsOf: bytes)
            case .null: out.append(contentsOf: Array("null".utf8))
            }
        }
        out.append(UInt8(ascii: "}"))
    }
}
