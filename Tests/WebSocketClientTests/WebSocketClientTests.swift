import Foundation
import Synchronization
import Testing
@testable import GatewayClient
import GatewayTesting

/// End-to-end tests against the in-process `TestServer` on 127.0.0.1 port 0.
@Suite("WebSocketClient")
struct WebSocketClientTests {
    @Test func echoesTextAndReportsHandshake() throws {
        try TestServer.with(handler: TestServer.echo) { server in
            let client = try WebSocketClient.connect(url: server.url, headers: [("Authorization", "Bearer t")])
            defer { client.close() }
            #expect(client.handshakeHeaders["upgrade"] == "websocket")
            #expect(client.localPort != nil)
            try client.sendText("hello")
            #expect(try client.receive(timeout: .seconds(5)) == .text("hello"))
            try client.sendText("")
            #expect(try client.receiveText() == "")
            try client.sendBinary([0, 1, 2, 255])
            #expect(try client.receive() == .binary([0, 1, 2, 255]))
        }
    }

    @Test func sendsDefaultAndOverriddenHeaders() throws {
        let seen = Mutex<[String: String]>([:])
        try TestServer.with(handler: { connection in
            let headers = try connection.acceptUpgrade()
            seen.withLock { $0 = headers }
            try connection.echoLoop()
        }) { server in
            let client = try WebSocketClient.connect(
                url: server.url, headers: [("Origin", "https://x.test"), ("Sec-WebSocket-Version", "13")]
            )
            try client.sendClose()
            _ = try client.waitForClose()
            client.close()
        }
        let headers = seen.withLock { $0 }
        #expect(headers["host"] == "127.0.0.1:\(headers["host"]?.split(separator: ":").last ?? "")")
        #expect(headers["upgrade"] == "websocket" && headers["connection"] == "Upgrade")
        #expect(headers["origin"] == "https://x.test")
        #expect(headers["sec-websocket-version"] == "13")
        #expect(Data(base64Encoded: headers["sec-websocket-key"] ?? "")?.count == 16)
    }

    @Test func carriesLargeMessages() throws {
        try TestServer.with(handler: TestServer.echo) { server in
            let client = try WebSocketClient.connect(url: server.url)
            defer { client.close() }
            let text = String(repeating: "abcdefghij", count: 20_480)  // 200 KB
            try client.sendText(text)
            #expect(try client.receiveText(timeout: .seconds(10)) == text)
            let binary = (0..<300_000).map { UInt8(truncatingIfNeeded: $0) }
            try client.sendBinary(binary)
            #expect(try client.receive(timeout: .seconds(10)) == .binary(binary))
        }
    }

    @Test func sendsAndReassemblesFragments() throws {
        try TestServer.with(handler: TestServer.echo) { server in
            let client = try WebSocketClient.connect(url: server.url)
            defer { client.close() }
            let text = String(repeating: "fragmé", count: 500)
            try client.sendFragmented(text: Array(text.utf8), fragmentSize: 1000)
            // The server echoes fragment by fragment; the client reassembles (and the split may cut a UTF-8
            // sequence, which is legal across fragments).
            #expect(try client.receiveText() == text)
            try client.sendFragmented([1, 2, 3], opcode: .binary, fragmentSize: 1)
            #expect(try client.receive() == .binary([1, 2, 3]))
            try client.sendClose()
            _ = try client.waitForClose()
            let frames = server.recordedNotes.filter { $0.hasPrefix("frame:") }
            #expect(frames.prefix(4) == ["frame:text:false", "frame:continuation:false", "frame:continuation:false", "frame:continuation:true"])
            #expect(frames.contains("frame:binary:false") && frames.contains("frame:continuation:true"))
        }
    }

    @Test func interleavedPingInsideFragmentedServerMessage() throws {
        try TestServer.with(handler: { connection in
            try connection.acceptUpgrade()
            try connection.send(.text, Array("ab".utf8), fin: false)
            try connection.send(.ping, [9])
            try connection.send(.continuation, Array("cd".utf8), fin: true)
            let pong = try connection.readFrame()
            connection.server.note("got:\(pong?.opcode.description ?? "eof"):\(pong?.payload ?? [])")
        }) { server in
            let client = try WebSocketClient.connect(url: server.url)
            defer { client.close() }
            #expect(try client.receive() == .ping([9]))
            #expect(try client.receive() == .text("abcd"))
            let deadline = Deadline.after(.seconds(5))
            while !server.recordedNotes.contains("got:pong:[9]"), ContinuousClock.now < deadline { usleep(5_000) }
            #expect(server.recordedNotes.contains("got:pong:[9]"))
        }
    }

    @Test func pingPongBothWays() throws {
        try TestServer.with(handler: TestServer.echo) { server in
            var options = WebSocketClientOptions()
            options.deliverPings = false
            let client = try WebSocketClient.connect(url: server.url, options: options)
            defer { client.close() }
            try client.sendPing([1, 2, 3])
            #expect(try client.receive() == .pong([1, 2, 3]))
            try client.sendPong([7])  // unsolicited: server ignores it
            try client.sendText("after")
            #expect(try client.receive() == .text("after"))
        }
    }

    @Test func clientInitiatedCloseReturnsServerCode() throws {
        try TestServer.with(handler: TestServer.echo) { server in
            let client = try WebSocketClient.connect(url: server.url)
            defer { client.close() }
            try client.sendClose(code: 4001, reason: "bye")
            let (code, reason) = try client.waitForClose(timeout: .seconds(5))
            #expect(code == 4001 && reason == "bye")
            let error = #expect(throws: GatewayClientError.closed()) { try client.receive(timeout: .seconds(1)) }
            #expect(error?.closeCode == 4001)
            #expect(server.recordedNotes.contains("close:4001"))
        }
    }

    @Test(arguments: [(UInt16(1008), "policy"), (UInt16(1001), ""), (UInt16(4400), "bad frame")])
    func serverInitiatedCloseIsDeliveredAndAnswered(_ code: UInt16, _ reason: String) throws {
        try TestServer.with(handler: { connection in
            try connection.acceptUpgrade()
            try connection.send(.close, WebSocketClient.closePayload(code: code, reason: reason))
            let reply = try connection.readFrame()
            connection.server.note("reply:\(reply.flatMap { connection.closeCode($0.payload) }.map(String.init) ?? "none")")
        }) { server in
            let client = try WebSocketClient.connect(url: server.url)
            defer { client.close() }
            #expect(try client.receive() == .close(code: code, reason: reason))
            let error = #expect(throws: GatewayClientError.closed()) { try client.receive(timeout: .seconds(1)) }
            #expect(error?.closeCode == code && error?.closeReason == reason)
            #expect(try client.waitForClose(timeout: .seconds(1)).code == code)
            server.stop()
            #expect(server.recordedNotes.contains("reply:\(code)"))
        }
    }

    @Test func emptyCloseFrameHasNoCode() throws {
        try TestServer.with(handler: { connection in
            try connection.acceptUpgrade()
            try connection.send(.close, [])
        }) { server in
            let client = try WebSocketClient.connect(url: server.url)
            defer { client.close() }
            #expect(try client.waitForClose().code == nil)
        }
    }

    @Test func eofWithoutCloseFrameThrowsClosedWithoutCode() throws {
        try TestServer.with(handler: { connection in
            try connection.acceptUpgrade()
            try connection.send(.text, Array("last".utf8))
            connection.stream.shutdownSocket()
        }) { server in
            let client = try WebSocketClient.connect(url: server.url)
            defer { client.close() }
            #expect(try client.receive() == .text("last"))
            let error = #expect(throws: GatewayClientError.closed()) { try client.receive() }
            #expect(error?.closeCode == nil)
            #expect(try client.waitForClose().code == nil)
        }
    }

    @Test(arguments: [401, 403, 404, 429, 503])
    func rejectedUpgradeReportsStatusAndBody(_ status: Int) throws {
        try TestServer.with(handler: { connection in
            _ = try connection.readRequest()
            let body = #"{"error":"status \#(status)"}"#
            try connection.sendRaw(
                "HTTP/1.1 \(status) Nope\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
            )
        }) { server in
            let error = #expect(throws: GatewayClientError.handshakeFailed()) {
                try WebSocketClient.connect(url: server.url)
            }
            #expect(error?.httpStatus == status)
            #expect(error?.httpBodyString == #"{"error":"status \#(status)"}"#)
            #expect(error?.httpHeaders["content-type"] == "application/json")
        }
    }

    @Test func rejectedUpgradeWithChunkedOrCloseDelimitedBody() throws {
        try TestServer.with(handler: { connection in
            _ = try connection.readRequest()
            try connection.sendRaw("HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nden\n\r\n2\r\ny!\r\n0\r\n\r\n")
        }) { server in
            let error = #expect(throws: GatewayClientError.handshakeFailed()) {
                try WebSocketClient.connect(url: server.url)
            }
            #expect(error?.httpStatus == 403 && error?.httpBodyString == "den\ny!")
        }
        try TestServer.with(handler: { connection in
            _ = try connection.readRequest()
            try connection.sendRaw("HTTP/1.0 404 Not Found\r\n\r\ngone")
            connection.stream.shutdownSocket()
        }) { server in
            let error = #expect(throws: GatewayClientError.handshakeFailed()) {
                try WebSocketClient.connect(url: server.url)
            }
            #expect(error?.httpStatus == 404 && error?.httpBodyString == "gone")
        }
    }

    @Test func wrongAcceptValueIsRejected() throws {
        try TestServer.with(handler: { connection in try connection.acceptUpgrade(wrongAccept: true) }) { server in
            let error = #expect(throws: GatewayClientError.handshakeFailed()) {
                try WebSocketClient.connect(url: server.url)
            }
            #expect(error?.httpStatus == 101)
        }
    }

    @Test func framesSentRightAfterThe101AreKept() throws {
        try TestServer.with(handler: { connection in
            let request = try connection.readRequest()
            let accept = WebSocketClient.acceptValue(forKey: request.headers["sec-websocket-key"] ?? "")
            // Head and two frames in one write.
            try connection.sendRaw(
                Array("HTTP/1.1 101 OK\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Accept: \(accept)\r\n\r\n".utf8)
                    + WebSocketFrame(opcode: .text, payload: Array("one".utf8)).encoded(maskKey: nil)
                    + WebSocketFrame(opcode: .text, payload: Array("two".utf8)).encoded(maskKey: nil)
            )
            _ = try connection.readFrame()
        }) { server in
            let client = try WebSocketClient.connect(url: server.url)
            defer { client.close() }
            #expect(try client.receiveText() == "one")
            #expect(try client.receiveText() == "two")
        }
    }

    /// Invalid frames from the server: the client throws, does not crash, attempts a close frame with the right code,
    /// and every later receive throws `.closed`.
    static let invalidFrames: [String: (wire: [UInt8], code: UInt16)] = [
        "masked": ([0x81, 0x81, 1, 2, 3, 4, 0x41], 1002),
        "rsv1": ([0xC1, 0x01, 0x41], 1002),
        "opcode 3": ([0x83, 0x00], 1002),
        "fragmented ping": ([0x09, 0x00], 1002),
        "continuation without start": ([0x80, 0x01, 0x41], 1002),
        "new text inside fragments": ([0x01, 0x01, 0x41, 0x81, 0x01, 0x42], 1002),
        "invalid UTF-8": ([0x81, 0x02, 0xC3, 0x28], 1007),
        "close with 1-byte payload": ([0x88, 0x01, 0x03], 1002),
        "frame over 1 KiB limit": ([0x82, 0x7E, 0x08, 0x00] + [UInt8](repeating: 0, count: 2048), 1009),
        "fragments over 1 KiB limit": (
            [0x02, 0x7E, 0x02, 0x58] + [UInt8](repeating: 0, count: 600) + [0x80, 0x7E, 0x02, 0x58]
                + [UInt8](repeating: 0, count: 600), 1009
        ),
        "huge 64-bit length": ([0x82, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], 1009),
    ]

    /// Invalid frames from the server: the client throws, does not crash, attempts a close frame with the right code,
    /// and every later receive throws `.closed`.
    @Test(arguments: invalidFrames.keys.sorted())
    func invalidServerFramesFailTheConnection(_ name: String) throws {
        let (wire, expectedCode) = try #require(Self.invalidFrames[name])
        try TestServer.with(handler: { connection in
            try connection.acceptUpgrade()
            try connection.sendRaw(wire)
            let reply = try? connection.readFrame(timeout: .seconds(3))
            connection.server.note("reply:\(reply.flatMap { connection.closeCode($0.payload) }.map(String.init) ?? "none")")
        }) { server in
            var options = WebSocketClientOptions()
            options.maxFrameSize = 1024
            options.maxMessageSize = 1024
            let client = try WebSocketClient.connect(url: server.url, options: options)
            defer { client.close() }
            let error = try #require(throws: GatewayClientError.self, "\(name)") { try client.receive() }
            #expect(error.isProtocolViolation, "\(name): \(error)")
            #expect(throws: GatewayClientError.closed(), "\(name)") { try client.receive(timeout: .milliseconds(100)) }
            server.stop()
            #expect(server.recordedNotes == ["reply:\(expectedCode)"], "\(name)")
        }
    }

    @Test func receiveTimesOutAndKeepsPartialFrames() throws {
        let release = Atomic<Int>(0)
        try TestServer.with(handler: { connection in
            try connection.acceptUpgrade()
            let wire = WebSocketFrame(opcode: .text, payload: Array(String(repeating: "x", count: 1000).utf8)).encoded(maskKey: nil)
            try connection.sendRaw(Array(wire[0..<500]))
            while release.load(ordering: .relaxed) == 0 { usleep(1_000) }
            try connection.sendRaw(Array(wire[500...]))
            _ = try? connection.readFrame(timeout: .seconds(2))
        }) { server in
            let client = try WebSocketClient.connect(url: server.url)
            defer { client.close() }
            let start = ContinuousClock.now
            #expect(throws: GatewayClientError.timeout()) { try client.receive(timeout: .milliseconds(200)) }
            let elapsed = ContinuousClock.now - start
            #expect(elapsed >= .milliseconds(190) && elapsed < .seconds(2))
            #expect(throws: GatewayClientError.timeout()) { try client.receive(timeout: .zero) }
            release.store(1, ordering: .relaxed)
            #expect(try client.receiveText().count == 1000)
        }
    }

    @Test func connectTimesOutWhenServerNeverAnswers() throws {
        try TestServer.with(handler: { connection in
            _ = try? connection.readRequest(timeout: .seconds(2))
            usleep(1_500_000)
        }) { server in
            let start = ContinuousClock.now
            #expect(throws: GatewayClientError.timeout()) {
                try WebSocketClient.connect(url: server.url, timeout: .milliseconds(300))
            }
            #expect(ContinuousClock.now - start < .seconds(1))
        }
    }

    @Test func connectionRefusedAndHangUpAreErrorsNotHangs() throws {
        // Port of a server that is gone.
        let port = try TestServer.with(handler: { _ in }) { $0.port }
        #expect(throws: GatewayClientError.connectFailed()) {
            try WebSocketClient.connect(url: "ws://127.0.0.1:\(port)/", timeout: .seconds(2))
        }
        try TestServer.with(handler: { connection in
            _ = try connection.readRequest()
            connection.stream.shutdownSocket()
        }) { server in
            #expect(throws: GatewayClientError.closed()) { try WebSocketClient.connect(url: server.url) }
        }
        #expect(throws: GatewayClientError.invalidArgument()) {
            try WebSocketClient.connect(url: "ws://127.0.0.1:1/", tls: .insecure())
        }
    }

    @Test func closeWakesABlockedReceiveAndIsIdempotent() throws {
        try TestServer.with(handler: { connection in
            try connection.acceptUpgrade()
            _ = try? connection.readFrame(timeout: .seconds(5))
        }) { server in
            let client = try WebSocketClient.connect(url: server.url)
            let outcome = Mutex<String>("")
            let done = Atomic<Bool>(false)
            let thread = Thread {
                do {
                    _ = try client.receive(timeout: .seconds(10))
                    outcome.withLock { $0 = "message" }
                } catch {
                    outcome.withLock { $0 = "\(error)" }
                }
                done.store(true, ordering: .releasing)
            }
            thread.start()
            usleep(100_000)
            let start = ContinuousClock.now
            client.close()
            client.close()
            while !done.load(ordering: .acquiring), ContinuousClock.now - start < .seconds(3) { usleep(1_000) }
            let finished = done.load(ordering: .acquiring)
            #expect(finished)
            #expect(outcome.withLock { $0 }.contains("closed"))
            #expect(client.isClosed)
            #expect(throws: GatewayClientError.closed()) { try client.sendText("late") }
        }
    }

    @Test func concurrentSendersDoNotInterleaveFrames() throws {
        try TestServer.with(handler: TestServer.echo) { server in
            let client = try WebSocketClient.connect(url: server.url)
            defer { client.close() }
            let failures = Atomic<Int>(0)
            let finished = Atomic<Int>(0)
            for sender in 0..<4 {
                Thread {
                    for i in 0..<150 {
                        do { try client.sendText("s\(sender)-\(i)-" + String(repeating: "p", count: i * 7)) } catch {
                            failures.add(1, ordering: .relaxed)
                        }
                    }
                    finished.add(1, ordering: .releasing)
                }.start()
            }
            var received: [Int: Int] = [:]
            for _ in 0..<600 {
                let text = try client.receiveText(timeout: .seconds(10))
                let parts = text.split(separator: "-")
                let sender = try #require(Int(parts[0].dropFirst()))
                let index = try #require(Int(parts[1]))
                #expect(index == received[sender, default: 0])  // per-sender order is preserved
                received[sender] = index + 1
            }
            #expect(received == [0: 150, 1: 150, 2: 150, 3: 150])
            #expect(failures.load(ordering: .relaxed) == 0)
        }
    }

    @Test func receiveJSONRequiresAnObject() throws {
        try TestServer.with(handler: TestServer.echo) { server in
            let client = try WebSocketClient.connect(url: server.url)
            defer { client.close() }
            try client.sendText(#"{"type":"hello","n":3}"#)
            let object = try client.receiveJSON()
            #expect(object["type"] as? String == "hello" && object["n"] as? Int == 3)
            try client.sendText("[1]")
            #expect(throws: GatewayClientError.unexpectedMessage()) { try client.receiveJSON() }
            try client.sendBinary([1])
            #expect(throws: GatewayClientError.unexpectedMessage()) { try client.receiveJSON() }
        }
    }

    @Test func clientFramesAreMaskedWithFreshKeysAndRawSendsAreVerbatim() throws {
        let keys = Mutex<[[UInt8]]>([])
        try TestServer.with(handler: { connection in
            try connection.acceptUpgrade()
            var raw: [UInt8] = []
            let deadline = Deadline.after(.seconds(5))
            while raw.count < 3 * 9, ContinuousClock.now < deadline {
                _ = try connection.stream.read(into: &raw, maxBytes: 1024, deadline: deadline)
            }
            guard raw.count >= 27 else { throw GatewayClientError.closed(detail: "short") }
            keys.withLock { $0 = stride(from: 0, to: 18, by: 9).map { Array(raw[($0 + 2)..<($0 + 6)]) } }
            connection.server.note("tail:\(Array(raw[18...]))")
        }) { server in
            let client = try WebSocketClient.connect(url: server.url)
            defer { client.close() }
            try client.sendText("abc")
            try client.sendText("abc")
            try client.sendRaw([0x81, 0x03, 0x61, 0x62, 0x63, 0, 0, 0, 0])  // unmasked, verbatim
            server.stop()
        }
        let seen = keys.withLock { $0 }
        #expect(seen.count == 2 && seen.first != seen.last)
    }

    @Test(.enabled(if: ipv6LoopbackAvailable)) func worksOverIPv6() throws {
        try TestServer.with(ipv6: true, handler: TestServer.echo) { server in
            let client = try WebSocketClient.connect(url: server.url)
            defer { client.close() }
            try client.sendText("v6")
            #expect(try client.receiveText() == "v6")
        }
    }

    @Test func slowConsumerLetsServerWritesBlock() throws {
        let blockedAfter = Atomic<Int>(-1)
        try TestServer.with(handler: { connection in
            try connection.acceptUpgrade()
            let chunk = WebSocketFrame(opcode: .binary, payload: [UInt8](repeating: 7, count: 16 * 1024)).encoded(maskKey: nil)
            var sent = 0
            do {
                while sent < 4096 {
                    try connection.sendRaw(chunk, timeout: .milliseconds(300))
                    sent += 1
                }
            } catch {}
            blockedAfter.store(sent, ordering: .releasing)
            _ = try? connection.readFrame(timeout: .seconds(5))
        }) { server in
            let client = try WebSocketClient.connect(url: server.url, options: .receiveBufferSize(4096))
            defer { client.close() }
            client.stopReading()
            let deadline = Deadline.after(.seconds(10))
            while blockedAfter.load(ordering: .acquiring) < 0, ContinuousClock.now < deadline { usleep(10_000) }
            let sent = blockedAfter.load(ordering: .acquiring)
            #expect(sent >= 0 && sent < 4096, "server wrote \(sent) frames before blocking")
            for _ in 0..<max(0, sent) {
                #expect(try client.receive(timeout: .seconds(5)) == .binary([UInt8](repeating: 7, count: 16 * 1024)))
            }
        }
    }
}

/// `RawHTTP` against scripted responses.
@Suite("RawHTTP")
struct RawHTTPTests {
    @Test func readsContentLengthChunkedAndUpgradeResponses() throws {
        try TestServer.with(handler: { connection in
            let request = try connection.readRequest()
            connection.server.note(request.line)
            try connection.sendRaw("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Y: z\r\n\r\nok\n")
        }) { server in
            let response = try RawHTTP.get(host: server.host, port: server.port, path: "/healthz")
            #expect(response.status == 200 && response.body == Array("ok\n".utf8) && response.headers["x-y"] == "z")
            #expect(server.recordedNotes == ["GET /healthz HTTP/1.1"])
        }
        try TestServer.with(handler: { connection in
            _ = try connection.readRequest()
            try connection.sendRaw("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nTrailer: 1\r\n\r\n")
        }) { server in
            let response = try RawHTTP.get(host: server.host, port: server.port, path: "/metrics")
            #expect(response.body == Array("abc".utf8))
        }
        try TestServer.with(handler: { connection in
            _ = try connection.readRequest()
            try connection.sendRaw("HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\nxyz")
        }) { server in
            let response = try RawHTTP.request(
                host: server.host, port: server.port,
                raw: "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
            )
            #expect(response.status == 101 && response.headers["upgrade"] == "h2c")
        }
    }

    @Test func hugeChunkSizeIsRefusedWithoutOverflow() throws {
        try TestServer.with(handler: { connection in
            _ = try connection.readRequest()
            try connection.sendRaw("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7ffffffffffffffe\r\nab")
        }) { server in
            #expect(throws: GatewayClientError.frameTooLarge()) {
                try RawHTTP.get(host: server.host, port: server.port, path: "/")
            }
        }
    }

    @Test func truncatedOrMissingResponsesAreErrors() throws {
        try TestServer.with(handler: { connection in
            _ = try connection.readRequest()
            try connection.sendRaw("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
            connection.stream.shutdownSocket()
        }) { server in
            #expect(throws: GatewayClientError.closed()) {
                try RawHTTP.get(host: server.host, port: server.port, path: "/")
            }
        }
        try TestServer.with(handler: { connection in
            _ = try connection.readRequest()
            connection.stream.shutdownSocket()
        }) { server in
            #expect(throws: GatewayClientError.closed()) {
                try RawHTTP.request(host: server.host, port: server.port, rawBytes: Array("GET / HTTP/1.1\r\nX: \u{FF}\r\n\r\n".utf8))
            }
        }
        try TestServer.with(handler: { connection in
            _ = try connection.readRequest()
            usleep(800_000)
        }) { server in
            #expect(throws: GatewayClientError.timeout()) {
                try RawHTTP.get(host: server.host, port: server.port, path: "/", timeout: .milliseconds(200))
            }
        }
    }
}

/// Throughput smoke test: many small messages must not be quadratic in the buffer handling.
@Suite("Throughput")
struct ThroughputTests {
    @Test func twentyThousandSmallMessages() throws {
        let count = 20_000
        try TestServer.with(handler: { connection in
            try connection.acceptUpgrade()
            var burst: [UInt8] = []
            for i in 0..<count {
                burst += WebSocketFrame(opcode: .text, payload: Array("m\(i)".utf8)).encoded(maskKey: nil)
            }
            try connection.sendRaw(burst)
            _ = try? connection.readFrame(timeout: .seconds(10))
        }) { server in
            let client = try WebSocketClient.connect(url: server.url)
            defer { client.close() }
            let start = ContinuousClock.now
            for i in 0..<count { #expect(try client.receiveText() == "m\(i)") }
            #expect(ContinuousClock.now - start < .seconds(5))
        }
    }
}
