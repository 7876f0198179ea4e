import Foundation
import GatewayProtocol
import Testing

/// SplitMix64: tiny, seedable, and good enough to drive mutations reproducibly.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

enum Byte {
    static func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }
}

@Suite("Fuzz")
struct FuzzTests {
    static let seeds: [String] = [
        #"{"type":"publish","session":"proj-42:chat","id":"m-1","kind":"chat.message","data":{"text":"hi","n":[1,2.5e3,-0,null,true,false]}}"#,
        #"{"type":"publish","session":"s","id":"é😀","kind":"chat.delta","data":"t\"\\\u00e9\ud83d\ude00","ephemeral":true}"#,
        #"{"type":"join","session":"s.1","since":18446744073709551615,"epoch":"e-1"}"#,
        #"{"type":"leave","session":"a:b"}"#,
        #"{"type":"hello","token":"eyJhbGciOiJIUzI1NiJ9.e30.sig"}"#,
        #"{"type":"ping","id":"p1","extra":{"a":[{},[],""]}}"#,
        "{ \"type\" : \"publish\" ,\n\"session\":\"s\",\"id\":\"i\",\"kind\":\"k\",\"data\": [ [ [ ] ] ] }",
    ]

    /// Bytes that are structurally interesting to JSON, to make mutations hit parser edges more often than noise.
    static let interesting: [UInt8] = Array(#"{}[]",:\ 0123456789-+.eEutfnlrsa/"#.utf8) + [0x00, 0x09, 0x0A, 0x1F, 0x7F, 0x80, 0xBF, 0xC0, 0xE2, 0xED, 0xF4, 0xFF]

    static func mutate(_ input: [UInt8], _ rng: inout SplitMix64) -> [UInt8] {
        var bytes = input
        let rounds = Int.random(in: 1...4, using: &rng)
        for _ in 0..<rounds {
            let position = bytes.isEmpty ? 0 : Int.random(in: 0..<bytes.count, using: &rng)
            switch Int.random(in: 0..<8, using: &rng) {
            case 0 where !bytes.isEmpty:
                bytes[position] ^= UInt8(1) << UInt8.random(in: 0..<8, using: &rng)
            case 1 where !bytes.isEmpty:
                bytes[position] = interesting.randomElement(using: &rng)!
            case 2:
                bytes.insert(interesting.randomElement(using: &rng)!, at: position)
            case 3 where !bytes.isEmpty:
                bytes.remove(at: position)
            case 4 where !bytes.isEmpty:
                let end = min(bytes.count, position + Int.random(in: 1...16, using: &rng))
                bytes.insert(contentsOf: bytes[position..<end], at: Int.random(in: 0...bytes.count, using: &rng))
            case 5:
                bytes = Array(bytes.prefix(position))
            case 6:
                let other = Array(seeds.randomElement(using: &rng)!.utf8)
                let cut = Int.random(in: 0...other.count, using: &rng)
                bytes = Array(bytes.prefix(position)) + other[cut...]
            default:
                bytes.insert(UInt8.random(in: 0...255, using: &rng), at: position)
            }
        }
        return bytes
    }

    @Test("10,000 random and mutated inputs never crash; results are consistent")
    func fuzz() throws {
        var rng = SplitMix64(state: 0x5A40_C0DE_2026_1125)
        var frames = 0
        var errors = 0
        let limits = FrameLimits(maxMessageBytes: 4096, maxDepth: 16, maxMembers: 32)
        for iteration in 0..<10_000 {
            let input: [UInt8]
            switch iteration % 10 {
            case 0:
                input = (0..<Int.random(in: 0...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            case 1:
                input = (0..<Int.random(in: 0...64, using: &rng)).map { _ in Self.interesting.randomElement(using: &rng)! }
            default:
                input = Self.mutate(Array(Self.seeds[iteration % Self.seeds.count].utf8), &rng)
            }

            // The scanner's acceptance must be a subset of Foundation's (Foundation is more lenient, never stricter),
            // with one deliberate exception: RFC 8259 lets parsers limit number range, and Foundation refuses numbers
            // beyond Double (`1E09551615`), while the scanner accepts any well-formed number (JavaScript reads it as
            // Infinity). Inputs with an exponent are therefore left out of the comparison.
            let hasExponent = zip(input, input.dropFirst()).contains { Byte.isDigit($0) && ($1 | 0x20) == UInt8(ascii: "e") }
            if case .success(let object) = JSONScanner(maxDepth: 16, maxMembers: 32).scanObject(input) {
                #expect(
                    hasExponent || (try? JSONSerialization.jsonObject(with: Data(input))) != nil,
                    "scanner accepted what Foundation rejects: \(String(decoding: input, as: UTF8.self))"
                )
                for member in object.members {
                    #expect(member.range.lowerBound >= 0 && member.range.upperBound <= input.count)
                }
            }

            switch ClientFrame.decode(input, limits: limits) {
            case .success(let frame):
                frames += 1
                try checkInvariants(frame)
            case .failure(let error):
                errors += 1
                #expect(error.code == .badRequest || error.code == .tooLarge)
                #expect(!error.message.isEmpty && error.message.utf8.count < 200)
                // Every error must be encodable as a valid error frame.
                #expect(reason(scan(bytes: error.serverFrame.encoded())) == nil)
            }
        }
        #expect(frames + errors == 10_000)
        // The mix must exercise both paths, or the fuzzer is not testing much.
        #expect(frames > 250)
        #expect(errors > 2000)
    }

    func checkInvariants(_ frame: ClientFrame) throws {
        switch frame {
        case .publish(let p):
            #expect(FieldRules.isValidSessionID(p.session))
            #expect(FieldRules.isValidPublisherID(p.id))
            #expect(FieldRules.isValidKind(p.kind))
            // data is one complete JSON value: wrapping it must scan.
            #expect(reason(scan(bytes: Array(#"{"d":"#.utf8) + p.data + [UInt8(ascii: "}")])) == nil)
            // And the event frame built from it is valid JSON with the same data.
            var buffer: [UInt8] = []
            ServerFrame.appendEvent(
                into: &buffer, session: p.session, seq: 1, id: p.id, kind: p.kind, sub: "s", role: "user",
                timestampMs: 0, data: p.data)
            let object = try scan(bytes: buffer).get()
            let data = try #require(object.member("data", in: buffer))
            #expect(Array(buffer[data.range]) == p.data)
        case .join(let j):
            #expect(FieldRules.isValidSessionID(j.session))
            if let last = j.last {
                #expect((1...10_000).contains(last))
                #expect(j.since == nil)
            }
        case .history(let h):
            #expect(FieldRules.isValidSessionID(h.session))
            #expect(ClientFrame.History.limitRange.contains(h.limit))
            if let id = h.id { #expect(FieldRules.isValidPublisherID(id)) }
        case .refresh(let r):
            #expect(!r.token.isEmpty)
        case .leave(let l):
            #expect(FieldRules.isValidSessionID(l.session))
        case .ping(let p):
            if let id = p.id { #expect(FieldRules.isValidPublisherID(id)) }
        case .hello:
            break
        }
    }
}
