// The browser client against a real gateway: connect, join, publish, typed errors, serving.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  AuthError, BadRequestError, ClosedError, ForbiddenError, RateLimitedError, State, connect,
} from '../web/client/v1/gateway-client.js';
import { Gateway, WebSocket, rawPeer, repoRoot, sleep, waitFor } from './harness.mjs';

const T = { timeout: 30_000 };

describe('gateway client', { timeout: 120_000 }, () => {
  let gw;
  const clients = [];
  const open = (opts) => {
    const c = connect({ WebSocket, url: gw.url, ...opts });
    clients.push(c);
    return c;
  };

  before(async () => { gw = await new Gateway().start(); });
  after(async () => {
    for (const c of clients) c.close();
    await gw.dispose();
  });

  test('the gateway serves the library and the console page', T, async () => {
    const lib = await fetch(`${gw.httpBase}/client/v1/gateway-client.js`);
    assert.equal(lib.status, 200);
    assert.match(lib.headers.get('content-type'), /javascript/);
    assert.equal(await lib.text(), readFileSync(join(repoRoot, 'clients/web/client/v1/gateway-client.js'), 'utf8'));
    for (const path of ['/console/', '/console', '/console/index.html']) {
      const page = await fetch(gw.httpBase + path);
      assert.equal(page.status, 200, path);
      assert.match(await page.text(), /<title>[^<]*session console/i);
    }
    for (const path of ['/console/console.js', '/console/console.css']) {
      assert.equal((await fetch(gw.httpBase + path)).status, 200, path);
    }
  });

  test('connects, reports states, sends a chat message and receives it in order', T, async () => {
    const states = [];
    const user = open({ getToken: () => gw.token({ sub: 'alice', role: 'user', sessions: ['s-basic'] }) });
    user.on('state', ({ state }) => states.push(state));
    const welcome = await user.ready();
    assert.equal(welcome.sub, 'alice');
    assert.equal(welcome.role, 'user');
    assert.equal(user.state, State.OPEN);
    assert.deepEqual(states, ['open']); // started in 'connecting'

    const sub = await user.join('s-basic');
    assert.equal(sub.head, 0);
    assert.equal(sub.lastSeq, 0);
    const ack1 = await user.sendChatMessage('s-basic', 'hello agent');
    assert.equal(ack1.seq, 1);
    assert.equal(typeof ack1.id, 'string');
    const ack2 = await user.sendChatMessage('s-basic', 'second', { reply_to: 1 });
    assert.equal(ack2.seq, 2);

    const it = sub[Symbol.asyncIterator]();
    const e1 = (await it.next()).value;
    const e2 = (await it.next()).value;
    assert.equal(e1.seq, 1);
    assert.equal(e1.kind, 'chat.message');
    assert.deepEqual(e1.data, { text: 'hello agent' });
    assert.deepEqual(e1.from, { sub: 'alice', role: 'user' });
    assert.equal(e1.id, ack1.id);
    assert.equal(e2.seq, 2);
    assert.deepEqual(e2.data, { reply_to: 1, text: 'second' });
    assert.equal(sub.lastSeq, 2);
    sub.close();
    assert.equal((await it.next()).done, true);
  });

  test('join with since replays then goes live; ephemeral deltas have no seq; reset past head', T, async () => {
    const agent = open({ getToken: () => gw.token({ sub: 'worker', role: 'agent', sessions: ['*'] }) });
    await agent.ready();
    for (let i = 1; i <= 5; i++) assert.equal((await agent.publish('s-replay', 'progress', { step: i, of: 6 })).seq, i);

    const user = open({ getToken: () => gw.token({ sub: 'bob', role: 'user', sessions: ['s-replay'] }) });
    const got = [];
    const sub = await user.join('s-replay', { since: 2, onEvent: (e) => got.push(e) });
    assert.equal(sub.head, 5);
    await waitFor(() => got.length === 3, 5000, 'replay');
    assert.deepEqual(got.map((e) => e.seq), [3, 4, 5]);

    const dAck = await agent.publish('s-replay', 'chat.delta', { stream: 'r1', text: 'hel' });
    assert.equal(dAck.seq, undefined);
    const eAck = await agent.publish('s-replay', 'progress', { step: 6, of: 6 }, { ephemeral: true });
    assert.equal(eAck.seq, undefined);
    assert.equal((await agent.publish('s-replay', 'chat.message', { text: 'done' })).seq, 6);
    await waitFor(() => got.length === 6, 5000, 'live events');
    assert.deepEqual(got.slice(3).map((e) => [e.kind, e.seq]), [['chat.delta', undefined], ['progress', undefined], ['chat.message', 6]]);

    // since past the head: the gateway says reset and replays from the start; the client reports it.
    const other = open({ getToken: () => gw.token({ sub: 'carol', role: 'user', sessions: ['s-replay'] }) });
    const resets = [];
    other.on('reset', (r) => resets.push(r));
    const seen = [];
    // (The delta above opened token stream r1, never closed: the joiner also gets its snapshot, without a seq.)
    await other.join('s-replay', { since: 99, onEvent: (e) => { if (e.seq !== undefined) seen.push(e.seq); } });
    await waitFor(() => seen.length === 6, 5000, 'reset replay');
    assert.deepEqual(seen, [1, 2, 3, 4, 5, 6]);
    assert.equal(resets.length, 1);
    assert.equal(resets[0].session, 's-replay');
  });

  test('typed errors: forbidden kind, forbidden session, bad request, rate limited', T, async () => {
    const user = open({ getToken: () => gw.token({ sub: 'dave', role: 'user', sessions: ['mine'] }) });
    await user.ready();
    await assert.rejects(user.publish('mine', 'progress', { step: 1 }), (e) => e instanceof ForbiddenError && e.code === 'forbidden' && typeof e.ref === 'string');
    await assert.rejects(user.sendChatMessage('theirs', 'hi'), ForbiddenError);
    await assert.rejects(user.join('theirs'), (e) => e instanceof ForbiddenError && e.session === 'theirs');
    await assert.rejects(user.sendChatMessage('bad id!', 'x'), BadRequestError);
    // Still usable after refused joins: a later join works and is matched to its own answer.
    const sub = await user.join('mine');
    assert.equal(sub.session, 'mine');
    assert.equal(user.state, State.OPEN);

    // Default limits for users: burst 40 at 20/s. 48 at once: some are refused as rate_limited.
    const limited = [];
    user.on('rate_limited', (r) => limited.push(r));
    const results = await Promise.allSettled(Array.from({ length: 48 }, (_, i) => user.sendChatMessage('mine', `m${i}`)));
    const refused = results.filter((r) => r.status === 'rejected');
    assert.ok(refused.length > 0, 'some publishes are rate limited');
    for (const r of refused) assert.ok(r.reason instanceof RateLimitedError, String(r.reason));
    assert.equal(limited.length, refused.length);
    const seqs = results.filter((r) => r.status === 'fulfilled').map((r) => r.value.seq);
    assert.equal(new Set(seqs).size, seqs.length);
  });

  test('a refused token is fatal: AuthError, closed, no reconnect', T, async () => {
    let calls = 0;
    const bad = open({
      getToken: () => { calls++; return 'not.a.jwt'; },
      backoffInitialMs: 20,
    });
    const states = [];
    bad.on('state', ({ state }) => states.push(state));
    await assert.rejects(bad.ready(), AuthError);
    assert.equal(bad.state, State.CLOSED);
    await assert.rejects(bad.publish('s', 'chat.message', {}), AuthError);
    await sleep(300);
    assert.equal(calls, 1);
    assert.deepEqual(states, ['closed']);
  });

  test('close() ends subscriptions and rejects pending publishes', T, async () => {
    const c = open({ getToken: () => gw.token({ sub: 'erin', role: 'agent', sessions: ['s-close'] }) });
    const sub = await c.join('s-close');
    const it = sub[Symbol.asyncIterator]();
    const waiting = it.next();
    c.close();
    assert.equal((await waiting).done, true);
    assert.equal(c.state, State.CLOSED);
    await assert.rejects(c.publish('s-close', 'x', 1), ClosedError);
  });

  test('leave sends leave once the last subscription closes; re-join works', T, async () => {
    const agent = open({ getToken: () => gw.token({ sub: 'w-leave', role: 'agent', sessions: ['*'] }) });
    const peer = await rawPeer(gw.url, gw.token({ sub: 'w-pub', role: 'agent', sessions: ['*'] }));
    const a = [];
    const b = [];
    const subA = await agent.join('s-leave', { onEvent: (e) => a.push(e.seq) });
    await agent.join('s-leave', { onEvent: (e) => b.push(e.seq) });
    peer.send({ type: 'publish', session: 's-leave', id: 'x1', kind: 'k', data: 1 });
    await waitFor(() => a.length === 1 && b.length === 1, 5000, 'both subscriptions');
    subA.close();
    agent.leave('s-leave');
    await sleep(100);
    peer.send({ type: 'publish', session: 's-leave', id: 'x2', kind: 'k', data: 2 });
    await peer.next((f) => f.type === 'ack' && f.id === 'x2');
    await sleep(200);
    assert.deepEqual(a, [1]);
    assert.deepEqual(b, [1]);
    const c = [];
    await agent.join('s-leave', { since: 1, onEvent: (e) => c.push(e.seq) });
    await waitFor(() => c.length === 1, 5000, 're-join replay');
    assert.deepEqual(c, [2]);
    peer.close();
  });

  test('a second subscription with an older since gets its replay; the first sees no duplicate', T, async () => {
    const agent = open({ getToken: () => gw.token({ sub: 'w-multi', role: 'agent', sessions: ['*'] }) });
    for (let i = 1; i <= 3; i++) await agent.publish('s-multi', 'progress', { i });
    const live = [];
    const old = [];
    await agent.join('s-multi', { onEvent: (e) => live.push(e.seq) });
    const subOld = await agent.join('s-multi', { since: 0, onEvent: (e) => old.push(e.seq) });
    await agent.publish('s-multi', 'progress', { i: 4 });
    await waitFor(() => old.length === 4 && live.length === 1, 5000, 'both subscriptions');
    await sleep(150);
    assert.deepEqual(live, [4]);
    assert.deepEqual(old, [1, 2, 3, 4]);
    assert.equal(subOld.lastSeq, 4);
  });
});
