// Session console: paste a token and a session id, watch the session live, send chat messages.
// Protocol v1.1: who is in the session (presence), an answer streaming when the page loads (the gateway's
// snapshot), and the transcript's last page first with "load older" paging through `history`.
// Uses only the gateway's own client library (served next to this page); no external resources.
import { State, connect } from '../client/v1/gateway-client.js';

const $ = (id) => document.getElementById(id);
const els = {
  form: $('connect-form'), url: $('url'), session: $('session'), token: $('token'),
  connect: $('connect'), disconnect: $('disconnect'),
  status: $('status'), statusText: $('status-text'),
  transcript: $('transcript'), empty: $('empty'),
  composer: $('composer'), message: $('message'), send: $('send'),
  bar: $('progress-bar'), fill: $('progress-fill'), caption: $('progress-caption'), steps: $('steps'), log: $('log'),
  presence: $('presence'), loadOlder: $('load-older'),
};

const defaultUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/ws`;
const params = new URLSearchParams(location.search);
els.url.value = params.get('url') || defaultUrl;
els.session.value = params.get('session') || '';
/** Events per page: the join replays the last PAGE events, "load older" fetches PAGE more (`?page=`, 1-500). */
const PAGE = Math.min(500, Math.max(1, Number.parseInt(params.get('page') || '', 10) || 50));

let client = null;
let subscription = null;
let session = '';
/** Bubbles by `sub|id` (own messages shown before their event arrives) and by stream key (deltas). */
let bubbles = new Map();
let streams = new Map();
let progress = { steps: new Map(), step: 0, of: 0, status: '' };
/** The smallest durable seq shown (the `before` of the next history page); null before the first event. */
let oldestSeq = null;
let loadingOlder = false;
/** History paged back to `first`: no "load older" any more. */
let reachedStart = false;

const STATUS_TEXT = {
  [State.CONNECTING]: 'connecting…', [State.OPEN]: 'live', [State.RESUMING]: 'reconnecting…', [State.CLOSED]: 'disconnected',
};

function setStatus(state, detail) {
  els.status.dataset.state = state;
  els.statusText.textContent = (STATUS_TEXT[state] || state) + (detail ? ` · ${detail}` : '');
  const live = state === State.OPEN || state === State.RESUMING;
  els.message.disabled = !live;
  els.send.disabled = !live;
}

function time(ts) {
  const d = ts ? new Date(ts) : new Date();
  return Number.isNaN(d.getTime()) ? '' : d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

function scrollDown() {
  els.transcript.scrollTop = els.transcript.scrollHeight;
}

function logLine(text, code) {
  const li = document.createElement('li');
  li.textContent = `${time()} ${text}`;
  if (code !== undefined) {
    const c = document.createElement('code');
    c.textContent = ` ${code}`;
    li.append(c);
  }
  els.log.prepend(li);
  while (els.log.children.length > 200) els.log.lastChild.remove();
}

function notice(text, tone = '') {
  els.empty.hidden = true;
  const p = document.createElement('p');
  p.className = `notice ${tone}`;
  p.textContent = text;
  els.transcript.append(p);
  scrollDown();
}

function textOf(data) {
  if (data == null) return '';
  if (typeof data === 'string') return data;
  if (typeof data.text === 'string') return data.text;
  return JSON.stringify(data);
}

/** A chat bubble element: {root, meta, body}. */
function makeBubble(role, who, when, before = null) {
  els.empty.hidden = true;
  const root = document.createElement('div');
  root.className = `msg ${role === 'user' ? 'user' : role}`;
  const meta = document.createElement('span');
  meta.className = 'meta';
  meta.textContent = `${who} · ${when}`;
  const body = document.createElement('div');
  body.className = 'bubble';
  root.append(meta, body);
  if (before) els.transcript.insertBefore(root, before);
  else els.transcript.append(root);
  return { root, meta, body };
}

function streamKey(ev) {
  const d = ev.data && typeof ev.data === 'object' ? ev.data : {};
  return `${ev.from?.sub}|${d.stream ?? ''}`;
}

function onChatMessage(ev) {
  const key = `${ev.from?.sub}|${ev.id}`;
  const known = bubbles.get(key);
  if (known) {
    known.root.classList.remove('pending');
    known.meta.textContent = `${ev.from.sub} · ${time(ev.ts)} · #${ev.seq}`;
    return;
  }
  // A final message replaces the streaming bubble of the same stream (or the sender's unnamed stream).
  let b = null;
  for (const k of [streamKey(ev), `${ev.from?.sub}|`]) {
    if (streams.has(k)) { b = streams.get(k); streams.delete(k); break; }
  }
  if (b) b.root.classList.remove('streaming');
  else b = makeBubble(ev.from?.role, ev.from?.sub, time(ev.ts));
  b.body.textContent = textOf(ev.data);
  const status = ev.data && typeof ev.data.status === 'string' ? ev.data.status : '';
  if (status) b.root.classList.add(status);
  b.meta.textContent = `${ev.from?.sub} · ${time(ev.ts)}${ev.seq ? ` · #${ev.seq}` : ''}${status ? ` · ${status}` : ''}`;
  b.root.dataset.seq = ev.seq ?? '';
  bubbles.set(key, b);
  scrollDown();
}

/** An assembled token stream from the client (snapshot + deltas); the final chat.message replaces it. */
function onStream(s) {
  if (s.done) return; // the durable message itself is rendered by onChatMessage
  const key = `${s.from?.sub}|${s.stream}`;
  let b = streams.get(key);
  if (!b) {
    b = makeBubble(s.from?.role, s.from?.sub, time());
    b.root.classList.add('streaming');
    streams.set(key, b);
  }
  b.body.textContent = s.text;
  scrollDown();
}

function renderPresence(list) {
  els.presence.replaceChildren();
  if (!list || !list.length) {
    const li = document.createElement('li');
    li.className = 'none';
    li.textContent = 'Nobody.';
    els.presence.append(li);
    return;
  }
  for (const p of list) {
    const li = document.createElement('li');
    li.dataset.sub = p.sub;
    li.dataset.role = p.role;
    const name = document.createElement('span');
    name.className = 'sub';
    name.textContent = p.sub;
    const role = document.createElement('span');
    role.className = 'role';
    role.textContent = p.role + (p.conns > 1 ? ` · ${p.conns} tabs` : '');
    li.append(name, role);
    els.presence.append(li);
  }
}

function noteSeq(seq) {
  if (typeof seq !== 'number') return;
  if (oldestSeq === null || seq < oldestSeq) {
    oldestSeq = seq;
    if (!reachedStart && !loadingOlder) setLoadOlder(oldestSeq > 1);
  }
}

function setLoadOlder(visible) {
  els.loadOlder.hidden = !visible;
  els.loadOlder.disabled = false;
}

/** One page of history (`before` = the oldest seq shown), inserted above what is shown; scroll kept in place. */
async function loadOlder() {
  if (!client || loadingOlder || oldestSeq === null) return;
  const c = client;
  loadingOlder = true;
  els.loadOlder.disabled = true;
  try {
    const page = await c.history({ session, before: oldestSeq, limit: PAGE });
    if (client !== c) return;
    const anchor = els.loadOlder.nextElementSibling;
    const height = els.transcript.scrollHeight;
    for (const ev of page.events) {
      noteSeq(ev.seq);
      if (ev.kind !== 'chat.message') continue;
      const key = `${ev.from?.sub}|${ev.id}`;
      if (bubbles.has(key)) continue;
      const b = makeBubble(ev.from?.role, ev.from?.sub, time(ev.ts), anchor);
      b.body.textContent = textOf(ev.data);
      const status = ev.data && typeof ev.data.status === 'string' ? ev.data.status : '';
      if (status) b.root.classList.add(status);
      b.meta.textContent = `${ev.from?.sub} · ${time(ev.ts)} · #${ev.seq}${status ? ` · ${status}` : ''}`;
      b.root.dataset.seq = ev.seq;
      bubbles.set(key, b);
    }
    els.transcript.scrollTop += els.transcript.scrollHeight - height;
    const atStart = !page.events.length || oldestSeq <= page.first;
    logLine(`loaded ${page.events.length} older events${atStart ? ' (start of the session)' : ''}`);
    if (atStart) {
      reachedStart = true;
      setLoadOlder(false);
      const p = document.createElement('p');
      p.className = 'notice start';
      p.textContent = page.first > 1 ? `Start of the kept transcript (#${page.first}).` : 'Start of the session.';
      els.loadOlder.after(p);
    } else {
      setLoadOlder(true);
    }
  } catch (e) {
    if (client === c) {
      logLine(`history failed: ${e.code || ''} ${e.message}`);
      setLoadOlder(true);
    }
  } finally {
    loadingOlder = false;
  }
}

function onChatDelta(ev) {
  const key = streamKey(ev);
  let b = streams.get(key);
  if (!b) {
    b = makeBubble(ev.from?.role, ev.from?.sub, time(ev.ts));
    b.root.classList.add('streaming');
    streams.set(key, b);
  }
  const d = ev.data && typeof ev.data === 'object' ? ev.data : { text: String(ev.data ?? '') };
  if (typeof d.full === 'string') b.body.textContent = d.full;
  else b.body.textContent += d.text ?? '';
  scrollDown();
}

function renderProgress() {
  const { step, of, status } = progress;
  const pct = of > 0 ? Math.round((Math.min(step, of) / of) * 100) : 0;
  const done = status === 'done' || (of > 0 && step >= of && status !== 'running');
  const shown = done ? 100 : pct;
  els.fill.style.width = `${shown}%`;
  els.fill.style.background = status === 'failed' ? 'var(--bad)' : '';
  els.bar.setAttribute('aria-valuenow', String(shown));
  const label = progress.steps.get(step) || '';
  let suffix = '';
  if (status === 'failed') suffix = ' — failed';
  else if (done && !/done|finished|complete/i.test(label)) suffix = ' — done';
  els.caption.textContent = of > 0 ? `Step ${Math.min(step, of)} of ${of}${label ? `: ${label}` : ''}${suffix}` : label || 'Working…';
  els.steps.replaceChildren();
  const count = Math.max(of, ...progress.steps.keys(), 0);
  for (let i = 1; i <= count; i++) {
    const li = document.createElement('li');
    li.textContent = progress.steps.get(i) || `Step ${i}`;
    if (i < step || (i === step && done)) li.className = 'done';
    else if (i === step) li.className = status === 'failed' ? 'failed' : 'active';
    els.steps.append(li);
  }
}

function onProgress(ev) {
  const d = ev.data && typeof ev.data === 'object' ? ev.data : { step: Number(ev.data) || 0 };
  const step = Number(d.step) || 0;
  const of = Number(d.of ?? d.total) || progress.of;
  if (step < progress.step && step <= 1) progress.steps = new Map(); // a new task started
  progress.step = step;
  progress.of = of;
  progress.status = typeof d.status === 'string' ? d.status : '';
  const label = d.label ?? d.title ?? d.message;
  if (step && typeof label === 'string') progress.steps.set(step, label);
  renderProgress();
}

function onEvent(ev) {
  noteSeq(ev.seq);
  const streamed = ev.kind.endsWith('.delta') && ev.data && typeof ev.data === 'object' && typeof ev.data.stream === 'string';
  if (ev.kind === 'chat.message') onChatMessage(ev);
  else if (streamed) return; // assembled by the client: onStream
  else if (ev.kind === 'chat.delta') onChatDelta(ev);
  else if (ev.kind === 'progress' || ev.kind.startsWith('progress.')) onProgress(ev);
  else logLine(`${ev.from?.sub}: ${ev.kind}${ev.seq ? ` #${ev.seq}` : ''}`, JSON.stringify(ev.data).slice(0, 160));
}

function clearView() {
  for (const el of [...els.transcript.children]) if (el !== els.empty && el !== els.loadOlder) el.remove();
  oldestSeq = null;
  reachedStart = false;
  setLoadOlder(false);
  els.empty.hidden = false;
  els.empty.textContent = 'Loading the session…';
  bubbles = new Map();
  streams = new Map();
  progress = { steps: new Map(), step: 0, of: 0, status: '' };
  els.fill.style.width = '0';
  els.caption.textContent = 'No progress reported yet.';
  els.steps.replaceChildren();
}

async function start(url, token, sessionId) {
  stop();
  clearView();
  session = sessionId;
  els.connect.hidden = true;
  els.disconnect.hidden = false;
  const c = connect({ url, getToken: () => token });
  client = c;
  c.on('state', ({ state }) => { if (client === c) setStatus(state); });
  c.on('open', (w) => logLine(`connected as ${w.sub} (${w.role})`));
  c.on('close', (info) => {
    if (client !== c) return;
    logLine(`connection closed ${info.code || ''} ${info.reason || ''}`.trim() + (info.willReconnect ? `; retrying in ${info.delayMs} ms` : ''));
  });
  c.on('reset', () => { clearView(); notice('The transcript was reset by the gateway; reloading it.', 'warn'); });
  c.on('stream', (s) => { if (client === c && s.session === session) onStream(s); });
  c.on('refresh_failed', ({ attempt, willRetry }) => logLine(`token refresh refused (attempt ${attempt})${willRetry ? '; retrying' : ''}`));
  c.on('left', ({ session: s, reason }) => {
    if (client !== c || s !== session) return;
    if (reason === 'forbidden') notice('The token no longer allows this session.', 'bad');
    else logLine(`the gateway ended the subscription (${reason}); re-joining`);
  });
  c.on('trimmed', ({ first }) => notice(`Older events were removed by retention; showing from #${first}.`, 'warn'));
  c.on('rate_limited', () => notice('Slow down: the gateway rate-limited a message.', 'warn'));
  c.on('error', (e) => {
    logLine(`error ${e.code}: ${e.message}`);
    if (client === c && c.state === State.CLOSED) {
      notice(e.code === 'unauthorized' ? 'The token was refused.' : `Stopped: ${e.message}`, 'bad');
      setStatus(State.CLOSED, e.code);
      els.connect.hidden = false;
      els.disconnect.hidden = true;
    }
  });
  setStatus(State.CONNECTING);
  try {
    // The last page of the transcript first (older pages on demand), then live events; who is here.
    subscription = await c.join(sessionId, { last: PAGE, presence: true, onEvent, onPresence: ({ presence }) => renderPresence(presence) });
    logLine(`joined ${sessionId} at #${subscription.head}`);
    renderPresence(subscription.presence);
    if (!els.empty.hidden) {
      els.empty.textContent = subscription.head === 0 ? `Session ${sessionId} has no events yet.` : 'No chat messages yet.';
    }
    els.message.focus();
  } catch (e) {
    if (client === c) notice(`Could not join ${sessionId}: ${e.message}`, 'bad');
  }
}

function stop() {
  if (!client) return;
  const c = client;
  client = null;
  subscription = null;
  c.close();
  setStatus(State.CLOSED);
  renderPresence([]);
  els.connect.hidden = false;
  els.disconnect.hidden = true;
}

async function send() {
  const text = els.message.value.trim();
  if (!text || !client) return;
  els.message.value = '';
  const c = client;
  const id = crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
  const role = c.welcome?.role || 'user';
  const sub = c.welcome?.sub || 'me';
  const b = makeBubble(role, sub, time());
  b.root.classList.add('pending');
  b.body.textContent = text;
  bubbles.set(`${sub}|${id}`, b);
  scrollDown();
  try {
    const ack = await c.publish(session, 'chat.message', { text }, { id });
    b.root.classList.remove('pending');
    b.meta.textContent = `${sub} · ${time()} · #${ack.seq}`;
  } catch (e) {
    b.root.classList.remove('pending');
    b.root.classList.add('failed');
    b.meta.textContent = `${sub} · not sent: ${e.code || e.message}`;
  }
}

els.form.addEventListener('submit', (e) => {
  e.preventDefault();
  start(els.url.value.trim(), els.token.value.trim(), els.session.value.trim());
});
els.disconnect.addEventListener('click', () => { stop(); notice('Disconnected.'); });
els.loadOlder.addEventListener('click', () => { loadOlder(); });
els.composer.addEventListener('submit', (e) => { e.preventDefault(); send(); });
els.message.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
});
setStatus('idle');
els.statusText.textContent = 'not connected';
