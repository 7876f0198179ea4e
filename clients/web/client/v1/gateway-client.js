// Samokoder realtime gateway: browser client, protocol v1.
//
// An ES module with no dependencies and no build step, served by the gateway at
// /client/v1/gateway-client.js. It speaks the wire contract (docs/protocol.md) and hides reconnects:
//   - reconnects by itself with jittered, bounded exponential backoff, calling getToken() again each time;
//   - re-joins every joined session with `since` = the last seq it delivered (and the epoch it saw), so the
//     application sees each durable event exactly once, in order;
//   - re-sends publishes that were not acked with the same id (the gateway dedupes them);
//   - reports connection states, trimmed/reset transcripts, rate limits and close reasons as typed events.
// See docs/clients.md for the full API.

/** Connection states, in the order a connection normally goes through them. */
export const State = Object.freeze({
  CONNECTING: 'connecting', // first connection attempt (or waiting to retry it)
  OPEN: 'open', // welcomed, every session re-joined
  RESUMING: 'resuming', // the connection dropped: reconnecting, re-joining and re-sending
  CLOSED: 'closed', // close() was called, or a fatal error (authentication refused)
});

/** Close codes the gateway uses (protocol v1). */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  BINARY: 1003,
  ABNORMAL: 1006,
  INVALID_UTF8: 1007,
  TOO_BIG: 1009,
  PROTOCOL: 4000,
  AUTH: 4001,
  POLICY: 4008,
  TOO_SLOW: 4009,
});

/** Base class of every error this client raises or reports. */
export class GatewayError extends Error {
  /**
   * @param {string} code protocol error code (`forbidden`, `rate_limited`, ...) or a client code
   * @param {string} message
   * @param {{ref?: string, session?: string, closeCode?: number}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message);
    this.name = 'GatewayError';
    this.code = code;
    this.ref = extra.ref;
    this.session = extra.session;
    this.closeCode = extra.closeCode;
  }
}
/** The token was refused (close 4001 before welcome, or `unauthorized`). Fatal: the client stops. */
export class AuthError extends GatewayError { constructor(m, x) { super('unauthorized', m, x); this.name = 'AuthError'; } }
/** The token may not join that session or publish that kind there. */
export class ForbiddenError extends GatewayError { constructor(m, x) { super('forbidden', m, x); this.name = 'ForbiddenError'; } }
/** Over the publish rate; the publish was not accepted (retry later with the same or a new id). */
export class RateLimitedError extends GatewayError { constructor(m, x) { super('rate_limited', m, x); this.name = 'RateLimitedError'; } }
/** The frame was malformed or a field broke the rules (session id, kind, id). */
export class BadRequestError extends GatewayError { constructor(m, x) { super('bad_request', m, x); this.name = 'BadRequestError'; } }
/** The publish is larger than the gateway accepts. */
export class TooLargeError extends GatewayError { constructor(m, x) { super('too_large', m, x); this.name = 'TooLargeError'; } }
/** Storage refused the write or the gateway is shutting down: the event was not stored. */
export class UnavailableError extends GatewayError { constructor(m, x) { super('unavailable', m, x); this.name = 'UnavailableError'; } }
/** `leave` of a session that is not joined. */
export class NotFoundError extends GatewayError { constructor(m, x) { super('not_found', m, x); this.name = 'NotFoundError'; } }
/** The client was closed (close() or a fatal error) before the operation completed. */
export class ClosedError extends GatewayError { constructor(m, x) { super('closed', m, x); this.name = 'ClosedError'; } }

const ERROR_CLASSES = {
  unauthorized: AuthError,
  forbidden: ForbiddenError,
  rate_limited: RateLimitedError,
  bad_request: BadRequestError,
  too_large: TooLargeError,
  unavailable: UnavailableError,
  not_found: NotFoundError,
};

/** Builds the typed error for a gateway `error` frame. */
export function errorFromFrame(frame, session) {
  const Cls = ERROR_CLASSES[frame.code];
  const extra = { ref: frame.ref, session };
  return Cls ? new Cls(frame.message || frame.code, extra) : new GatewayError(String(frame.code), frame.message || '', extra);
}

/** A fresh publisher message id (unique per client; the gateway dedupes on it). */
export function newId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  let s = '';
  for (let i = 0; i < 4; i++) s += Math.floor(Math.random() * 0x100000000).toString(16).padStart(8, '0');
  return s;
}

const DEFAULTS = {
  backoffInitialMs: 250,
  backoffMaxMs: 10_000,
  helloTimeoutMs: 10_000,
  pingIntervalMs: 20_000,
  pongTimeoutMs: 10_000,
  maxMessageBytes: 1 << 20,
  maxUnavailableRetries: 8,
  backoffResetMs: 30_000,
  // v1.1
  refresh: true,
  refreshLeadMs: 60_000,
  refreshRatio: 0.8,
  refreshMinDelayMs: 500,
  maxRefreshRetries: 3,
  refreshTimeoutMs: 10_000,
  maxResetRejoins: 8,
  maxStreamsPerSession: 64,
  maxPresenceEntries: 10_000,
  maxPendingHistory: 64,
};

/** Largest setTimeout delay (about 24.8 days); longer timers fire at once in browsers and Node. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** How many closed stream keys a session remembers (late deltas of a finished stream are ignored). */
const CLOSED_STREAMS_KEPT = 256;

/**
 * Creates a client and starts connecting.
 * @param {object} options
 * @param {string} options.url gateway endpoint, e.g. `wss://gw.example/v1/ws`
 * @param {() => (string|Promise<string>)} options.getToken returns a JWT; called before every (re)connect
 * @param {Function} [options.WebSocket] WebSocket constructor (default: globalThis.WebSocket)
 * @param {number} [options.backoffInitialMs=250] first retry delay (before jitter)
 * @param {number} [options.backoffMaxMs=10000] cap of the retry delay
 * @param {number} [options.helloTimeoutMs=10000] give up on a connection attempt without welcome after this
 * @param {number} [options.pingIntervalMs=20000] send a ping when the connection was idle this long (0: never)
 * @param {number} [options.pongTimeoutMs=10000] drop the connection if nothing arrives this long after a ping
 * @param {number} [options.maxMessageBytes=1048576] refuse publishes whose frame is larger (the gateway's limit)
 * @param {number} [options.maxUnavailableRetries=8] re-send a durable publish refused as `unavailable` this often
 * @param {number} [options.backoffResetMs=30000] a connection that stayed up this long resets the backoff
 * @param {() => string} [options.newId] publisher id generator
 * @param {boolean} [options.refresh=true] refresh the token in-band before `exp` (protocol v1.1)
 * @param {number} [options.refreshLeadMs=60000] refresh this long before `exp` ...
 * @param {number} [options.refreshRatio=0.8] ... or, for tokens with less than 2 × lead left, at this share of it
 * @param {number} [options.refreshMinDelayMs=500] never schedule a refresh sooner than this
 * @param {number} [options.maxRefreshRetries=3] retries of a refused refresh before falling back to 4001 → reconnect
 * @param {number} [options.refreshTimeoutMs=10000] a refresh without answer this long counts as failed
 * @param {number} [options.maxResetRejoins=8] re-joins after `left` `reset` without progress before giving up
 * @param {number} [options.maxStreamsPerSession=64] open token streams assembled per session (oldest dropped)
 * @param {number} [options.maxPresenceEntries=10000] presence entries kept per session
 * @param {number} [options.maxPendingHistory=64] history requests waiting for an answer
 * @returns {GatewayClient}
 */
export function connect(options) {
  const client = new GatewayClient(options);
  client.start();
  return client;
}

/** A session subscription: an async iterable of events, with the transcript position it has reached. */
export class Subscription {
  /** @internal */
  constructor(client, state, onEvent, since, extra = {}) {
    this._client = client;
    this._state = state;
    this._lastSeq = since ?? null; // null until known (a join without since takes `joined.head`)
    this._lastN = extra.last ?? null; // join {last: N}: the position becomes head - N at `joined`
    this._presence = !!extra.presence;
    this._onPresence = extra.onPresence;
    this._onStream = extra.onStream;
    this._onEvent = onEvent;
    this._queue = [];
    this._waiters = [];
    this._done = false;
    this._error = null;
  }

  /** The session id. */
  get session() { return this._state.session; }
  /** The last durable seq delivered to this subscription (its position in the transcript). */
  get lastSeq() { return this._lastSeq ?? 0; }
  /** The transcript epoch reported by the gateway. */
  get epoch() { return this._state.epoch; }
  /** The session head reported by the latest `joined`. */
  get head() { return this._state.head; }
  /**
   * The session's presence list `[{sub, role, conns}]` (sorted by sub, role) if this subscription asked for
   * presence, else null. `conns` is as of the last `joined`; join/leave frames add and remove subjects.
   */
  get presence() { return this._presence ? this._client._presenceList(this._state) : null; }
  /** Open token streams of the session: `[{session, stream, kind, from, text, done: false}]`. */
  get streams() { return this._client.streams(this._state.session); }

  /** Stops this subscription; the client leaves the session when its last subscription closes. */
  close() {
    if (this._done) return;
    this._finish(null);
    this._client._unsubscribe(this);
  }

  /** @internal */
  _deliver(ev) {
    if (this._done) return;
    if (typeof ev.seq === 'number') {
      if (this._lastSeq !== null && ev.seq <= this._lastSeq) return; // already delivered (replay overlap)
      this._lastSeq = ev.seq;
    }
    if (this._onEvent) {
      try { this._onEvent(ev); } catch (e) { this._client._emit('listenerError', e); }
      return;
    }
    const w = this._waiters.shift();
    if (w) w.resolve({ value: ev, done: false });
    else this._queue.push(ev);
  }

  /** @internal */
  _finish(error) {
    if (this._done) return;
    this._done = true;
    this._error = error;
    for (const w of this._waiters.splice(0)) {
      if (error) w.reject(error);
      else w.resolve({ value: undefined, done: true });
    }
  }

  /** Events in order: durable events exactly once, ephemeral ones as they come. */
  [Symbol.asyncIterator]() {
    return {
      next: () => {
        if (this._queue.length) return Promise.resolve({ value: this._queue.shift(), done: false });
        if (this._done) return this._error ? Promise.reject(this._error) : Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
      },
      return: () => {
        this.close();
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]() { return this; },
    };
  }
}

/** The connection to one gateway. Create it with connect(). */
export class GatewayClient {
  constructor(options) {
    if (!options || typeof options.url !== 'string') throw new TypeError('connect: options.url is required');
    if (typeof options.getToken !== 'function') throw new TypeError('connect: options.getToken must be a function');
    this._opts = { ...DEFAULTS, ...options };
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    if (typeof this._WebSocket !== 'function') throw new TypeError('connect: no WebSocket implementation (pass options.WebSocket)');
    this._newId = options.newId || newId;
    this._listeners = new Map();
    this._state = State.CONNECTING;
    this._everOpen = false;
    this._closed = false;
    this._ws = null;
    this._welcomed = false;
    this._generation = 0;
    this._attempt = 0;
    this._welcomedAt = 0;
    this._retryTimer = null;
    this._helloTimer = null;
    this._pingTimer = null;
    this._lastInbound = 0;
    this._pingSent = false;
    /** @type {Map<string, object>} session -> session state */
    this._sessions = new Map();
    /** @type {Map<string, object>} id -> pending publish */
    this._pending = new Map();
    /** FIFO of join/leave frames sent on this connection and not yet answered. */
    this._inflight = [];
    this.welcome = null;
    /** Expiry (Unix seconds) of the token in force, from `welcome` / `refreshed` (v1.1); null if unknown. */
    this.exp = null;
    /** Accepted in-band refreshes (over the client's lifetime). */
    this.refreshCount = 0;
    this._refreshTimer = null;
    this._refreshInflight = null;
    /** @type {Map<string, object>} id -> pending history request */
    this._history = new Map();
  }

  /** Current connection state (see State). */
  get state() { return this._state; }
  /** Number of publishes sent or queued and not yet acked. */
  get pendingCount() { return this._pending.size; }

  /**
   * Subscribes to client events. Returns a function that unsubscribes.
   * Types: `state` {state, previous}, `open` {conn, sub, role}, `close` {code, reason, willReconnect, delayMs},
   * `trimmed` {session, first}, `reset` {session, head, epoch}, `rate_limited` {session, ref, error},
   * `gap` {session, expected, got} (should never happen; the client re-joins to fill it),
   * `error` (GatewayError), `listenerError` (an exception thrown by a listener or onEvent callback).
   * v1.1: `refreshed` {exp}, `refresh_failed` {error, attempt, willRetry},
   * `presence` {session, action: 'sync'|'join'|'leave', sub?, role?, presence},
   * `left` {session, reason, error?} (the gateway ended a subscription), `stream` {session, stream, kind, from,
   * text, done, status?, seq?, event?}.
   */
  on(type, listener) {
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(listener);
    return () => set.delete(listener);
  }

  /** Removes a listener added with on(). */
  off(type, listener) {
    const set = this._listeners.get(type);
    if (set) set.delete(listener);
  }

  /** @internal */
  _emit(type, payload) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try { fn(payload); } catch (e) { if (type !== 'listenerError') this._emit('listenerError', e); }
    }
  }

  _setState(state) {
    if (this._state === state) return;
    const previous = this._state;
    this._state = state;
    this._emit('state', { state, previous });
  }

  /** @internal Starts the first connection attempt (connect() calls it). */
  start() {
    if (this._ws || this._closed) return;
    this._open();
  }

  /** Resolves once the client is open (welcomed, sessions re-joined); rejects if it closes first. */
  ready() {
    if (this._state === State.OPEN) return Promise.resolve(this.welcome);
    if (this._state === State.CLOSED) return Promise.reject(this._fatal || new ClosedError('client closed'));
    return new Promise((resolve, reject) => {
      const offs = [
        this.on('state', ({ state }) => {
          if (state === State.OPEN) { offs.forEach((f) => f()); resolve(this.welcome); }
          if (state === State.CLOSED) { offs.forEach((f) => f()); reject(this._fatal || new ClosedError('client closed')); }
        }),
      ];
    });
  }

  /**
   * Joins a session. Resolves with a Subscription once the gateway answered `joined`.
   * With `since`, every durable event with seq > since is replayed first; without it, only new events.
   * Events go to `onEvent` if given, otherwise they are buffered for `for await (const ev of sub)`.
   * Joining a session already joined adds another subscription that sees events from now on.
   * @param {string} session
   * v1.1: `last: N` (1-10000, not with `since`) replays only the last N durable events; `presence: true` asks
   * for the presence list and join/leave changes (`onPresence`); `onStream` gets assembled token streams.
   * @param {{since?: number, epoch?: string, last?: number, presence?: boolean, onEvent?: (ev: object) => void,
   *   onPresence?: (change: object) => void, onStream?: (stream: object) => void}} [opts]
   * @returns {Promise<Subscription>}
   */
  join(session, opts = {}) {
    if (this._closed) return Promise.reject(this._fatal || new ClosedError('client closed'));
    let last = opts.last ?? null;
    if (last !== null) {
      if (!Number.isInteger(last) || last < 1 || last > 10_000) return Promise.reject(new BadRequestError('join: last must be an integer from 1 to 10000', { session }));
      if (opts.since !== undefined && opts.since !== null) return Promise.reject(new BadRequestError('join: last and since cannot be used together', { session }));
    }
    let st = this._sessions.get(session);
    const isNew = !st;
    if (!st) {
      st = {
        session,
        maxSeq: null, // highest seq seen on the wire (or the head at the last `joined`)
        epoch: opts.epoch ?? null,
        head: null,
        joined: false,
        subs: new Set(),
        waiters: [],
        presenceOn: false, // the last join sent asked for presence
        presence: null, // Map key -> {sub, role, conns}
        streams: new Map(), // key sub\0stream -> open stream
        closedStreams: new Map(),
        resetRejoins: 0,
      };
      this._sessions.set(session, st);
    }
    let since = opts.since ?? null;
    if (!isNew && last !== null && st.maxSeq !== null) {
      // The session is joined already: the last N events are a replay from head - N.
      since = Math.max(0, st.maxSeq - last);
      last = null;
    }
    const sub = new Subscription(this, st, opts.onEvent, since, { last, presence: opts.presence, onPresence: opts.onPresence, onStream: opts.onStream });
    const needPresenceJoin = !!opts.presence && !st.presenceOn;
    if (!isNew && st.joined && since === null && last === null && !needPresenceJoin) {
      sub._lastSeq = st.maxSeq; // from now on
      st.subs.add(sub);
      return Promise.resolve(sub);
    }
    if (!isNew && since === null && last === null && st.maxSeq !== null) sub._lastSeq = st.maxSeq; // from now on
    st.subs.add(sub);
    const p = new Promise((resolve, reject) => st.waiters.push({ resolve: () => resolve(sub), reject }));
    // A new session, an older position than the session's subscriptions have, or presence to turn on:
    // (re-)join with since.
    if (this._canSend() && (isNew || needPresenceJoin || (since !== null && (st.maxSeq === null || since < st.maxSeq)))) this._sendJoin(st);
    else if (this._canSend() && st.joined) queueMicrotask(() => this._resolveWaiters(st));
    return p;
  }

  /** Leaves a session: closes all its subscriptions. */
  leave(session) {
    const st = this._sessions.get(session);
    if (!st) return;
    for (const sub of [...st.subs]) sub.close();
  }

  /**
   * Publishes an event. Resolves with the ack `{id, session, seq, duplicate}` (no seq when ephemeral).
   * Durable publishes are kept until acked and re-sent with the same id after a reconnect; ephemeral ones
   * (`ephemeral: true` or a kind ending in `.delta`) are sent once and resolve `{dropped: true}` if the
   * connection drops before their ack. Rejects with a typed GatewayError if the gateway refuses it.
   * @param {string} session
   * @param {string} kind
   * @param {*} data any JSON value
   * @param {{ephemeral?: boolean, id?: string}} [opts]
   */
  publish(session, kind, data, opts = {}) {
    if (this._closed) return Promise.reject(this._fatal || new ClosedError('client closed'));
    const id = opts.id ?? this._newId();
    if (this._pending.has(id)) return Promise.reject(new BadRequestError(`publish id ${id} is already pending`, { ref: id, session }));
    const ephemeral = !!opts.ephemeral || kind.endsWith('.delta');
    const frame = { type: 'publish', session, id, kind, data: data === undefined ? null : data };
    if (opts.ephemeral) frame.ephemeral = true;
    const text = JSON.stringify(frame);
    if (byteLength(text) > this._opts.maxMessageBytes) {
      return Promise.reject(new TooLargeError(`publish of ${byteLength(text)} bytes is over the limit`, { ref: id, session }));
    }
    return new Promise((resolve, reject) => {
      const entry = { id, session, text, ephemeral, resolve, reject, sentOn: 0, retries: 0 };
      this._pending.set(id, entry);
      if (this._canSend()) this._sendPending(entry);
    });
  }

  /**
   * Sends a user chat message (`chat.message`, data `{text, ...extra}`); resolves with the ack `{seq, id, ...}`.
   * This is the real replacement for the frontend's mock sendChatMessage.
   */
  sendChatMessage(session, text, extra = {}) {
    return this.publish(session, 'chat.message', { ...extra, text });
  }

  /**
   * Reads a page of the session's durable history (protocol v1.1 `history`; no subscription is made).
   * Resolves with `{session, events, first, head}`: up to `limit` events with seq < `before` (default: up to
   * the head), the newest ones, oldest first. Fewer than `limit` does not mean the start was reached: compare
   * the smallest seq with `first`. Page back with `before` = the smallest seq you hold. Sent after the next
   * `welcome` when not connected, re-sent after a reconnect; `unavailable` is retried (maxUnavailableRetries).
   * @param {{session: string, before?: number, limit?: number, signal?: AbortSignal}} req
   * @returns {Promise<{session: string, events: object[], first: number, head: number}>}
   */
  history({ session, before, limit, signal } = {}) {
    if (this._closed) return Promise.reject(this._fatal || new ClosedError('client closed'));
    if (typeof session !== 'string' || !session) return Promise.reject(new BadRequestError('history: session is required'));
    if (limit !== undefined && limit !== null && (!Number.isInteger(limit) || limit < 1 || limit > 500)) {
      return Promise.reject(new BadRequestError('history: limit must be an integer from 1 to 500', { session }));
    }
    if (before !== undefined && before !== null && (!Number.isInteger(before) || before < 0)) {
      return Promise.reject(new BadRequestError('history: before must be a non-negative integer', { session }));
    }
    if (this._history.size >= this._opts.maxPendingHistory) {
      return Promise.reject(new RateLimitedError(`history: more than ${this._opts.maxPendingHistory} requests pending`, { session }));
    }
    if (signal && signal.aborted) return Promise.reject(abortError(signal));
    const id = `h-${this._newId()}`;
    const frame = { type: 'history', session, id };
    if (before !== undefined && before !== null) frame.before = before;
    if (limit !== undefined && limit !== null) frame.limit = limit;
    return new Promise((resolve, reject) => {
      const entry = { id, session, text: JSON.stringify(frame), retries: 0, sentOn: 0, signal, onAbort: null };
      const settle = (fn, value) => {
        if (this._history.get(id) !== entry) return;
        this._history.delete(id);
        if (signal && entry.onAbort) signal.removeEventListener('abort', entry.onAbort);
        fn(value);
      };
      entry.resolve = (v) => settle(resolve, v);
      entry.reject = (e) => settle(reject, e);
      if (signal) {
        entry.onAbort = () => entry.reject(abortError(signal));
        signal.addEventListener('abort', entry.onAbort, { once: true });
      }
      this._history.set(id, entry);
      if (this._canSend()) this._sendHistory(entry);
    });
  }

  /** The open token streams of a session, assembled from snapshots and deltas: `[{session, stream, kind, from, text, done}]`. */
  streams(session) {
    const st = this._sessions.get(session);
    return st ? [...st.streams.values()].map((s) => ({ ...s })) : [];
  }

  /** Asks for an in-band token refresh now (normally scheduled before `exp` by itself). Resolves with the new exp. */
  refreshNow() {
    if (!this._canSend()) return Promise.reject(new ClosedError('not connected'));
    return new Promise((resolve, reject) => {
      const offs = [
        this.on('refreshed', ({ exp }) => { offs.forEach((f) => f()); resolve(exp); }),
        this.on('refresh_failed', ({ error }) => { offs.forEach((f) => f()); reject(error); }),
      ];
      this._startRefresh(this._generation, 0);
    });
  }

  /** Closes the client for good: no reconnect; pending publishes and subscriptions end with ClosedError. */
  close(code = 1000, reason = 'client closed') {
    if (this._closed) return;
    this._shutdown(new ClosedError('client closed'), code, reason);
  }

  // ---- internals ------------------------------------------------------------------------------------------

  _canSend() {
    return !!this._ws && this._welcomed;
  }

  async _open() {
    const gen = ++this._generation;
    this._welcomed = false;
    this._inflight = [];
    this._setState(this._everOpen ? State.RESUMING : State.CONNECTING);
    let token;
    try {
      token = await this._opts.getToken();
    } catch (e) {
      if (gen !== this._generation || this._closed) return;
      this._emit('error', new GatewayError('token', `getToken failed: ${e && e.message ? e.message : e}`));
      this._scheduleReconnect({ code: 0, reason: 'getToken failed' });
      return;
    }
    if (gen !== this._generation || this._closed) return;
    let ws;
    try {
      ws = new this._WebSocket(this._opts.url);
    } catch (e) {
      this._emit('error', new GatewayError('connect', `cannot open ${this._opts.url}: ${e && e.message ? e.message : e}`));
      this._scheduleReconnect({ code: 0, reason: 'connect failed' });
      return;
    }
    this._ws = ws;
    const live = () => gen === this._generation && this._ws === ws;
    this._helloTimer = setTimeout(() => {
      if (live()) this._drop(ws, { code: CloseCode.ABNORMAL, reason: 'no welcome in time' });
    }, this._opts.helloTimeoutMs);
    ws.onopen = () => {
      if (!live()) return;
      this._lastInbound = Date.now();
      ws.send(JSON.stringify({ type: 'hello', token }));
    };
    ws.onmessage = (msg) => {
      if (!live()) return;
      this._lastInbound = Date.now();
      this._pingSent = false;
      const raw = typeof msg.data === 'string' ? msg.data : String(msg.data);
      let frame;
      try { frame = JSON.parse(raw); } catch { return; }
      if (frame && typeof frame === 'object') this._onFrame(frame);
    };
    ws.onerror = () => {
      // A close event follows; nothing to do here (browsers give no detail).
    };
    ws.onclose = (ev) => {
      if (!live()) return;
      this._drop(ws, { code: ev.code, reason: ev.reason || '' }, true);
    };
  }

  /** The connection ended (closed by the gateway, failed, or given up on): settle state and reconnect. */
  _drop(ws, info, alreadyClosed = false) {
    if (ws !== this._ws) return;
    const wasWelcomed = this._welcomed;
    const droppedGeneration = this._generation;
    if (wasWelcomed && Date.now() - this._welcomedAt >= this._opts.backoffResetMs) this._attempt = 0;
    this._ws = null;
    this._welcomed = false;
    this._generation++;
    clearTimeout(this._helloTimer);
    clearInterval(this._pingTimer);
    this._cancelRefresh();
    detach(ws);
    if (!alreadyClosed) {
      try { ws.close(4000, info.reason.slice(0, 100)); } catch { /* already closing */ }
    }
    for (const st of this._sessions.values()) st.joined = false;
    for (const h of this._history.values()) h.sentOn = 0;
    this._inflight = [];
    if (info.code === CloseCode.TOO_BIG) {
      // The gateway's size limit is lower than ours: give up on the largest publish sent on that connection
      // (re-sending it would close every new connection too).
      let largest = null;
      for (const e of this._pending.values()) {
        if (e.sentOn === droppedGeneration && (!largest || e.text.length > largest.text.length)) largest = e;
      }
      if (largest) {
        this._pending.delete(largest.id);
        largest.reject(new TooLargeError('the gateway closed the connection: message too big (1009)', { ref: largest.id, session: largest.session, closeCode: 1009 }));
      }
    }
    // Ephemeral publishes sent on the lost connection are not re-sent.
    for (const entry of [...this._pending.values()]) {
      if (entry.ephemeral && entry.sentOn) {
        this._pending.delete(entry.id);
        entry.resolve({ id: entry.id, session: entry.session, dropped: true });
      }
    }
    if (this._closed) return;
    if (info.code === CloseCode.AUTH && !wasWelcomed) {
      const err = new AuthError(`authentication refused: ${info.reason || 'close 4001'}`, { closeCode: info.code });
      this._emit('close', { ...info, willReconnect: false, delayMs: 0 });
      this._shutdown(err, 1000, '', false);
      return;
    }
    this._scheduleReconnect(info);
  }

  _scheduleReconnect(info) {
    const base = Math.min(this._opts.backoffMaxMs, this._opts.backoffInitialMs * 2 ** Math.min(this._attempt, 30));
    // "Equal jitter": half fixed, half random, so retries of many clients spread out but never hammer.
    let delay = base / 2 + Math.random() * (base / 2);
    // 4008 (rate or policy): back off several seconds at least.
    if (info.code === CloseCode.POLICY) delay = Math.max(delay, Math.min(this._opts.backoffMaxMs, 3000));
    this._attempt++;
    this._setState(this._everOpen ? State.RESUMING : State.CONNECTING);
    this._emit('close', { code: info.code, reason: info.reason, willReconnect: true, delayMs: Math.round(delay) });
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      if (!this._closed) this._open();
    }, delay);
  }

  _shutdown(error, code, reason, closeSocket = true) {
    this._closed = true;
    this._fatal = error instanceof ClosedError ? null : error;
    clearTimeout(this._retryTimer);
    clearTimeout(this._helloTimer);
    clearInterval(this._pingTimer);
    this._cancelRefresh();
    const ws = this._ws;
    this._ws = null;
    this._welcomed = false;
    this._generation++;
    if (ws) {
      detach(ws);
      if (closeSocket) { try { ws.close(code, reason); } catch { /* ignore */ } }
    }
    for (const entry of this._pending.values()) entry.reject(error);
    this._pending.clear();
    for (const h of [...this._history.values()]) h.reject(error);
    for (const st of this._sessions.values()) {
      for (const w of st.waiters.splice(0)) w.reject(error);
      for (const sub of st.subs) sub._finish(error instanceof ClosedError ? null : error);
    }
    this._sessions.clear();
    if (!(error instanceof ClosedError)) this._emit('error', error);
    if (closeSocket && error instanceof ClosedError) this._emit('close', { code, reason, willReconnect: false, delayMs: 0 });
    this._setState(State.CLOSED);
  }

  _send(obj) {
    if (!this._ws) return false;
    try {
      this._ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj));
      return true;
    } catch {
      return false;
    }
  }

  /** Where to resume a session: the oldest position among its subscriptions (each drops what it has seen). */
  _resumeSince(st) {
    let since = null;
    for (const sub of st.subs) {
      if (sub._lastSeq !== null) since = since === null ? sub._lastSeq : Math.min(since, sub._lastSeq);
    }
    return since ?? st.maxSeq;
  }

  _resolveWaiters(st) {
    if (!st.joined) return;
    for (const w of st.waiters.splice(0)) w.resolve();
  }

  _sendJoin(st) {
    const frame = { type: 'join', session: st.session };
    const since = this._resumeSince(st);
    if (since !== null && since !== undefined) {
      frame.since = since;
      if (st.epoch) frame.epoch = st.epoch;
    } else {
      // No position yet: a join {last: N} asks for the last N events (the largest N among its subscriptions).
      let last = null;
      for (const sub of st.subs) if (sub._lastSeq === null && sub._lastN !== null) last = Math.max(last ?? 0, sub._lastN);
      if (last !== null) frame.last = last;
    }
    let presence = false;
    for (const sub of st.subs) if (sub._presence) presence = true;
    if (presence) frame.presence = true;
    st.presenceOn = presence;
    this._inflight.push({ type: 'join', session: st.session });
    this._send(frame);
  }

  _sendPending(entry) {
    entry.sentOn = this._generation;
    this._send(entry.text);
  }

  _sendHistory(entry) {
    entry.sentOn = this._generation;
    this._send(entry.text);
  }

  // ---- token refresh (v1.1) -------------------------------------------------------------------------------

  _cancelRefresh() {
    clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    if (this._refreshInflight) clearTimeout(this._refreshInflight.timer);
    this._refreshInflight = null;
  }

  /** Schedules the next refresh before `exp`: lead before it, or at `refreshRatio` of a short lifetime. */
  _scheduleRefresh(exp, delayOverride) {
    clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    if (!this._opts.refresh || typeof exp !== 'number' || !Number.isFinite(exp)) return;
    let delay = delayOverride;
    if (delay === undefined) {
      const remaining = exp * 1000 - Date.now();
      const lead = this._opts.refreshLeadMs;
      delay = remaining > 2 * lead ? remaining - lead : remaining * this._opts.refreshRatio;
    }
    delay = Math.min(MAX_TIMER_MS, Math.max(this._opts.refreshMinDelayMs, delay));
    const gen = this._generation;
    this._refreshTimer = setTimeout(() => {
      this._refreshTimer = null;
      this._startRefresh(gen, 0);
    }, delay);
  }

  async _startRefresh(gen, attempt) {
    if (gen !== this._generation || !this._canSend() || this._refreshInflight) return;
    const inflight = { gen, attempt, timer: null };
    this._refreshInflight = inflight;
    let token;
    try {
      token = await this._opts.getToken();
    } catch (e) {
      if (this._refreshInflight !== inflight) return;
      this._refreshFailed(new GatewayError('token', `getToken failed: ${e && e.message ? e.message : e}`));
      return;
    }
    if (this._refreshInflight !== inflight || gen !== this._generation || !this._canSend()) return;
    inflight.timer = setTimeout(() => {
      if (this._refreshInflight === inflight) this._refreshFailed(new GatewayError('timeout', 'no answer to refresh in time'));
    }, this._opts.refreshTimeoutMs);
    this._send({ type: 'refresh', token: String(token) });
  }

  _onRefreshed(f) {
    const inflight = this._refreshInflight;
    if (inflight) clearTimeout(inflight.timer);
    this._refreshInflight = null;
    if (typeof f.exp === 'number') {
      this.exp = f.exp;
      if (this.welcome) this.welcome.exp = f.exp;
    }
    this.refreshCount++;
    this._emit('refreshed', { exp: this.exp });
    this._scheduleRefresh(this.exp);
  }

  /** A refused (or failed) refresh: report it, retry a bounded number of times, then leave it to 4001 → reconnect. */
  _refreshFailed(error) {
    const inflight = this._refreshInflight;
    if (!inflight) return;
    clearTimeout(inflight.timer);
    this._refreshInflight = null;
    const attempt = inflight.attempt + 1;
    const willRetry = attempt <= this._opts.maxRefreshRetries;
    this._emit('refresh_failed', { error, attempt, willRetry });
    if (!willRetry) return; // the old token stays in force; the gateway closes 4001 at exp and we reconnect
    const gen = inflight.gen;
    const base = Math.min(this._opts.backoffMaxMs, Math.max(this._opts.refreshMinDelayMs, this._opts.backoffInitialMs * 2 ** attempt));
    let delay = base / 2 + Math.random() * (base / 2);
    if (typeof this.exp === 'number') {
      // Keep retries inside the token's remaining lifetime where possible.
      const remaining = this.exp * 1000 - Date.now();
      if (remaining > 0) delay = Math.min(delay, Math.max(this._opts.refreshMinDelayMs / 2, remaining / 4));
    }
    clearTimeout(this._refreshTimer);
    this._refreshTimer = setTimeout(() => {
      this._refreshTimer = null;
      this._startRefresh(gen, attempt);
    }, delay);
  }

  _onWelcome(frame) {
    this._welcomed = true;
    this._welcomedAt = Date.now();
    clearTimeout(this._helloTimer);
    this.welcome = { conn: frame.conn, sub: frame.sub, role: frame.role };
    if (typeof frame.exp === 'number') this.welcome.exp = frame.exp;
    this.exp = typeof frame.exp === 'number' ? frame.exp : null;
    this._startPings();
    this._scheduleRefresh(this.exp);
    this._emit('open', this.welcome);
    for (const st of this._sessions.values()) this._sendJoin(st);
    for (const entry of this._pending.values()) this._sendPending(entry);
    for (const h of this._history.values()) this._sendHistory(h);
    this._maybeOpen();
  }

  _maybeOpen() {
    if (!this._welcomed) return;
    for (const st of this._sessions.values()) if (!st.joined && st.subs.size) return;
    this._everOpen = true;
    this._setState(State.OPEN);
  }

  _startPings() {
    clearInterval(this._pingTimer);
    const interval = this._opts.pingIntervalMs;
    if (!interval) return;
    const ws = this._ws;
    this._pingSent = false;
    this._pingTimer = setInterval(() => {
      if (ws !== this._ws) return;
      const idle = Date.now() - this._lastInbound;
      if (this._pingSent && idle > interval + this._opts.pongTimeoutMs) {
        this._drop(ws, { code: CloseCode.ABNORMAL, reason: 'no answer to ping' });
      } else if (!this._pingSent && idle >= interval) {
        this._pingSent = true;
        this._send({ type: 'ping' });
      }
    }, Math.max(50, Math.min(interval, this._opts.pongTimeoutMs) / 2));
  }

  _onFrame(f) {
    switch (f.type) {
      case 'welcome': return this._onWelcome(f);
      case 'joined': return this._onJoined(f);
      case 'left': return this._onLeft(f);
      case 'event': return this._onEvent(f);
      case 'ack': return this._onAck(f);
      case 'error': return this._onError(f);
      case 'pong': return undefined;
      case 'refreshed': return this._onRefreshed(f);
      case 'presence': return this._onPresence(f);
      case 'history': return this._onHistory(f);
      default: return undefined;
    }
  }

  _popInflight(type, session) {
    const i = this._inflight.findIndex((x) => x.type === type && (session === undefined || x.session === session));
    if (i >= 0) return this._inflight.splice(i, 1)[0];
    return null;
  }

  _onJoined(f) {
    this._popInflight('join', f.session);
    const st = this._sessions.get(f.session);
    if (!st) return;
    st.head = f.head;
    const previousEpoch = st.epoch;
    st.epoch = f.epoch ?? st.epoch;
    if (f.reset) {
      // The transcript was recreated or `since` is past its head: replay starts from the first held event,
      // and every subscription must drop what it holds and rebuild.
      for (const sub of st.subs) sub._lastSeq = 0;
      st.maxSeq = f.head;
      this._emit('reset', { session: f.session, head: f.head, epoch: f.epoch, previousEpoch });
    } else {
      if (f.trimmed) {
        // Events after `since` were removed by retention; replay starts at `first`.
        const floor = Math.max(0, (f.first ?? 1) - 1);
        for (const sub of st.subs) if (sub._lastSeq !== null && sub._lastSeq < floor) sub._lastSeq = floor;
        this._emit('trimmed', { session: f.session, first: f.first, head: f.head });
      }
      st.maxSeq = Math.max(st.maxSeq ?? 0, f.head ?? 0);
    }
    for (const sub of st.subs) {
      if (sub._lastSeq === null) sub._lastSeq = sub._lastN !== null ? Math.max(0, (f.head ?? 0) - sub._lastN) : f.head;
    }
    if (Array.isArray(f.presence)) {
      st.presence = new Map();
      for (const p of f.presence.slice(0, this._opts.maxPresenceEntries)) {
        if (p && typeof p.sub === 'string') st.presence.set(presenceKey(p), { sub: p.sub, role: String(p.role ?? ''), conns: Number(p.conns) || 1 });
      }
      this._presenceChanged(st, { session: st.session, action: 'sync' });
    } else if (!st.presenceOn) {
      st.presence = null;
    }
    st.joined = true;
    st.gapRejoin = false;
    for (const w of st.waiters.splice(0)) w.resolve();
    if (!st.subs.size) {
      // Every subscription closed while the join was in flight.
      this._sessions.delete(st.session);
      this._inflight.push({ type: 'leave', session: st.session });
      this._send({ type: 'leave', session: st.session });
    }
    this._maybeOpen();
  }

  _onLeft(f) {
    if (!f.reason) {
      this._popInflight('leave', f.session);
      return;
    }
    // v1.1: the gateway ended the subscription.
    const st = this._sessions.get(f.session);
    if (!st) return;
    st.joined = false;
    if (f.reason === 'reset') {
      // It cannot continue without a gap: re-join at once with since/epoch (the resume path); joined says
      // trimmed or reset. Bounded: after maxResetRejoins without progress the subscriptions end.
      st.resetRejoins++;
      if (st.resetRejoins > this._opts.maxResetRejoins) {
        const err = new UnavailableError(`session ${f.session}: the gateway reset the subscription ${st.resetRejoins - 1} times without progress`, { session: f.session });
        this._emit('left', { session: f.session, reason: f.reason, error: err });
        this._endSession(st, err);
        return;
      }
      this._emit('left', { session: f.session, reason: f.reason });
      const gen = this._generation;
      const again = () => { if (gen === this._generation && this._canSend() && this._sessions.get(st.session) === st && !st.joined) this._sendJoin(st); };
      if (st.resetRejoins === 1) again();
      else setTimeout(again, Math.min(this._opts.backoffMaxMs, this._opts.backoffInitialMs * 2 ** (st.resetRejoins - 2)) * (0.5 + Math.random() / 2));
      return;
    }
    // `forbidden` (the token in force no longer allows the session) or a reason this client does not know:
    // do not re-join; end its subscriptions with the error.
    const err = f.reason === 'forbidden'
      ? new ForbiddenError(`the token in force no longer allows session ${f.session}`, { session: f.session })
      : new GatewayError(String(f.reason), `the gateway ended the subscription to ${f.session}: ${f.reason}`, { session: f.session });
    this._emit('left', { session: f.session, reason: f.reason, error: err });
    this._endSession(st, err);
  }

  /** Ends every subscription of a session with `err` (the iterators reject with it) and forgets the session. */
  _endSession(st, err) {
    if (this._sessions.get(st.session) === st) this._sessions.delete(st.session);
    for (const w of st.waiters.splice(0)) w.reject(err);
    for (const sub of [...st.subs]) sub._finish(err);
    st.subs.clear();
    st.streams.clear();
    st.presence = null;
    this._emit('error', err);
    this._maybeOpen();
  }

  _presenceList(st) {
    if (!st.presence) return [];
    return [...st.presence.values()]
      .map((p) => ({ ...p }))
      .sort((a, b) => (a.sub < b.sub ? -1 : a.sub > b.sub ? 1 : a.role < b.role ? -1 : a.role > b.role ? 1 : 0));
  }

  _presenceChanged(st, change) {
    const payload = { ...change, presence: this._presenceList(st) };
    this._emit('presence', payload);
    for (const sub of [...st.subs]) {
      if (!sub._presence || !sub._onPresence) continue;
      try { sub._onPresence(payload); } catch (e) { this._emit('listenerError', e); }
    }
  }

  _onPresence(f) {
    const st = this._sessions.get(f.session);
    if (!st || typeof f.sub !== 'string') return;
    if (!st.presence) st.presence = new Map();
    const key = presenceKey(f);
    if (f.action === 'join') {
      if (!st.presence.has(key) && st.presence.size >= this._opts.maxPresenceEntries) return;
      st.presence.set(key, { sub: f.sub, role: String(f.role ?? ''), conns: 1 });
    } else if (f.action === 'leave') {
      st.presence.delete(key);
    } else {
      return;
    }
    this._presenceChanged(st, { session: f.session, action: f.action, sub: f.sub, role: f.role });
  }

  _onHistory(f) {
    const entry = this._history.get(f.id);
    if (!entry) return;
    entry.resolve({
      session: f.session,
      events: Array.isArray(f.events) ? f.events : [],
      first: f.first,
      head: f.head,
    });
  }

  /** Token streams (v1.1): snapshots and `.delta` events with a `stream` assembled into one text per stream. */
  _trackStream(st, f) {
    const d = f.data;
    if (!d || typeof d !== 'object' || Array.isArray(d) || typeof d.stream !== 'string') return;
    const from = f.from || {};
    const key = `${from.sub}\u0000${d.stream}`;
    if (typeof f.seq === 'number') {
      // A durable event of the same sender with data.stream closes the stream (final answer or interrupted).
      const open = st.streams.get(key);
      st.streams.delete(key);
      rememberClosed(st, key);
      if (!open) return;
      const done = { session: st.session, stream: d.stream, kind: f.kind, from, text: typeof d.text === 'string' ? d.text : open.text, done: true, seq: f.seq, event: f };
      if (typeof d.status === 'string') done.status = d.status;
      this._streamChanged(st, done);
      return;
    }
    if (typeof f.kind !== 'string' || !f.kind.endsWith('.delta')) return;
    const hasFull = typeof d.full === 'string';
    if (!hasFull && typeof d.text !== 'string') return;
    if (st.closedStreams.has(key)) {
      if (!hasFull) return; // a late delta of a finished stream
      st.closedStreams.delete(key); // a snapshot: the stream (id reused) is open again
    }
    let s = st.streams.get(key);
    if (!s) {
      while (st.streams.size >= this._opts.maxStreamsPerSession) st.streams.delete(st.streams.keys().next().value);
      s = { session: st.session, stream: d.stream, kind: f.kind, from: { sub: from.sub, role: from.role }, text: '', done: false };
      st.streams.set(key, s);
    }
    s.text = hasFull ? d.full : s.text + d.text;
    if (s.text.length > this._opts.maxMessageBytes) s.text = s.text.slice(0, this._opts.maxMessageBytes);
    this._streamChanged(st, { ...s });
  }

  _streamChanged(st, payload) {
    this._emit('stream', payload);
    for (const sub of [...st.subs]) {
      if (!sub._onStream) continue;
      try { sub._onStream(payload); } catch (e) { this._emit('listenerError', e); }
    }
  }

  _onEvent(f) {
    const st = this._sessions.get(f.session);
    if (!st) return;
    if (typeof f.seq === 'number') {
      if (st.joined && st.maxSeq !== null && f.seq > st.maxSeq + 1) {
        // A gap (the gateway should never cause one): hold back, re-join where we are, let the replay fill it.
        if (!st.gapRejoin) {
          st.gapRejoin = true;
          this._emit('gap', { session: f.session, expected: st.maxSeq + 1, got: f.seq });
          this._sendJoin(st);
        }
        return;
      }
      if (st.maxSeq === null || f.seq > st.maxSeq) {
        st.maxSeq = f.seq;
        st.resetRejoins = 0; // progress
      }
      if (st.head === null || f.seq > st.head) st.head = f.seq;
    }
    for (const sub of [...st.subs]) sub._deliver(f);
    this._trackStream(st, f);
  }

  _onAck(f) {
    const entry = this._pending.get(f.id);
    if (!entry || entry.session !== f.session) return;
    this._pending.delete(f.id);
    const ack = { id: f.id, session: f.session };
    if (typeof f.seq === 'number') ack.seq = f.seq;
    if (f.duplicate) ack.duplicate = true;
    entry.resolve(ack);
  }

  _onError(f) {
    if (f.ref !== undefined && f.ref !== null && this._history.has(f.ref)) {
      const entry = this._history.get(f.ref);
      if (f.code === 'unavailable' && entry.retries < this._opts.maxUnavailableRetries) {
        entry.retries++;
        entry.sentOn = 0;
        const gen = this._generation;
        const delay = Math.min(this._opts.backoffMaxMs, this._opts.backoffInitialMs * 2 ** entry.retries) * (0.5 + Math.random() / 2);
        setTimeout(() => {
          if (gen === this._generation && this._canSend() && this._history.get(entry.id) === entry && !entry.sentOn) this._sendHistory(entry);
        }, delay);
        return;
      }
      entry.reject(errorFromFrame(f, entry.session));
      return;
    }
    if (f.code === 'unauthorized' && this._refreshInflight) {
      // Only a refused refresh is answered `unauthorized` on the WebSocket; the old token stays in force.
      this._refreshFailed(errorFromFrame(f));
      return;
    }
    if (f.ref !== undefined && f.ref !== null && this._pending.has(f.ref)) {
      const entry = this._pending.get(f.ref);
      const err = errorFromFrame(f, entry.session);
      if (f.code === 'unavailable' && !entry.ephemeral && entry.retries < this._opts.maxUnavailableRetries) {
        // Not stored (storage busy, or the gateway is draining): re-send the same id after a backoff delay,
        // or on the next connection, whichever comes first.
        entry.retries++;
        entry.sentOn = 0;
        const gen = this._generation;
        const delay = Math.min(this._opts.backoffMaxMs, this._opts.backoffInitialMs * 2 ** entry.retries) * (0.5 + Math.random() / 2);
        setTimeout(() => {
          if (gen === this._generation && this._canSend() && this._pending.get(entry.id) === entry && !entry.sentOn) this._sendPending(entry);
        }, delay);
        return;
      }
      if (f.code === 'rate_limited') this._emit('rate_limited', { session: entry.session, ref: f.ref, error: err });
      this._pending.delete(f.ref);
      entry.reject(err);
      return;
    }
    // Errors without ref answer the oldest unanswered join/leave (the gateway answers them in order).
    if (['forbidden', 'bad_request', 'not_found'].includes(f.code) && this._inflight.length) {
      const req = this._inflight.shift();
      const err = errorFromFrame(f, req.session);
      if (req.type === 'join') {
        const st = this._sessions.get(req.session);
        if (st) {
          this._sessions.delete(req.session);
          for (const w of st.waiters.splice(0)) w.reject(err);
          for (const sub of st.subs) sub._finish(err);
          this._emit('error', err);
          this._maybeOpen();
        }
      }
      return;
    }
    const err = errorFromFrame(f);
    if (f.code === 'unavailable') {
      // A replay read failed (no ref): the subscription may stall; re-join every session where it left off.
      const gen = this._generation;
      setTimeout(() => {
        if (gen !== this._generation || !this._canSend()) return;
        for (const st of this._sessions.values()) if (st.joined) this._sendJoin(st);
      }, this._opts.backoffInitialMs * (1 + Math.random()));
    }
    if (f.code === 'rate_limited') this._emit('rate_limited', { session: undefined, ref: f.ref, error: err });
    this._emit('error', err);
  }

  _unsubscribe(sub) {
    const st = sub._state;
    st.subs.delete(sub);
    if (st.subs.size || this._sessions.get(st.session) !== st) return;
    if (st.joined) {
      this._sessions.delete(st.session);
      for (const w of st.waiters.splice(0)) w.reject(new ClosedError('subscription closed'));
      if (this._canSend()) {
        this._inflight.push({ type: 'leave', session: st.session });
        this._send({ type: 'leave', session: st.session });
      }
    } else if (!this._canSend()) {
      this._sessions.delete(st.session); // never joined on this connection: nothing to leave
      for (const w of st.waiters.splice(0)) w.reject(new ClosedError('subscription closed'));
    }
    // else: a join is in flight; _onJoined sends the leave.
    this._maybeOpen();
  }
}

function presenceKey(p) {
  return `${p.sub}\u0000${p.role ?? ''}`;
}

function rememberClosed(st, key) {
  st.closedStreams.delete(key);
  st.closedStreams.set(key, true);
  while (st.closedStreams.size > CLOSED_STREAMS_KEPT) st.closedStreams.delete(st.closedStreams.keys().next().value);
}

function abortError(signal) {
  const r = signal && signal.reason;
  if (r instanceof Error) return r;
  const e = new GatewayError('aborted', 'the request was aborted');
  e.name = 'AbortError';
  return e;
}

/** Stops listening to a socket we gave up on (a no-op error handler stays: some implementations throw otherwise). */
function detach(ws) {
  ws.onopen = ws.onmessage = ws.onclose = null;
  ws.onerror = () => {};
}

function byteLength(text) {
  if (typeof TextEncoder !== 'undefined') return new TextEncoder().encode(text).length;
  return text.length * 3;
}
