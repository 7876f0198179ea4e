// Forced disconnects mid-stream: the client must resume without loss or duplicates and re-send unacked
// publishes with the same id.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { State, connect } from '../web/client/v1/gateway-client.js';
import { Gateway, TcpProxy, WebSocket, rawPeer, sleep, waitFor } from './harness.mjs';

const T = { timeout: 60_000 };
const fast = { backoffInitialMs: 50, backoffMaxMs: 500 };


describe('resume', { timeout: 180_000 }, () => {
  let gw;
  const clients = [];
  before(async () => { gw = await new Gateway().start(); });
  after(async () => {
    for (const c of clients) c.close();
    await gw.dispose();
  });

  for (const signal of ['SIGTERM', 'SIGKILL']) {
    test(`gateway restarted (${signal}) mid-stream: every event exactly once, in order, unacked publishes re-sent`, T, async () => {
      const session = `s-restart-${signal}`;
      let agentTokens = 0;
      const agent = connect({
        WebSocket, url: gw.url, ...fast,
        getToken: () => { agentTokens++; return gw.token({ sub: 'w', role: 'agent', sessions: ['*'] }); },
      });
      const user = connect({ WebSocket, url: gw.url, ...fast, getToken: () => gw.token({ sub: 'u', role: 'user', sessions: [session] }) });
      clients.push(agent, user);
      const userStates = [];
      user.on('state', ({ state }) => userStates.push(state));
      const seen = [];
      await user.join(session, { since: 0, onEvent: (e) => seen.push(e) });

      // 350 publishes, none awaited; the gateway goes away during a burst of 50 after the first 100 and comes back
      // on the same port 100 publishes later.
      const total = 350;
      const acks = [];
      const promises = [];
      let unackedAtRestart = 0;
      let down = null;
      for (let i = 1; i <= total - 50; i++) {
        const p = agent.publish(session, 'progress', { i });
        p.then((a) => acks.push(a));
        promises.push(p);
        if (i % 20 === 0) await sleep(5);
        if (i === 100) {
          await waitFor(() => acks.length >= 40, 10_000, 'first acks');
          // A burst the gateway cannot all have acked when it goes away; publishing goes on meanwhile.
          for (let k = 0; k < 50; k++) promises.push(agent.publish(session, 'progress', { i: `burst-${k}` }));
          down = signal === 'SIGKILL'
            ? (() => {
              const proc = gw.proc;
              gw.proc = null;
              const exited = new Promise((r) => proc.once('exit', r));
              proc.kill('SIGKILL');
              return exited;
            })()
            : gw.stop().then((code) => assert.equal(code, 0));
        }
        if (i === 160) await down; // 161..200 are published while no gateway runs
        if (i === 200) {
          unackedAtRestart = agent.pendingCount;
          await gw.start(); // same port, same data directory
        }
      }
      const results = await Promise.all(promises);
      const seqs = results.map((a) => a.seq).sort((a, b) => a - b);
      assert.deepEqual(seqs, Array.from({ length: total }, (_, k) => k + 1), 'each publish stored exactly once');
      await waitFor(() => seen.length >= total, 20_000, `all ${total} events (have ${seen.length})`);
      await sleep(200);
      assert.deepEqual(seen.map((e) => e.seq), Array.from({ length: total }, (_, k) => k + 1), 'no loss, no duplicate, in order');
      const byId = new Map(results.map((a) => [a.id, a.seq]));
      for (const e of seen) assert.equal(byId.get(e.id), e.seq);
      assert.ok(userStates.includes(State.RESUMING), `user states: ${userStates}`);
      assert.equal(userStates.at(-1), State.OPEN);
      assert.ok(agentTokens >= 2, 'getToken is called again on reconnect');
      assert.equal(agent.pendingCount, 0);
      assert.ok(unackedAtRestart > 0, 'publishes were in flight when the gateway went away');
      console.log(`# ${signal}: ${unackedAtRestart} publishes unacked at restart, ${results.filter((a) => a.duplicate).length} acked as duplicates`);
      agent.close();
      user.close();
    });
  }

  test('socket killed after the gateway stored a publish but before the ack arrived: same id re-sent, deduped', T, async () => {
    const session = 's-ackloss';
    const proxy = await new TcpProxy(gw.port).listen();
    try {
      const observer = await rawPeer(gw.url, gw.token({ sub: 'obs', role: 'operator' }));
      observer.send({ type: 'join', session });
      await observer.next((f) => f.type === 'joined');

      const agent = connect({ WebSocket, url: proxy.url, ...fast, getToken: () => gw.token({ sub: 'w2', role: 'agent', sessions: [session] }) });
      clients.push(agent);
      const mine = [];
      await agent.join(session, { onEvent: (e) => mine.push(e.seq) });
      assert.equal((await agent.publish(session, 'chat.message', { text: 'one' })).seq, 1);

      proxy.blackholeDown = true; // the gateway's answers no longer reach the client
      const pending = agent.publish(session, 'chat.message', { text: 'two' }, { id: 'msg-two' });
      const stored = await observer.next((f) => f.type === 'event' && f.id === 'msg-two');
      assert.equal(stored.seq, 2);
      proxy.cutAll();
      proxy.blackholeDown = false;

      const ack = await pending;
      assert.deepEqual(ack, { id: 'msg-two', session, seq: 2, duplicate: true });
      await waitFor(() => mine.length === 2, 5000, 'own events');
      assert.deepEqual(mine, [1, 2]);
      await sleep(200);
      assert.equal(observer.frames.filter((f) => f.type === 'event' && f.id === 'msg-two').length, 0, 'nothing stored twice');
      observer.send({ type: 'join', session, since: 0 });
      assert.equal((await observer.next((f) => f.type === 'joined')).head, 2);
      observer.close();
      agent.close();
    } finally {
      proxy.close();
    }
  });

  test('a silent connection is detected by the ping timeout and resumed', T, async () => {
    const session = 's-silent';
    const proxy = await new TcpProxy(gw.port).listen();
    try {
      const user = connect({
        WebSocket, url: proxy.url, ...fast, pingIntervalMs: 300, pongTimeoutMs: 300, helloTimeoutMs: 2000,
        getToken: () => gw.token({ sub: 'u-silent', role: 'user', sessions: [session] }),
      });
      clients.push(user);
      const closes = [];
      user.on('close', (c) => closes.push(c));
      const seen = [];
      await user.join(session, { since: 0, onEvent: (e) => seen.push(e.seq) });
      const agent = await rawPeer(gw.url, gw.token({ sub: 'w3', role: 'agent', sessions: [session] }));
      agent.send({ type: 'publish', session, id: 'a1', kind: 'chat.message', data: { text: 'a' } });
      await waitFor(() => seen.length === 1, 5000, 'first event');
      proxy.blackholeDown = true; // a dead network path: nothing arrives, nothing closes
      agent.send({ type: 'publish', session, id: 'a2', kind: 'chat.message', data: { text: 'b' } });
      await waitFor(() => closes.length >= 1, 5000, 'ping timeout');
      proxy.blackholeDown = false;
      proxy.cutAll();
      await waitFor(() => seen.length === 2, 10_000, 'resumed event');
      assert.deepEqual(seen, [1, 2]);
      assert.match(closes[0].reason, /ping/);
      agent.close();
      user.close();
    } finally {
      proxy.close();
    }
  });
});

describe('token expiry', { timeout: 60_000 }, () => {
  let gw;
  before(async () => {
    gw = await new Gateway({ env: { GATEWAY_AUTH_LEEWAY_SECONDS: '0', GATEWAY_LIMITS_TOKEN_RECHECK_SECONDS: '0.3' } }).start();
  });
  after(async () => { await gw.dispose(); });

  test('a connection closed 4001 for an expired token reconnects with a fresh getToken() and resumes', T, async () => {
    const session = 's-expiry';
    let calls = 0;
    const user = connect({
      WebSocket, url: gw.url, ...fast,
      refresh: false, // the v1 path: no in-band refresh, the gateway closes 4001 at exp
      getToken: async () => { calls++; return gw.token({ sub: 'u-exp', role: 'user', sessions: [session], ttl: 2 }); },
    });
    const closes = [];
    user.on('close', (c) => closes.push(c));
    const seen = [];
    try {
      await user.join(session, { since: 0, onEvent: (e) => seen.push(e.seq) });
      const agent = await rawPeer(gw.url, gw.token({ sub: 'w-exp', role: 'agent', sessions: [session] }));
      for (let i = 1; i <= 6; i++) {
        agent.send({ type: 'publish', session, id: `e${i}`, kind: 'chat.message', data: { text: String(i) } });
        await agent.next((f) => f.type === 'ack' && f.id === `e${i}`);
        await sleep(700); // 4.2 s in all: the 2 s token expires at least once
      }
      await waitFor(() => seen.length === 6, 10_000, 'all events');
      assert.deepEqual(seen, [1, 2, 3, 4, 5, 6]);
      assert.ok(closes.some((c) => c.code === 4001 && c.willReconnect), JSON.stringify(closes));
      assert.ok(calls >= 2);
      assert.equal(user.state, State.OPEN);
      agent.close();
    } finally {
      user.close();
    }
  });
});
