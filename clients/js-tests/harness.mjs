// Test harness: runs the real gateway binary on a loopback port, mints tokens, loads node-ws.
import { spawn } from 'node:child_process';
import net from 'node:net';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const gatewayBin = process.env.GATEWAY_BIN || join(repoRoot, '.build', 'debug', 'gateway');

const require = createRequire(import.meta.url);
/** The WebSocket implementation for Node 20: Debian's node-ws (or WS_MODULE). */
export const WebSocket = (() => {
  const candidates = [process.env.WS_MODULE, '/usr/share/nodejs/ws', 'ws'].filter(Boolean);
  for (const c of candidates) {
    try { return require(c); } catch { /* next */ }
  }
  if (globalThis.WebSocket) return globalThis.WebSocket;
  throw new Error('no WebSocket implementation: apt-get install node-ws');
})();

/** Mints an HS256 JWT. */
export function mintToken(secret, { sub, role, sessions = [], ttl = 3600, tier } = {}) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub, role, sessions, exp: now + ttl, iat: now };
  if (tier) claims.tier = tier;
  const head = b64({ alg: 'HS256', typ: 'JWT' }) + '.' + b64(claims);
  return head + '.' + createHmac('sha256', secret).update(head).digest('base64url');
}

/** Resolves after `ms`. */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until `pred()` is true, polling; throws after `timeoutMs`. */
export async function waitFor(pred, timeoutMs = 10_000, what = 'condition') {
  const end = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** A gateway process on 127.0.0.1 with its own data directory. */
export class Gateway {
  constructor({ env = {} } = {}) {
    this.secret = 'js-test-secret-' + randomBytes(24).toString('hex');
    this.dataDir = mkdtempSync(join(tmpdir(), 'gw-js-'));
    this.extraEnv = env;
    this.port = 0;
    this.proc = null;
  }

  get url() { return `ws://127.0.0.1:${this.port}/v1/ws`; }
  get httpBase() { return `http://127.0.0.1:${this.port}`; }

  token(opts) { return mintToken(this.secret, opts); }

  /** Starts the binary (on the port it had before, if any) and waits for its "listening" line. */
  async start(timeoutMs = 20_000) {
    const env = {
      ...process.env,
      GATEWAY_AUTH_HS256_SECRET: this.secret,
      GATEWAY_LISTEN_HOST: '127.0.0.1',
      GATEWAY_LISTEN_PORT: String(this.port),
      GATEWAY_DATA_DIR: this.dataDir,
      GATEWAY_LOG_LEVEL: 'warning',
      ...this.extraEnv,
    };
    const proc = spawn(gatewayBin, [], { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    let stderr = '';
    proc.stderr.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
    this.port = await new Promise((resolvePort, reject) => {
      let out = '';
      const timer = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error(`gateway did not start: ${stderr}`)); }, timeoutMs);
      proc.stdout.on('data', (d) => {
        out += d;
        const m = /gateway listening url=\S+ port=(\d+)/.exec(out);
        if (m) { clearTimeout(timer); resolvePort(Number(m[1])); }
      });
      proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`gateway exited ${code}: ${stderr}`)); });
      proc.on('error', (e) => { clearTimeout(timer); reject(e); });
    });
    proc.stdout.resume();
    return this;
  }

  /** SIGTERM, wait for exit (SIGKILL after `timeoutMs`). Resolves with the exit code. */
  async stop(timeoutMs = 15_000) {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return proc ? proc.exitCode : null;
    this.proc = null;
    const exited = new Promise((r) => proc.once('exit', (code, signal) => r(code ?? signal)));
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    const code = await exited;
    clearTimeout(timer);
    return code;
  }

  /** Stops the gateway and removes its data directory. */
  async dispose() {
    await this.stop();
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/** A raw JSON-frame peer for checks independent of the client library. */
export async function rawPeer(url, token) {
  const ws = new WebSocket(url);
  const frames = [];
  const waiters = [];
  ws.on('message', (d) => {
    const f = JSON.parse(String(d));
    frames.push(f);
    for (const w of waiters.splice(0)) w();
  });
  await new Promise((r, j) => { ws.once('open', r); ws.once('error', j); });
  const peer = {
    ws,
    frames,
    send: (o) => ws.send(JSON.stringify(o)),
    async next(pred = () => true, timeoutMs = 5000) {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const i = frames.findIndex(pred);
        if (i >= 0) return frames.splice(i, 1)[0];
        if (Date.now() > end) throw new Error('rawPeer: no matching frame');
        await new Promise((r) => { waiters.push(r); setTimeout(r, 50); });
      }
    },
    close: () => ws.terminate(),
  };
  peer.send({ type: 'hello', token });
  await peer.next((f) => f.type === 'welcome');
  return peer;
}

/** A TCP proxy in front of the gateway that can stop forwarding to the client and cut every connection. */
export class TcpProxy {
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.pairs = new Set();
    this.blackholeDown = false;
    this.server = net.createServer((down) => {
      const up = net.connect(this.targetPort, '127.0.0.1');
      const pair = { down, up };
      this.pairs.add(pair);
      down.on('data', (d) => up.write(d));
      up.on('data', (d) => { if (!this.blackholeDown) down.write(d); });
      const end = () => { down.destroy(); up.destroy(); this.pairs.delete(pair); };
      down.on('error', end).on('close', end);
      up.on('error', end).on('close', end);
    });
  }
  async listen() {
    await new Promise((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = this.server.address().port;
    return this;
  }
  get url() { return `ws://127.0.0.1:${this.port}/v1/ws`; }
  cutAll() { for (const { down, up } of [...this.pairs]) { down.destroy(); up.destroy(); } }
  close() { this.cutAll(); this.server.close(); }
}
