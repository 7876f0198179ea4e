import TranscriptLog
import Glibc
import Prometheus
import GatewayConfig
import CLWS
import GatewayAuth
import Foundation

/// C strings and arrays whose pointers lws keeps (protocol names, iface, cert paths, ALPN).
/// Freed only after `lws_context_destroy` returned (the service thread keeps this alive until then).
final class CAllocations {
    private var strings: [UnsafeMutablePointer<CChar>] = []
    var protocols: UnsafeMutablePointer<lws_protocols>?
    let wsProtocolName: UnsafeMutablePointer<CChar>
    let acceptProtocolName: UnsafeMutablePointer<CChar>

    init() {
        wsProtocolName = strdup("gateway")
        acceptProtocolName = strdup("gateway-accept")
    }

    func string(_ s: String) -> UnsafePointer<CChar> {
        let p = strdup(s)!
        strings.append(p)
        return UnsafePointer(p)
    }

    deinit {
        for p in strings { free(p) }
        free(wsProtocolName)
        free(acceptProtocolName)
        protocols?.deallocate()
    }
}

extension GatewayServer {
    func createContext(_ a: CAllocations) -> OpaquePointer? {
        lws_set_log_level(LLL_ERR | LLL_WARN, { level, line in
            guard let line else { return }
            var text = String(cString: line)
            while text.hasSuffix("\n") { text.removeLast() }
            lwsLogger.log(level: level & LLL_ERR != 0 ? .error : .warning, "\(text)", metadata: ["source": "lws"])
        })
        let protocols = UnsafeMutablePointer<lws_protocols>.allocate(capacity: 3)
        protocols.initialize(repeating: lws_protocols(), count: 3)
        protocols[0].name = UnsafePointer(a.wsProtocolName)
        protocols[0].callback = gatewayCallback
        protocols[0].per_session_data_size = MemoryLayout<UnsafeMutableRawPointer>.size
        // Chunk size of RECEIVE callbacks (larger messages are reassembled). lws mallocs this per connection at
        // the upgrade: at 16 KiB each idle connection held a touched page of it (7.2 KiB RSS per connection at
        // 10,000); at 2 KiB it is 4.2 KiB (docs/benchmarks.md).
        protocols[0].rx_buffer_size = 2 * 1024
        protocols[1].name = UnsafePointer(a.acceptProtocolName)
        protocols[1].callback = gatewayCallback
        protocols[1].per_session_data_size = 0
        a.protocols = protocols

        var info = lws_context_creation_info()
        info.options = CLWS_OPTION_EXPLICIT_VHOSTS | CLWS_OPTION_VALIDATE_UTF8
        if usesEventLib {
            info.options |= CLWS_OPTION_LIBEV
            // lws's libev plugin watches SIGINT on its loop. The `gateway` executable blocks SIGINT/SIGTERM in
            // every thread and takes them with sigwait, so this never fires there; a host process that does not
            // block signals still gets the same meaning: drain, and a second one exits at once.
            eventLibSignalTarget.withLock { $0 = WakeBox(server: self) }
            info.signal_cb = { _, _ in
                if eventLibSignals.add(1, ordering: .relaxed).newValue >= 2 { _exit(1) }
                eventLibSignalTarget.withLock { $0?.server }?.beginShutdown()
            }
        }
        if config.listeners.contains(where: { $0.tls != nil }) { info.options |= CLWS_OPTION_DO_SSL_GLOBAL_INIT }
        info.port = CONTEXT_PORT_NO_LISTEN_SERVER
        info.protocols = UnsafePointer(protocols)
        info.user = Unmanaged.passUnretained(self).toOpaque()
        info.timeout_secs = UInt32(max(1, config.limits.handshakeTimeoutSeconds.rounded(.up)))
        info.server_string = a.string("samokoder-gateway")
        info.fd_limit_per_thread = 0
        // Request headers may carry a Bearer token up to auth.max_token_bytes; lws's default header buffer
        // (4 KiB) would hang up on larger ones before the gateway could answer. The buffers are pooled per
        // concurrent handshake, not kept per connection.
        info.max_http_header_data = UInt16(clamping: min(65_535, config.auth.maxTokenBytes + 8 * 1024))
        return lws_create_context(&info)
    }

    func createVhost(_ ctx: OpaquePointer, listener: ListenSocket, _ a: CAllocations) -> OpaquePointer? {
        var info = lws_context_creation_info()
        info.port = CONTEXT_PORT_NO_LISTEN_SERVER
        info.protocols = UnsafePointer(a.protocols)
        info.vhost_name = a.string("listener-\(listener.index)")
        info.options = CLWS_OPTION_VALIDATE_UTF8
        info.timeout_secs = UInt32(max(1, config.limits.handshakeTimeoutSeconds.rounded(.up)))
        // A connection that has not finished its HTTP request head holds an lws header table ("ah"); lws drops it
        // after `timeout_secs_ah_idle`, which defaults to 10 s whatever `timeout_secs` says. Slowloris bound:
        // the handshake deadline applies to the request head too.
        info.timeout_secs_ah_idle = UInt32(max(1, config.limits.handshakeTimeoutSeconds.rounded(.up)))
        info.user = UnsafeMutableRawPointer(bitPattern: listener.index + 1)
        if let tls = listener.tls {
            info.options |= CLWS_OPTION_DO_SSL_GLOBAL_INIT
            info.ssl_cert_filepath = a.string(tls.cert)
            info.ssl_private_key_filepath = a.string(tls.key)
            // HTTP/1.1 only: lws 4.1.6's HTTP/2 code has unpatched CVEs (reliability.md §5).
            info.alpn = a.string("http/1.1")
        }
        return lws_create_vhost(ctx, &info)
    }

    /// The listener (by index) a wsi belongs to.
    func listener(of wsi: OpaquePointer) -> ListenSocket? {
        guard let vh = lws_get_vhost(wsi), let user = lws_get_vhost_user(vh) else { return nil }
        let index = Int(bitPattern: user) - 1
        return listeners.indices.contains(index) ? listeners[index] : nil
    }
}

import Logging
import Synchronization
let lwsLogger = Logger(label: "gateway.lws")

/// The server that a signal caught by the event library should drain (one per process in production).
let eventLibSignalTarget = Mutex<WakeBox?>(nil)
let eventLibSignals = Atomic<Int>(0)

/// The single C callback for every wsi of the gateway's context. Never throws or traps; dispatches to the
/// server found through the context's user pointer. Runs only on the service thread.
func gatewayCallback(
    _ wsi: OpaquePointer?, _ reason: lws_callback_reasons, _ user: UnsafeMutableRawPointer?,
    _ input: UnsafeMutableRawPointer?, _ len: Int
) -> Int32 {
    guard let wsi, let ctx = lws_get_context(wsi), let raw = lws_context_user(ctx) else {
        return lws_callback_http_dummy(wsi, reason, user, input, len)
    }
    let server = Unmanaged<GatewayServer>.fromOpaque(raw).takeUnretainedValue()
    return server.handle(wsi: wsi, reason: reason, user: user, input: input, len: len)
}
