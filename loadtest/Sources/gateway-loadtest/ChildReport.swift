import Histogram

extension Engine {
    /// The child's result, one JSON object: counters, error and close-code tallies, histograms as [value, count] pairs.
    func reportJSON() -> String {
        let s = stats
        var out = "{"
        let fields: [(String, Int64)] = [
            ("connected", s.connected), ("conn_errors", s.connErr), ("closed_early", s.closedEarly),
            ("sent_total", s.sentTotal), ("sent_meas", s.sentMeas), ("expected_meas", s.expectedMeas),
            ("rx_total", s.rxTotal), ("rx_meas", s.rxMeas), ("rx_of_meas_sends", s.rxOfMeasSends),
            ("rx_pub", s.rxPub), ("rx_churn", s.rxChurn), ("rx_bad", s.rxBad), ("rx_other", s.rxOther),
            ("acks_total", s.acksTotal), ("acks_meas", s.acksMeas), ("ack_duplicates", s.ackDuplicates),
            ("gaps", s.gaps), ("dups", s.dups), ("churn_gaps", s.churnGaps), ("churn_dups", s.churnDups),
            ("churn_cycles", s.churnCycles), ("churn_connect_errors", s.churnConnectErr), ("resets", s.resets),
            ("max_backlog", s.maxBacklog), ("cpu_meas_ns", s.cpuMeasNs), ("replayed", s.replayed),
            ("reconnected", s.reconnected), ("caught_up", s.caughtUp), ("not_caught_up", s.notCaughtUp),
            ("catchup_total_ns", s.catchupTotalNs), ("lost", s.lost), ("stable_checked", s.stableChecked),
            ("fragments", s.fragments), ("bytes_in", s.bytesIn), ("bytes_out", s.bytesOut),
            ("storm_t0", stormT0), ("storm_done", stormDoneAt), ("tls_done", s.tlsDone),
        ]
        for (k, v) in fields { out += "\"\(k)\":\(v)," }
        out += "\"errors\":{" + errors.sorted { $0.key < $1.key }.map { "\(jsonString($0.key)):\($0.value)" }.joined(separator: ",") + "},"
        out += "\"close_codes\":{" + closeCodes.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\($0.value)" }.joined(separator: ",") + "},"
        out += "\"first_errors\":[" + firstErrors.map { jsonString($0) }.joined(separator: ",") + "],"
        out += "\"tls_version\":\(jsonString(tlsDescription)),"
        out += "\"heads\":[" + headBySession.map { String($0) }.joined(separator: ",") + "],"
        let hists = [
            ("h_lat", lat), ("h_ack", ackLat), ("h_hs", hsLat), ("h_ready", readyLat), ("h_catchup", catchupLat),
            ("h_tls", tlsLat), ("h_hs_tls", hsTLSLat),
        ]
        for (name, h) in hists {
            out += "\"\(name)\":[" + h.recordedValues().map { "[\($0.value),\($0.count)]" }.joined(separator: ",") + "],"
        }
        out.removeLast()
        return out + "}"
    }
}
