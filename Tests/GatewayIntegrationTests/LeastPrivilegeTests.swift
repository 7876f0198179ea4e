import Foundation
import GatewayAuth
import GatewayClient
import GatewayTesting
import Testing
import TranscriptLogTesting

/// Least privilege (docs/reliability.md, "Least privilege"): the real `gateway` binary runs with only its data
/// directory writable, as an unprivileged user without capabilities, with no_new_privs and the kernel's
/// MemoryDenyWriteExecute, and still serves and persists. Also checks Config/samokoder-gateway.service.
///
/// The sandbox is a private mount namespace (`unshare --mount --propagation private`) in which the data directory
/// is bind-mounted onto itself and then every mount point (/, /tmp, /dev/shm, /proc, ...) is remounted read-only,
/// so the only writable place is the data directory: what `ProtectSystem=strict` + `ReadWritePaths=` give under
/// systemd. Nothing changes outside the namespace (propagation is private).
@Suite("Least privilege", .serialized, .timeLimit(.minutes(3)))
struct LeastPrivilegeTests {
    static let repoRoot: String = {
        // Tests/GatewayIntegrationTests/LeastPrivilegeTests.swift -> repository root.
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()
    static let unitPath = repoRoot + "/Config/samokoder-gateway.service"

    /// Runs a command to completion; returns (exit status, stdout, stderr).
    static func run(_ executable: String, _ arguments: [String], timeout: Duration = .seconds(30)) throws -> (ProcessExitStatus, String, String) {
        let out = TestDirs.make("lp-run")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let r = try ProcessRunner(executable: executable, arguments: arguments, outputDirectory: out)
        let status: ProcessExitStatus
        do { status = try r.wait(timeout: timeout) } catch {
            try? r.kill()
            _ = try? r.wait(timeout: .seconds(5))
            throw error
        }
        return (status, r.stdout(), r.stderr())
    }

    static func which(_ name: String) -> String? {
        for dir in ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"] where FileManager.default.isExecutableFile(atPath: "\(dir)/\(name)") {
            return "\(dir)/\(name)"
        }
        return nil
    }

    /// Whether this process may create a mount namespace and remount in it (root, or CAP_SYS_ADMIN).
    static let sandboxAvailable: Bool = {
        guard getuid() == 0, let unshare = which("unshare"), which("setpriv") != nil else { return false }
        let probe = try? run(unshare, ["--mount", "--propagation", "private", "--", "/bin/sh", "-c", "mount -o remount,bind,ro / && ! touch /.lp-probe 2>/dev/null"], timeout: .seconds(10))
        return probe?.0 == .exited(0)
    }()

    /// The unprivileged user the gateway runs as in the sandbox (`nobody`).
    static let sandboxUID: UInt32 = 65534

    /// The sandbox: shell script run by `unshare`, then `setpriv` (user, no capabilities, no_new_privs), then the
    /// MemoryDenyWriteExecute wrapper, then the gateway (`exec` all the way: the runner's PID is the gateway's).
    static let sandboxScript = #"""
        set -eu
        DATA="$1"; shift
        mount --bind "$DATA" "$DATA"
        # Every mount point except the data directory read-only; deepest first so nothing is hidden.
        awk '{print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
          m=$(printf '%b' "$m")
          [ "$m" = "$DATA" ] && continue
          mount -o remount,bind,ro "$m" 2>/dev/null || echo "sandbox: could not remount $m read-only" >&2
        done
        # Probes, as root (stronger than as the gateway's user): writes outside the data dir must fail with EROFS.
        for d in / /tmp "${TMPDIR:-/tmp}" /var/tmp /dev/shm /root "$LP_REPO" "$(dirname "$DATA")"; do
          if touch "$d/.least-privilege-probe" 2>/dev/null; then
            rm -f "$d/.least-privilege-probe"; echo "probe writable $d"
          else
            echo "probe read-only $d"
          fi
        done
        touch "$DATA/.least-privilege-probe" && rm "$DATA/.least-privilege-probe" && echo "probe data-writable $DATA"
        exec setpriv --reuid="$LP_UID" --regid="$LP_UID" --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs -- "$@"
        """#

    /// Python wrapper: prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN), then exec. MDWE is inherited across execve:
    /// the kernel's version of systemd's MemoryDenyWriteExecute (which uses seccomp for the same rule).
    static let mdweWrapper = #"""
        import ctypes, os, sys
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(65, 1, 0, 0, 0) != 0:
            sys.stderr.write("mdwe: prctl(PR_SET_MDWE) failed: errno %d\n" % ctypes.get_errno()); sys.exit(97)
        print("mdwe: on", flush=True)
        os.execv(sys.argv[1], sys.argv[1:])
        """#

    struct Sandboxed {
        let runner: ProcessRunner
        let port: Int
        var probes: [String] { runner.stdout().split(separator: "\n").filter { $0.hasPrefix("probe ") }.map(String.init) }
    }

    static func launchSandboxed(dataDir: String, mdwe: Bool, output: String) throws -> Sandboxed {
        var command = ["--mount", "--propagation", "private", "--", "/bin/sh", "-c", sandboxScript, "sandbox", dataDir]
        if mdwe, let python = which("python3") { command += [python, "-c", mdweWrapper] }
        command.append(BuiltProduct.gateway)
        let runner = try ProcessRunner(
            executable: which("unshare")!, arguments: command,
            environment: GatewayEnvironment.variables(
                dataDir: dataDir, logLevel: "info", extra: ["LP_UID": String(sandboxUID), "LP_REPO": repoRoot]),
            outputDirectory: output)
        do {
            let port = try runner.waitForListeningPort(timeout: .seconds(20))
            return Sandboxed(runner: runner, port: port)
        } catch {
            try? runner.kill()
            _ = try? runner.wait(timeout: .seconds(5))
            throw GatewayTestingError.processFailed("sandboxed gateway did not start: \(error)\nstdout: \(runner.stdout())\nstderr: \(runner.stderr().suffix(3000))")
        }
    }

    /// /proc/PID/status fields.
    static func status(_ pid: pid_t) -> [String: String] {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return [:] }
        var out: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            out[String(line[..<colon])] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return out
    }

    /// Mount points of `pid` with their per-mount options (mountinfo field 6).
    static func mounts(_ pid: pid_t) -> [(point: String, options: [Substring])] {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/mountinfo", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ")
            guard f.count > 6 else { return nil }
            return (String(f[4]), f[5].split(separator: ","))
        }
    }

    @Test(
        "the gateway serves and persists with only its data directory writable, as nobody, no capabilities, MDWE",
        .enabled(if: sandboxAvailable, "needs root (CAP_SYS_ADMIN) for unshare --mount, and setpriv"))
    func servesAndPersistsReadOnly() async throws {
        let dir = TestDirs.make("least-privilege")
        let output = TestDirs.make("least-privilege-out")
        defer {
            try? FileManager.default.removeItem(atPath: dir)
            try? FileManager.default.removeItem(atPath: output)
        }
        #expect(chown(dir, Self.sandboxUID, Self.sandboxUID) == 0)
        let mdwe = Self.which("python3") != nil
        if !mdwe { print("LeastPrivilegeTests: python3 not found; running without the MemoryDenyWriteExecute wrapper") }

        // 1. Start, check the process's view and credentials, publish and read back.
        let gw = try Self.launchSandboxed(dataDir: dir, mdwe: mdwe, output: output)
        let probes = gw.probes
        #expect(probes.contains("probe data-writable \(dir)"), "probes: \(probes)")
        let writable = probes.filter { $0.hasPrefix("probe writable") }
        #expect(writable.isEmpty, "writable outside the data dir: \(writable)")
        #expect(probes.filter { $0.hasPrefix("probe read-only") }.count >= 7, "probes: \(probes)")
        if mdwe { #expect(gw.runner.stdout().contains("mdwe: on")) }

        let st = Self.status(gw.runner.pid)
        #expect(st["Name"] == "gateway", "the runner's PID is the gateway itself (exec chain)")
        #expect(st["Uid"]?.split(separator: "\t").allSatisfy { $0 == "\(Self.sandboxUID)" } == true, "Uid: \(st["Uid"] ?? "-")")
        #expect(st["CapEff"] == "0000000000000000" && st["CapPrm"] == "0000000000000000" && st["CapBnd"] == "0000000000000000",
            "capabilities: \(st["CapEff"] ?? "-") \(st["CapPrm"] ?? "-") \(st["CapBnd"] ?? "-")")
        #expect(st["NoNewPrivs"] == "1")
        // A mount point listed twice is stacked: only the last (top) one is reachable.
        let all = Self.mounts(gw.runner.pid)
        let mounts = all.enumerated().filter { e in !all[(e.offset + 1)...].contains { $0.point == e.element.point } }.map(\.element)
        let rw = mounts.filter { $0.options.contains("rw") }.map(\.point)
        #expect(rw == [dir], "read-write mounts in the gateway's namespace: \(rw)")
        #expect(mounts.count > 3)

        let agent = try await Peer.connect(port: gw.port, role: .agent, sub: "worker", sessions: ["lp"])
        let ack = try agent.publish("lp", id: "lp-1", kind: "progress", data: ["step": 1])
        #expect(ack.string("type") == "ack" && ack.int("seq") == 1, "ack: \(ack)")
        let reader = try await Peer.connect(port: gw.port, role: .operator, sub: "ops", sessions: [])
        _ = try reader.join("lp", since: 0)
        let ev = try reader.next(type: "event")
        #expect(ev.string("id") == "lp-1")
        agent.close()
        reader.close()
        // The log files belong to the unprivileged user: the gateway created them in the only writable place.
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        #expect(files.contains { $0.hasSuffix(".tlog") }, "files: \(files)")
        try gw.runner.terminate()
        #expect(try gw.runner.wait(timeout: .seconds(15)) == .exited(0), "stderr: \(gw.runner.stderr().suffix(2000))")
        // Nothing in the gateway's output complains about a read-only file system.
        #expect(!gw.runner.stderr().contains("Read-only file system"), "stderr: \(gw.runner.stderr().suffix(2000))")

        // 2. Restart in a fresh sandbox: the event is there, and appends continue.
        let gw2 = try Self.launchSandboxed(dataDir: dir, mdwe: mdwe, output: output)
        let reader2 = try await Peer.connect(port: gw2.port, role: .operator, sub: "ops", sessions: [])
        let joined = try reader2.join("lp", since: 0)
        #expect(joined.int("head") == 1)
        #expect(try reader2.next(type: "event").string("id") == "lp-1")
        let agent2 = try await Peer.connect(port: gw2.port, role: .agent, sub: "worker", sessions: ["lp"])
        #expect(try agent2.publish("lp", id: "lp-2").int("seq") == 2)
        agent2.close()
        reader2.close()
        try gw2.runner.kill()
        _ = try gw2.runner.wait(timeout: .seconds(10))
        // 3. kill -9 in the sandbox loses nothing either.
        let gw3 = try Self.launchSandboxed(dataDir: dir, mdwe: mdwe, output: output)
        let reader3 = try await Peer.connect(port: gw3.port, role: .operator, sub: "ops", sessions: [])
        #expect(try reader3.join("lp", since: 0).int("head") == 2)
        reader3.close()
        try gw3.runner.terminate()
        _ = try gw3.runner.wait(timeout: .seconds(15))
    }

    /// The data directory must be writable for the gateway's user: a read-only data dir is a start-up error with
    /// a message, not a crash or a silent read-only mode.
    @Test(
        "a data directory the gateway cannot write stops start-up with a clear error",
        .enabled(if: sandboxAvailable, "needs root (CAP_SYS_ADMIN) for unshare --mount, and setpriv"))
    func unwritableDataDirFailsCleanly() throws {
        let dir = TestDirs.make("least-privilege-ro")
        let output = TestDirs.make("least-privilege-out")
        defer {
            try? FileManager.default.removeItem(atPath: dir)
            try? FileManager.default.removeItem(atPath: output)
        }
        // Owned by root, mode 0755: nobody cannot create LOCK or segments in it.
        chmod(dir, 0o755)
        let runner = try ProcessRunner(
            executable: Self.which("unshare")!,
            arguments: ["--mount", "--propagation", "private", "--", "/bin/sh", "-c", Self.sandboxScript, "sandbox", dir, BuiltProduct.gateway],
            environment: GatewayEnvironment.variables(
                dataDir: dir, fsync: nil, extra: ["LP_UID": String(Self.sandboxUID), "LP_REPO": Self.repoRoot]),
            outputDirectory: output)
        let status = try runner.wait(timeout: .seconds(20))
        #expect(status != .exited(0))
        let err = runner.stderr()
        #expect(err.contains("Permission denied") || err.contains("EACCES") || err.contains("permission"), "stderr: \(err.suffix(2000))")
        #expect(!err.contains("Fatal error"), "no Swift trap: \(err.suffix(2000))")
        print("LeastPrivilegeTests: unwritable data dir: \(err.split(separator: "\n").last ?? "")")
    }

    // MARK: The systemd unit

    /// `Key=value` lines of the unit, by section (later lines of the same key are appended, as systemd does).
    static func parseUnit(_ text: String) -> [String: [String: [String]]] {
        var out: [String: [String: [String]]] = [:]
        var section = ""
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                section = String(line.dropFirst().dropLast())
                continue
            }
            guard let eq = line.firstIndex(of: "=") else { continue }
            out[section, default: [:]][String(line[..<eq]), default: []].append(String(line[line.index(after: eq)...]))
        }
        return out
    }

    @Test("Config/samokoder-gateway.service has the hardening directives")
    func unitHasTheHardening() throws {
        let text = try String(contentsOfFile: Self.unitPath, encoding: .utf8)
        let unit = Self.parseUnit(text)
        let s = unit["Service"] ?? [:]
        let expected: [(String, String)] = [
            ("ProtectSystem", "strict"), ("ReadWritePaths", "/var/lib/samokoder-gateway"), ("StateDirectory", "samokoder-gateway"),
            ("NoNewPrivileges", "yes"), ("PrivateTmp", "yes"), ("PrivateDevices", "yes"), ("ProtectHome", "yes"),
            ("ProtectKernelTunables", "yes"), ("ProtectKernelModules", "yes"), ("ProtectControlGroups", "yes"),
            ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"), ("CapabilityBoundingSet", ""),
            ("SystemCallFilter", "@system-service"), ("LimitNOFILE", "65536"), ("MemoryDenyWriteExecute", "yes"),
            ("Restart", "on-failure"), ("TimeoutStopSec", "15"), ("KillSignal", "SIGTERM"), ("User", "samokoder-gateway"),
            ("Environment", "GATEWAY_DATA_DIR=/var/lib/samokoder-gateway"),
        ]
        for (key, value) in expected {
            #expect(s[key]?.contains(value) == true, "[Service] \(key)=\(value) missing (have \(s[key] ?? []))")
        }
        #expect(s["ExecStart"]?.first?.contains("--config") == true)
        #expect(s["EnvironmentFile"]?.isEmpty == false, "the secret comes from a credentials file")
        #expect(s["Environment"]?.contains { $0.contains("SECRET") } != true, "no secret in the unit's Environment=")
    }

    static let systemdAnalyze = which("systemd-analyze")

    @Test(
        "systemd-analyze verify accepts the unit; offline security exposure is low",
        .enabled(if: systemdAnalyze != nil, "systemd-analyze not installed"))
    func systemdAnalyzeVerify() throws {
        // verify checks that ExecStart exists: point it at the built binary in a copy of the unit.
        let dir = TestDirs.make("unit")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let text = try String(contentsOfFile: Self.unitPath, encoding: .utf8)
            .replacingOccurrences(of: "/opt/samokoder-gateway/bin/gateway", with: BuiltProduct.gateway)
        let copy = dir + "/samokoder-gateway.service"
        try text.write(toFile: copy, atomically: true, encoding: .utf8)
        let (status, out, err) = try Self.run(Self.systemdAnalyze!, ["verify", copy])
        #expect(status == .exited(0), "systemd-analyze verify: \(out) \(err)")
        let complaints = (out + err).split(separator: "\n").filter { $0.contains("samokoder-gateway.service") }
        #expect(complaints.isEmpty, "systemd-analyze verify: \(complaints)")
        // Exposure score (0 = locked down, 10 = unprotected); systemd 252 supports --offline.
        let (_, sec, secErr) = try Self.run(Self.systemdAnalyze!, ["security", "--offline=true", "--no-pager", copy])
        if let line = (sec + secErr).split(separator: "\n").first(where: { $0.contains("Overall exposure level") }) {
            let score = line.split(separator: ":").last?.split(separator: " ").first.flatMap { Double($0) }
            print("LeastPrivilegeTests: systemd-analyze security: \(line.trimmingCharacters(in: .whitespaces))")
            #expect((score ?? 10) <= 2.0, "\(line)")
        }
    }
}
