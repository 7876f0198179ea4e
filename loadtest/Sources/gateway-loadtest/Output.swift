import Foundation
import Histogram

/// Formats a double for JSON (finite, fixed decimals).
func num(_ x: Double, _ decimals: Int = 1) -> String {
    guard x.isFinite else { return "-1" }
    return String(format: "%.\(decimals)f", x)
}

func percentiles(_ h: Histogram<UInt64>) -> String {
    guard h.totalCount > 0 else { return "{\"n\":0}" }
    return "{\"n\":\(h.totalCount),\"p50\":\(h.valueAtPercentile(50)),\"p90\":\(h.valueAtPercentile(90)),"
        + "\"p99\":\(h.valueAtPercentile(99)),\"p999\":\(h.valueAtPercentile(99.9)),\"max\":\(h.max)}"
}

extension RunResult {
    var deliveredPerSecond: Double { Double(c("rx_meas")) / o.duration }
    var deliveryRatio: Double {
        c("expected_meas") > 0 ? Double(c("rx_of_meas_sends")) / Double(c("expected_meas")) : 0
    }
    var serverCPUPct: Double { serverCPU >= 0 && windowSeconds > 0 ? serverCPU / windowSeconds * 100 : -1 }
    var cpuPerDeliveryUs: Double {
        serverCPU >= 0 && c("rx_meas") > 0 ? serverCPU * 1e6 * (o.duration / windowSeconds) / Double(c("rx_meas")) : -1
    }
    /// Frames the server wrote in the window (deliveries, and the gateway's acks) per socket-write syscall; -1 if
    /// not counted.
    var framesPerSend: Double {
        let framesOut = Double(c("rx_meas") + (o.target == .gateway ? c("acks_meas") : 0)) * (windowSeconds / o.duration)
        return serverSends > 0 ? framesOut / Double(serverSends) : -1
    }
    var rssPerConnKiB: Double {
        rss0 > 0 && rssConn > 0 && c("connected") > 0 ? Double(rssConn - rss0) / Double(c("connected")) : -1
    }

    /// One JSON line: everything measured in this run.
    func jsonLine(extra: String = "") -> String {
        var f: [String] = []
        func add(_ k: String, _ v: String) { f.append("\"\(k)\":\(v)") }
        add("tool", "\"gateway-loadtest\"")
        add("scenario", jsonString(o.name))
        add("label", jsonString(o.label))
        add("kind", jsonString(o.kind.rawValue))
        add("target", jsonString(o.target.rawValue))
        add("tls", o.tls ? "true" : "false")
        if o.tls {
            add("tls_fraction", num(o.tlsFraction, 3))
            if o.tlsPort > 0 { add("tls_port", "\(o.tlsPort)") }
            add("tls_version", jsonString(tlsVersion))
            add("tls_handshakes", "\(c("tls_done"))")
        }
        if !o.peerName.isEmpty { add("peer", jsonString(o.peerName)) }
        if !o.fsyncNote.isEmpty { add("note", jsonString(o.fsyncNote)) }
        add("port", "\(o.port)")
        add("subs", "\(o.subs)")
        add("pubs", "\(o.pubs)")
        add("rooms", "\(o.rooms)")
        add("size", "\(o.size)")
        add("rate_per_pub", num(o.rate))
        add("target_in_msgs_s", num(o.rate * Double(o.pubs), 0))
        add("target_out_msgs_s", num(o.offeredDeliveries, 0))
        add("warmup_s", num(o.warmup))
        add("duration_s", num(o.duration))
        add("procs", "\(o.procs)")
        add("connected", "\(c("connected"))")
        add("conn_errors", "\(c("conn_errors"))")
        add("closed_early", "\(c("closed_early"))")
        add("connect_s", num(connectSeconds, 3))
        add("connect_rate_s", num(connectSeconds > 0 ? Double(c("connected")) / connectSeconds : 0, 0))
        add("handshake_us", percentiles(hs))
        add("ready_us", percentiles(ready))
        if o.tls {
            add("tls_us", percentiles(tls))
            add("handshake_tls_us", percentiles(hsTLS))
        }
        add("sent_msgs_s", num(Double(c("sent_meas")) / o.duration, 0))
        add("delivered_msgs_s", num(deliveredPerSecond, 0))
        add("delivery_ratio", num(deliveryRatio, 4))
        add("max_pub_backlog", "\(c("max_backlog"))")
        add("lat_us", percentiles(lat))
        if o.target == .gateway {
            add("acks_s", num(Double(c("acks_meas")) / o.duration, 0))
            add("ack_lat_us", percentiles(ack))
            add("ack_duplicates", "\(c("ack_duplicates"))")
        }
        add("gaps", "\(c("gaps"))")
        add("dups", "\(c("dups"))")
        add("errors", "{" + errors.sorted { $0.key < $1.key }.map { "\(jsonString($0.key)):\($0.value)" }.joined(separator: ",") + "}")
        add("close_codes", "{" + closeCodes.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\($0.value)" }.joined(separator: ",") + "}")
        if !firstErrors.isEmpty { add("first_errors", "[" + firstErrors.map { jsonString($0) }.joined(separator: ",") + "]") }
        add("server_pid", "\(o.serverPID)")
        if !o.ports.isEmpty { add("ports", "\"\(o.ports.map(String.init).joined(separator: ","))\"") }
        if !o.extraPIDs.isEmpty { add("extra_pids", "\"\(o.extraPIDs.map(String.init).joined(separator: ","))\"") }
        add("server_rss_kb", "{\"start\":\(rss0),\"connected\":\(rssConn),\"end\":\(rssEnd),\"peak\":\(rssPeak)}")
        add("rss_per_conn_kb", num(rssPerConnKiB, 2))
        add("server_cpu_s", num(serverCPU, 3))
        add("server_cpu_pct", num(serverCPUPct))
        add("server_cpu_us_per_delivery", num(cpuPerDeliveryUs, 2))
        // Frames per socket write: the deliveries (and, for the gateway, the acks) the server wrote in the window,
        // over the write syscalls perf counted (loopback: one syscall = one send()).
        add("server_sends_s", num(serverSends >= 0 ? Double(serverSends) / windowSeconds : -1, 0))
        add("frames_per_send", num(framesPerSend, 2))
        if !serverSendsNote.isEmpty { add("server_sends_note", jsonString(serverSendsNote)) }
        add("gen_cpu_pct", num(Double(c("cpu_meas_ns")) / 1e9 / o.duration * 100))
        add("machine_busy_pct", num(machineBusyPct))
        add("machine_irq_pct", num(machineIrqPct))
        // CPU (core-%) used during the window by processes other than the server and this tool: other tenants' builds
        let cores = Double(ProcessInfo.processInfo.activeProcessorCount)
        let foreign = machineBusyPct >= 0 ? max(0, machineBusyPct * cores - max(serverCPUPct, 0) - Double(c("cpu_meas_ns")) / 1e9 / o.duration * 100) : -1
        add("foreign_cpu_pct", num(foreign))
        add("cores", "\(ProcessInfo.processInfo.activeProcessorCount)")
        add("loadavg_start", jsonString(loadStart))
        add("loadavg_end", jsonString(loadEnd))
        add("rx_total", "\(c("rx_total"))")
        add("sent_total", "\(c("sent_total"))")
        add("rx_pub", "\(c("rx_pub"))")
        add("rx_bad", "\(c("rx_bad"))")
        add("fragments", "\(c("fragments"))")
        if o.kind == .churn {
            add("churn_clients", "\(o.churnClients)")
            add("churn_cycles", "\(c("churn_cycles"))")
            add("churn_connect_errors", "\(c("churn_connect_errors"))")
            add("churn_rx", "\(c("rx_churn"))")
            add("churn_gaps", "\(c("churn_gaps"))")
            add("churn_dups", "\(c("churn_dups"))")
            add("stable_checked", "\(c("stable_checked"))")
            add("lost", "\(c("lost"))")
        }
        if o.kind == .resumeStorm {
            add("behind", "\(o.behind)")
            add("reconnected", "\(c("reconnected"))")
            add("caught_up", "\(c("caught_up"))")
            add("not_caught_up", "\(c("not_caught_up"))")
            add("replayed_events", "\(c("replayed"))")
            add("storm_total_ms", num(Double(c("catchup_total_ns")) / 1e6, 1))
            add("catchup_ms_per_client", percentiles(catchup).replacingOccurrences(of: "\"n\"", with: "\"n\""))
            add("resets", "\(c("resets"))")
        }
        add("children_reported", "\(childrenOK)")
        if !extra.isEmpty { f.append(extra) }
        return "{" + f.joined(separator: ",") + "}"
    }

    /// A short human table on stderr.
    func table() -> String {
        func pcts(_ h: Histogram<UInt64>, _ unit: Double = 1000) -> String {
            guard h.totalCount > 0 else { return "-" }
            return [50.0, 90, 99, 99.9].map { num(Double(h.valueAtPercentile($0)) / unit, 2) }.joined(separator: " / ")
                + " / " + num(Double(h.max) / unit, 2)
        }
        let scheme = o.tls ? (o.tlsFraction >= 1 ? " wss" : " ws+wss") : ""
        var s = "── \(o.name) [\(o.kind.rawValue)] target=\(o.target.rawValue)\(scheme)\(o.peerName.isEmpty ? "" : " peer=\(o.peerName)")"
        s += "\(o.fsyncNote.isEmpty ? "" : " (\(o.fsyncNote))") port=\(o.port) load avg \(loadStart) → \(loadEnd)\n"
        s += String(format: "  connections   %ld ok, %ld failed in %.2f s (%.0f/s); handshake p50/p90/p99/p99.9/max ms: %@\n",
                    c("connected"), c("conn_errors"), connectSeconds,
                    connectSeconds > 0 ? Double(c("connected")) / connectSeconds : 0, pcts(hs))
        if o.tls {
            s += "  tls           \(c("tls_done")) handshakes (\(tlsVersion.isEmpty ? "-" : tlsVersion), \(num(o.tlsFraction * 100, 0))% of connections, certificate not verified); "
            s += "ms to TLS done: \(pcts(tls)); to 101: \(pcts(hsTLS))\n"
        }
        if o.kind == .fanout || o.kind == .ramp || o.kind == .churn {
            s += String(format: "  offered       %ld subs / %ld rooms, %ld pubs × %.0f msg/s × %ld B = %.0f deliveries/s\n",
                        o.subs, o.rooms, o.pubs, o.rate, o.size, o.offeredDeliveries)
            s += String(format: "  delivered     %.0f /s, ratio %.4f, max publisher backlog %ld msgs\n",
                        deliveredPerSecond, deliveryRatio, c("max_backlog"))
            s += "  latency ms    p50 / p90 / p99 / p99.9 / max: \(pcts(lat))\n"
            if o.target == .gateway {
                s += String(format: "  acks          %.0f /s; ack latency ms: %@\n", Double(c("acks_meas")) / o.duration, pcts(ack))
            }
            s += "  continuity    gaps \(c("gaps")), dups \(c("dups"))\n"
        }
        if o.kind == .churn {
            s += "  churn         \(c("churn_cycles")) cycles by \(o.churnClients) clients, churner gaps \(c("churn_gaps")) dups \(c("churn_dups")); stable checked \(c("stable_checked")), lost \(c("lost"))\n"
        }
        if o.kind == .resumeStorm {
            s += String(format: "  resume storm  %ld clients × %ld events behind: %ld caught up, %ld not, total %.1f ms, %ld events replayed\n",
                        o.subs, o.behind, c("caught_up"), c("not_caught_up"), Double(c("catchup_total_ns")) / 1e6, c("replayed"))
            s += "  per client ms p50 / p90 / p99 / p99.9 / max: \(pcts(catchup))\n"
        }
        s += String(format: "  server        RSS KiB start %ld, connected %ld, end %ld, peak %ld (%.2f KiB/conn); CPU %.1f%% (%.2f µs/delivery)\n",
                    rss0, rssConn, rssEnd, rssPeak, rssPerConnKiB, serverCPUPct, cpuPerDeliveryUs)
        if serverSends >= 0 {
            s += String(format: "  socket writes %.0f/s, %.2f frames per write (perf: send/sendto/sendmsg/write/writev)\n",
                        Double(serverSends) / windowSeconds, framesPerSend)
        } else if !serverSendsNote.isEmpty {
            s += "  socket writes not counted: \(serverSendsNote)\n"
        }
        s += String(format: "  machine       busy %.1f%% (irq %.1f%%), load generator %.1f%% of a core, load avg %@\n",
                    machineBusyPct, machineIrqPct, Double(c("cpu_meas_ns")) / 1e9 / o.duration * 100, loadEnd)
        if !errors.isEmpty || !closeCodes.isEmpty {
            s += "  errors        \(errors.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")) close codes \(closeCodes.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))\n"
        }
        return s
    }
}
