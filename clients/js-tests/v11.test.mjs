// Protocol v1.1 in the browser client against the real gateway: in-band token refresh, presence, history
// paging and join `last`, `left` forbidden after a narrowing refresh; token streams (snapshot, deltas, final
// message, gateway-finalized interrupted stream).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { ForbiddenError, State, connect } from '../web/client/v1/gateway-client.js';
import { Gateway, TcpProxy, WebSocket, mintToken, sleep, waitFor } from './harness.mjs';

const T = { timeout: 60_000 };
const fast = { backoffInitialMs: 50, backoffMaxMs: 500 };


describe('protocol v1.1: refresh', { timeout: 120_000 }, () => {
  let gw;
  const clients = [];
  const open = (opts) => {
    const c = connect({ WebSocket, url: gw.url, ...fast, ...opts });
    clients.push(c);
    return c;
  };
  // No leeway and a fast expiry check: a connection whose token is not refreshed is closed 4001 at exp.
  before(async () => { gw = await new Gateway({ env: { GATEWAY_AUTH_LEEWAY_SECONDS: '0', GATEWAY_LIMITS_TOKEN_RECHECK_SECONDS: '0.2' } }).start(); });
  after(async () => {
    for (const c of clients) c.close();
    await gw.dispose();
  });

  test('a short-lived token is refreshed many times on one connection, no reconnect', T, async () => {
    let calls = 0;
    const c = open({ getToken: () => { calls++; return gw.token({ sub: 'refresher', role: 'user', sessions: ['s-refresh'], ttl: 3 }); } });
    const opens = [];
    const closes = [];
    const refreshed = [];
    c.on('open', (w) => opens.push(w.conn));
    c.on('close', (i) => closes.push(i));
    c.on('refreshed', ({ exp }) => refreshed.push(exp));
    const welcome = await c.ready();
    assert.equal(typeof welcome.exp, 'number');
    assert.equal(c.exp, welcome.exp);
    const sub = await c.join('s-refresh');
    const seen = [];
    (async () => { for await (const ev of sub) seen.push(ev.seq); })();
    // Each token lives 2-3 s: without refresh the gateway would close 4001 within 3 s.
    await waitFor(() => refreshed.length >= 5, 25_000, '5 refreshes');
    assert.deepEqual(opens, [welcome.conn], 'one connection only');
    assert.equal(closes.length, 0, JSON.stringify(closes));
    assert.equal(c.state, State.OPEN);
    assert.equal(c.refreshCount, refreshed.length);
    assert.equal(calls, 1 + refreshed.length, 'getToken once per refresh');
    for (let i = 1; i < refreshed.length; i++) assert.ok(refreshed[i] >= refreshed[i - 1]);
    assert.equal(c.exp, refreshed.at(-1));
    // The connection is still usable after its first token has long expired.
    const ack = await c.sendChatMessage('s-refresh', 'still here');
    await waitFor(() => seen.includes(ack.seq), 5000, 'own event');
    assert.deepEqual(opens, [welcome.conn]);
  });

  test('a refused refresh is reported and retried (bounded), then 4001 → reconnect with getToken', T, async () => {
    let failing = true;
    let calls = 0;
    // The first refresh at 30 % of a 4-5 s lifetime, so the bounded retries are over well before exp (the
    // reconnect after 4001 must get a good token again).
    const c = open({
      maxRefreshRetries: 2,
      refreshRatio: 0.3,
      getToken: () => {
        calls++;
        if (calls > 1 && failing) return mintToken('a-wrong-secret-a-wrong-secret-a-wrong-secret', { sub: 'r2', role: 'user', sessions: ['s-r2'], ttl: 5 });
        return gw.token({ sub: 'r2', role: 'user', sessions: ['s-r2'], ttl: failing ? 5 : 3600 });
      },
    });
    const failures = [];
    const opens = [];
    const closes = [];
    c.on('refresh_failed', (f) => { failures.push(f); if (!f.willRetry) failing = false; });
    c.on('open', (w) => opens.push(w.conn));
    c.on('close', (i) => closes.push(i.code));
    await c.ready();
    await c.join('s-r2');
    await waitFor(() => opens.length === 2 && c.state === State.OPEN, 20_000, 'reconnect after 4001');
    assert.deepEqual(failures.map((f) => [f.attempt, f.willRetry, f.error.code]), [[1, true, 'unauthorized'], [2, true, 'unauthorized'], [3, false, 'unauthorized']]);
    assert.match(failures[0].error.message, /refresh refused/);
    assert.deepEqual(closes, [4001]);
    assert.notEqual(opens[0], opens[1]);
    assert.equal(c.refreshCount, 0);
    const ack = await c.sendChatMessage('s-r2', 'after the reconnect');
    assert.equal(ack.seq, 1);
  });

  test('left forbidden after a refresh that narrows the sessions: that subscription ends, the others live', T, async () => {
    let sessions = ['s-keep', 's-drop'];
    const c = open({ refresh: false, getToken: () => gw.token({ sub: 'narrow', role: 'user', sessions }) });
    await c.ready();
    const keep = await c.join('s-keep');
    const drop = await c.join('s-drop');
    const lefts = [];
    const errors = [];
    c.on('left', (l) => lefts.push(l));
    c.on('error', (e) => errors.push(e));
    const it = drop[Symbol.asyncIterator]();
    const pending = it.next();
    sessions = ['s-keep'];
    await c.refreshNow();
    await assert.rejects(pending, (e) => e instanceof ForbiddenError && e.session === 's-drop');
    assert.equal(lefts.length, 1);
    assert.equal(lefts[0].session, 's-drop');
    assert.equal(lefts[0].reason, 'forbidden');
    assert.ok(lefts[0].error instanceof ForbiddenError);
    assert.ok(errors.some((e) => e instanceof ForbiddenError));
    // The kept session still works; a reconnect does not re-join the dropped one.
    const ack = await c.sendChatMessage('s-keep', 'kept');
    const ev = (await keep[Symbol.asyncIterator]().next()).value;
    assert.equal(ev.seq, ack.seq);
    await assert.rejects(c.join('s-drop'), ForbiddenError);
  });
});

describe('protocol v1.1: presence, history, join last', { timeout: 120_000 }, () => {
  let gw;
  const clients = [];
  const open = (opts) => {
    const c = connect({ WebSocket, url: gw.url, ...fast, ...opts });
    clients.push(c);
    return c;
  };
  before(async () => { gw = await new Gateway().start(); });
  after(async () => {
    for (const c of clients) c.close();
    await gw.dispose();
  });

  test('presence across two tabs of one user: one join, one leave; conns counted; re-synced after a reconnect', T, async () => {
    const S = 's-presence';
    const proxy = await new TcpProxy(gw.port).listen();
    try {
      const watcher = connect({ WebSocket, url: proxy.url, ...fast, getToken: () => gw.token({ sub: 'watcher', role: 'agent', sessions: ['*'] }) });
      clients.push(watcher);
      const changes = [];
      const wsub = await watcher.join(S, { presence: true, onPresence: (p) => changes.push(p) });
      assert.deepEqual(wsub.presence, [{ sub: 'watcher', role: 'agent', conns: 1 }]);
      assert.deepEqual(changes.map((c) => c.action), ['sync']);

      const tok = () => gw.token({ sub: 'alice', role: 'user', sessions: [S] });
      const tab1 = open({ getToken: tok });
      const tab2 = open({ getToken: tok });
      const t1 = await tab1.join(S, { presence: true });
      await waitFor(() => changes.length === 2, 5000, 'join frame');
      assert.deepEqual({ ...changes[1], presence: undefined }, { session: S, action: 'join', sub: 'alice', role: 'user', presence: undefined });
      assert.deepEqual(wsub.presence.map((p) => p.sub), ['alice', 'watcher']);
      assert.deepEqual(t1.presence, [{ sub: 'alice', role: 'user', conns: 1 }, { sub: 'watcher', role: 'agent', conns: 1 }]);

      const t2 = await tab2.join(S, { presence: true });
      assert.deepEqual(t2.presence, [{ sub: 'alice', role: 'user', conns: 2 }, { sub: 'watcher', role: 'agent', conns: 1 }]);
      await sleep(300);
      assert.equal(changes.length, 2, 'a second tab sends no frame');

      tab1.close();
      await sleep(300);
      assert.equal(changes.length, 2, 'the first tab closing is no leave');
      assert.deepEqual(wsub.presence.map((p) => p.sub), ['alice', 'watcher']);
      t2.close();
      await waitFor(() => changes.length === 3, 5000, 'leave frame');
      assert.equal(changes[2].action, 'leave');
      assert.equal(changes[2].sub, 'alice');
      assert.deepEqual(wsub.presence, [{ sub: 'watcher', role: 'agent', conns: 1 }]);

      // Subscriptions without presence get none; the watcher's list is rebuilt from `joined` after a reconnect.
      const plain = await watcher.join(S);
      assert.equal(plain.presence, null);
      proxy.cutAll();
      await waitFor(() => watcher.state === State.RESUMING, 5000, 'resuming');
      const bob = open({ getToken: () => gw.token({ sub: 'bob', role: 'user', sessions: [S] }) });
      await bob.join(S);
      await waitFor(() => watcher.state === State.OPEN && changes.filter((c) => c.action === 'sync').length === 2, 10_000, 're-sync');
      await waitFor(() => wsub.presence.some((p) => p.sub === 'bob'), 5000, 'bob in the list');
      assert.deepEqual(wsub.presence.map((p) => p.sub), ['bob', 'watcher']);
    } finally {
      proxy.close();
    }
  });

  test('history pages back to the first event; join {last} replays the last N then goes live', T, async () => {
    const S = 's-history';
    const agent = open({ getToken: () => gw.token({ sub: 'hist', role: 'agent', sessions: ['*'] }) });
    await agent.ready();
    for (let i = 1; i <= 25; i++) await agent.publish(S, 'note', { i });
    const p1 = await agent.history({ session: S, limit: 10 });
    assert.deepEqual(p1.events.map((e) => e.seq), [16, 17, 18, 19, 20, 21, 22, 23, 24, 25]);
    assert.equal(p1.first, 1);
    assert.equal(p1.head, 25);
    assert.equal(p1.events[0].type, 'event');
    assert.deepEqual(p1.events[0].data, { i: 16 });
    const all = [...p1.events];
    let before = p1.events[0].seq;
    let pages = 1;
    while (before > p1.first && pages < 10) {
      const page = await agent.history({ session: S, before, limit: 10 });
      all.unshift(...page.events);
      before = page.events[0].seq;
      pages++;
    }
    assert.equal(pages, 3);
    assert.deepEqual(all.map((e) => e.seq), Array.from({ length: 25 }, (_, i) => i + 1));
    assert.deepEqual((await agent.history({ session: S })).events.length, 25); // default limit 50
    assert.deepEqual((await agent.history({ session: 's-never-written' })), { session: 's-never-written', events: [], first: 1, head: 0 });

    // Bad limits fail locally; aborting rejects; a user may not read another session.
    await assert.rejects(agent.history({ session: S, limit: 501 }), /limit/);
    const ctl = new AbortController();
    const aborted = agent.history({ session: S, signal: ctl.signal });
    ctl.abort();
    await assert.rejects(aborted, (e) => e.name === 'AbortError');
    const user = open({ getToken: () => gw.token({ sub: 'u-h', role: 'user', sessions: ['other'] }) });
    await assert.rejects(user.history({ session: S }), ForbiddenError);

    const viewer = open({ getToken: () => gw.token({ sub: 'viewer', role: 'agent', sessions: ['*'] }) });
    const seen = [];
    const sub = await viewer.join(S, { last: 3, onEvent: (ev) => seen.push(ev.seq) });
    await waitFor(() => seen.length === 3, 5000, 'last 3');
    assert.deepEqual(seen, [23, 24, 25]);
    await agent.publish(S, 'note', { i: 26 });
    await waitFor(() => seen.length === 4, 5000, 'live');
    assert.deepEqual(seen, [23, 24, 25, 26]);
    assert.equal(sub.lastSeq, 26);
    await assert.rejects(viewer.join('x', { last: 0 }), /last/);
    await assert.rejects(viewer.join('x', { last: 2, since: 1 }), /last/);
  });

  test('token streams: snapshot for a late joiner, deltas appended, replaced by the final message', { ...T }, async () => {
    const S = 's-streams';
    const agent = open({ getToken: () => gw.token({ sub: 'writer', role: 'agent', sessions: ['*'] }) });
    await agent.ready();
    await agent.publish(S, 'chat.delta', { stream: 'a1', text: 'Hel' });
    await agent.publish(S, 'chat.delta', { stream: 'a1', text: 'lo, ' });
    const browser = open({ getToken: () => gw.token({ sub: 'reader', role: 'user', sessions: [S] }) });
    const updates = [];
    browser.on('stream', (s) => updates.push(s));
    await browser.join(S, { since: 0 });
    await waitFor(() => updates.length >= 1, 5000, 'snapshot');
    assert.deepEqual({ ...updates[0] }, { session: S, stream: 'a1', kind: 'chat.delta', from: { sub: 'writer', role: 'agent' }, text: 'Hello, ', done: false });
    await agent.publish(S, 'chat.delta', { stream: 'a1', text: 'world' });
    await waitFor(() => updates.at(-1).text === 'Hello, world', 5000, 'delta appended');
    assert.deepEqual(browser.streams(S).map((s) => s.text), ['Hello, world']);
    await agent.publish(S, 'chat.message', { stream: 'a1', text: 'Hello, world!' });
    await waitFor(() => updates.at(-1).done, 5000, 'final');
    assert.equal(updates.at(-1).text, 'Hello, world!');
    assert.equal(typeof updates.at(-1).seq, 'number');
    assert.deepEqual(browser.streams(S), []);
  });
});

describe('protocol v1.1: streams finalized by the gateway', { timeout: 60_000 }, () => {
  test('an abandoned stream ends as an interrupted chat.message with id stream:<ID>', { ...T }, async () => {
    const gw = await new Gateway({ env: { GATEWAY_STREAMS_IDLE_TIMEOUT_SECONDS: '1' } }).start();
    const clients = [];
    try {
      const agent = connect({ WebSocket, url: gw.url, ...fast, getToken: () => gw.token({ sub: 'quitter', role: 'agent', sessions: ['*'] }) });
      const reader = connect({ WebSocket, url: gw.url, ...fast, getToken: () => gw.token({ sub: 'r', role: 'user', sessions: ['s-int'] }) });
      clients.push(agent, reader);
      const updates = [];
      reader.on('stream', (s) => updates.push(s));
      await reader.join('s-int');
      await agent.publish('s-int', 'chat.delta', { stream: 'b2', text: 'half an ans' });
      await waitFor(() => updates.some((u) => u.done), 10_000, 'interrupted');
      const done = updates.find((u) => u.done);
      assert.equal(done.status, 'interrupted');
      assert.equal(done.text, 'half an ans');
      assert.equal(done.event.id, 'stream:b2');
      assert.deepEqual(done.from, { sub: 'quitter', role: 'agent' });
    } finally {
      for (const c of clients) c.close();
      await gw.dispose();
    }
  });
});
