// Client behaviour the real gateway cannot be made to show on demand, against a scripted WebSocket peer on a
// real loopback socket: `left` `reset` (re-join at once with since/epoch, bounded), and token-stream assembly
// exactly as protocol-v1.1 §3 specifies the frames (snapshot `full`, deltas `text`, final / interrupted message).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { State, UnavailableError, connect } from '../web/client/v1/gateway-client.js';
import { WebSocket, waitFor } from './harness.mjs';

const T = { timeout: 30_000 };
const EPOCH = '0123456789abcdef';

/** A fake gateway: answers hello with welcome and hands every later frame to `onFrame(frame, send)`. */
class Scripted {
  constructor() {
    this.frames = [];
    this.onFrame = () => {};
    this.sockets = new Set();
  }
  async start() {
    this.wss = new WebSocket.Server({ host: '127.0.0.1', port: 0 });
    await new Promise((r) => this.wss.once('listening', r));
    this.wss.on('connection', (ws) => {
      this.sockets.add(ws);
      const send = (o) => ws.send(JSON.stringify(o));
      ws.on('message', (d) => {
        const f = JSON.parse(String(d));
        this.frames.push(f);
        if (f.type === 'hello') send({ type: 'welcome', conn: 'c1', sub: 'u', role: 'user', exp: Math.floor(Date.now() / 1000) + 3600 });
        else this.onFrame(f, send);
      });
    });
    return this;
  }
  get url() { return `ws://127.0.0.1:${this.wss.address().port}/v1/ws`; }
  close() { for (const s of this.sockets) s.terminate(); this.wss.close(); }
}

const ev = (seq, extra = {}) => ({ type: 'event', session: 's', seq, id: `m${seq}`, kind: 'chat.message', from: { sub: 'a', role: 'agent' }, ts: '2026-01-01T00:00:00.000Z', data: { text: `t${seq}` }, ...extra });
const delta = (data, kind = 'chat.delta', sub = 'a') => ({ type: 'event', session: 's', id: `d-${Math.random()}`, kind, from: { sub, role: 'agent' }, ts: '2026-01-01T00:00:00.000Z', data });

describe('scripted gateway', { timeout: 60_000 }, () => {
  let fake;
  const clients = [];
  before(async () => { fake = await new Scripted().start(); });
  after(() => { for (const c of clients) c.close(); fake.close(); });
  const open = () => {
    const c = connect({ WebSocket, url: fake.url, getToken: () => 'tok', backoffInitialMs: 20, backoffMaxMs: 100, pingIntervalMs: 0 });
    clients.push(c);
    return c;
  };

  test('left reset: re-joined at once with since and epoch; no loss, no duplicate; bounded without progress', T, async () => {
    fake.frames.length = 0;
    let joins = 0;
    fake.onFrame = (f, send) => {
      if (f.type !== 'join') return;
      joins++;
      if (joins === 1) {
        send({ type: 'joined', session: 's', head: 3, epoch: EPOCH });
        send(ev(1)); send(ev(2));
        send({ type: 'left', session: 's', reason: 'reset' });
      } else if (joins === 2) {
        send({ type: 'joined', session: 's', head: 4, epoch: EPOCH });
        send(ev(3)); send(ev(4));
      } else {
        send({ type: 'joined', session: 's', head: 4, epoch: EPOCH });
        send({ type: 'left', session: 's', reason: 'reset' });
      }
    };
    const c = open();
    const lefts = [];
    c.on('left', (l) => lefts.push(l));
    const seen = [];
    const sub = await c.join('s', { since: 0, onEvent: (e) => seen.push(e.seq) });
    await waitFor(() => seen.length === 4, 5000, 'events after the re-join');
    assert.deepEqual(seen, [1, 2, 3, 4]);
    const joinFrames = fake.frames.filter((f) => f.type === 'join');
    assert.deepEqual(joinFrames[1], { type: 'join', session: 's', since: 2, epoch: EPOCH });
    assert.equal(lefts[0].reason, 'reset');
    assert.equal(sub.lastSeq, 4);
    assert.equal(c.state, State.OPEN);

    // A gateway that keeps resetting without progress: the client gives up after maxResetRejoins (8).
    fake.onFrame = (f, send) => {
      if (f.type === 'join') { send({ type: 'joined', session: 's', head: 4, epoch: EPOCH }); send({ type: 'left', session: 's', reason: 'reset' }); }
    };
    const it = sub; // onEvent subscription: closed with the error
    fake.sockets.forEach((s) => s.send(JSON.stringify({ type: 'left', session: 's', reason: 'reset' })));
    await waitFor(() => lefts.some((l) => l.error), 10_000, 'give up');
    const last = lefts.find((l) => l.error);
    assert.ok(last.error instanceof UnavailableError);
    assert.ok(fake.frames.filter((f) => f.type === 'join').length <= 2 + 9 + 1, 'bounded re-joins');
    assert.equal(it._done, true);
  });

  test('stream assembly: snapshot, deltas, final message; interrupted; late deltas ignored; bounded', T, async () => {
    fake.onFrame = (f, send) => {
      if (f.type !== 'join') return;
      send({ type: 'joined', session: 's', head: 0, epoch: EPOCH });
      // After joined and replay: one snapshot per open stream.
      send({ ...delta({ stream: 'x', full: 'Hello' }, 'answer.delta'), id: 'x' });
      send({ ...delta({ stream: 'y', full: 'Other' }), id: 'y' });
      send(delta({ stream: 'x', text: ', wor' }, 'answer.delta'));
      send(delta({ stream: 'x', text: 'ld' }, 'answer.delta'));
      send(ev(1, { data: { stream: 'x', text: 'Hello, world!' } }));
      send(delta({ stream: 'x', text: ' late' }, 'answer.delta'));
      send(delta({ stream: 'y', text: ' half' }));
      send(ev(2, { id: 'stream:y', data: { stream: 'y', text: 'Other half', status: 'interrupted' } }));
      send(delta({ text: 'no stream id' }));
      send(ev(3, { data: { stream: 'never-open', text: 'plain' } }));
    };
    const c = open();
    const updates = [];
    const perSub = [];
    c.on('stream', (s) => updates.push(s));
    const events = [];
    await c.join('s', { onEvent: (e) => events.push(e), onStream: (s) => perSub.push(s) });
    await waitFor(() => events.length === 10, 5000, 'all frames');
    const xs = updates.filter((u) => u.stream === 'x');
    assert.deepEqual(xs.map((u) => [u.text, u.done]), [['Hello', false], ['Hello, wor', false], ['Hello, world', false], ['Hello, world!', true]]);
    assert.equal(xs[0].kind, 'answer.delta');
    assert.deepEqual(xs[0].from, { sub: 'a', role: 'agent' });
    assert.equal(xs[3].seq, 1);
    assert.equal(xs[3].kind, 'chat.message');
    const ys = updates.filter((u) => u.stream === 'y');
    assert.deepEqual(ys.map((u) => [u.text, u.done, u.status]), [['Other', false, undefined], ['Other half', false, undefined], ['Other half', true, 'interrupted']]);
    assert.equal(ys[2].event.id, 'stream:y');
    assert.equal(updates.length, 7, 'late delta, stream-less delta and a final message of a stream never open: no update');
    assert.equal(perSub.length, updates.length);
    assert.deepEqual(c.streams('s'), []);
  });

  test('streams of different senders with the same id are separate; at most maxStreamsPerSession kept', T, async () => {
    fake.onFrame = (f, send) => {
      if (f.type !== 'join') return;
      send({ type: 'joined', session: 's', head: 0, epoch: EPOCH });
      send(delta({ stream: 'same', text: 'A' }, 'chat.delta', 'a1'));
      send(delta({ stream: 'same', text: 'B' }, 'chat.delta', 'a2'));
      for (let i = 0; i < 100; i++) send(delta({ stream: `many-${i}`, text: 'z' }));
    };
    const c = open();
    let n = 0;
    c.on('stream', () => n++);
    await c.join('s');
    await waitFor(() => n === 102, 5000, 'updates');
    const open_ = c.streams('s');
    assert.equal(open_.length, 64);
    assert.equal(open_.at(-1).stream, 'many-99');
  });
});
