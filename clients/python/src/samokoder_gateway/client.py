"""The asyncio agent client for the Samokoder realtime gateway (protocol v1 and v1.1).

One :class:`GatewayClient` holds one WebSocket connection and keeps it alive: it reconnects with
jittered, bounded exponential backoff (asking the token provider again each time), re-joins every joined
session with ``since`` = the last seq it delivered, and re-sends unacked publishes with the same id (the
gateway dedupes them), so callers see each durable event once, in order, and each publish stored once.
Protocol v1.1: the token is refreshed in-band before it expires, sessions can be joined with presence or with
``last``, history is paged with :meth:`GatewayClient.history`, and :meth:`GatewayClient.stream` streams an
answer token by token (batched deltas, then one final message).
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import json
import logging
import random
import ssl as ssl_module
import time
import uuid
from types import TracebackType
from typing import Any, AsyncIterator, Awaitable, Callable, Collection, Deque, Dict, List, Optional, Set, Tuple, Type, Union

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from .errors import (
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ForbiddenError,
    GatewayConnectionError,
    GatewayError,
    TooLargeError,
    UnavailableError,
    error_from_frame,
)
from .models import Ack, ConnectionState, Event, History, Presence, PresenceChange, Welcome

__all__ = ["GatewayClient", "MessageStream", "Subscription", "TokenProvider"]

log = logging.getLogger("samokoder_gateway")

#: A token, or a function (sync or async) returning one; called before every (re)connect.
TokenProvider = Union[str, Callable[[], Union[str, Awaitable[str]]]]

CLOSE_AUTH = 4001
CLOSE_POLICY = 4008
_MAX_PRESENCE = 10000  # presence entries kept per session
_MAX_DELTAS_IN_FLIGHT = 256  # unacked deltas per stream before append() waits
_END = object()  # end-of-subscription marker


class _Pending:
    __slots__ = ("id", "session", "text", "ephemeral", "future", "sent_on", "retries")

    def __init__(self, id: str, session: str, text: str, ephemeral: bool, future: "asyncio.Future[Ack]") -> None:
        self.id = id
        self.session = session
        self.text = text
        self.ephemeral = ephemeral
        self.future = future
        self.sent_on = 0  # connection generation it was last sent on (0: not sent on the current one)
        self.retries = 0


class _SessionState:
    def __init__(self, session: str) -> None:
        self.session = session
        self.max_seq: Optional[int] = None  # highest seq seen on the wire (or the head at the last `joined`)
        self.epoch: Optional[str] = None
        self.head: Optional[int] = None
        self.joined = False
        self.subs: Set["Subscription"] = set()
        self.waiters: List["asyncio.Future[None]"] = []
        self.gap_rejoin = False
        self.presence_on = False  # the last join sent asked for presence
        self.presence: Optional[Dict[Tuple[str, str], Presence]] = None
        self.reset_rejoins = 0


class _HistoryRequest:
    __slots__ = ("id", "session", "text", "future", "sent_on", "retries")

    def __init__(self, id: str, session: str, text: str, future: "asyncio.Future[History]") -> None:
        self.id = id
        self.session = session
        self.text = text
        self.future = future
        self.sent_on = 0
        self.retries = 0


class Subscription:
    """Events of one joined session, as an async iterator. Close it (or leave the ``async for``) to stop.

    Durable events arrive exactly once, in seq order, across reconnects; ephemeral ones as they come.
    Events are buffered without bound until read.
    """

    def __init__(
        self,
        client: "GatewayClient",
        state: _SessionState,
        kinds: Optional[Collection[str]],
        since: Optional[int],
        *,
        last: Optional[int] = None,
        presence: bool = False,
        on_presence: Optional[Callable[[PresenceChange], None]] = None,
    ) -> None:
        self._client = client
        self._state = state
        self._last_seq: Optional[int] = since  # None until known (a join without since takes `joined.head`)
        self._last_n = last  # join(last=N): the position becomes head - N at `joined`
        self._presence = presence
        self._on_presence = on_presence
        self._kinds = set(kinds) if kinds is not None else None
        self._queue: "asyncio.Queue[Any]" = asyncio.Queue()
        self._closed = False

    @property
    def session(self) -> str:
        return self._state.session

    @property
    def last_seq(self) -> int:
        """The last durable seq this subscription delivered (its position in the transcript)."""
        return self._last_seq or 0

    @property
    def head(self) -> Optional[int]:
        """The session head reported by the latest ``joined``."""
        return self._state.head

    @property
    def epoch(self) -> Optional[str]:
        return self._state.epoch

    @property
    def presence(self) -> Optional[List[Presence]]:
        """The session's presence list (sorted by sub, role) if joined with ``presence=True``, else None."""
        if not self._presence:
            return None
        return self._client._presence_list(self._state)

    def _deliver(self, item: Any) -> None:
        if self._closed:
            return
        if isinstance(item, Event) and item.seq is not None:
            if self._last_seq is not None and item.seq <= self._last_seq:
                return  # already delivered (replay overlap after a reconnect or a re-join)
            self._last_seq = item.seq
        if isinstance(item, Event) and self._kinds is not None and item.kind not in self._kinds:
            return
        self._queue.put_nowait(item)

    def _end(self, error: Optional[BaseException] = None) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put_nowait(error if error is not None else _END)

    def close(self) -> None:
        """Stops this subscription; the client leaves the session when its last subscription closes."""
        if self._closed:
            return
        self._end()
        self._client._unsubscribe(self)

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> Event:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._queue.put_nowait(item)
            raise item
        assert isinstance(item, Event)
        return item

    async def __aenter__(self) -> "Subscription":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class GatewayClient:
    """An agent's connection to the gateway.

    Use it as an async context manager::

        async with GatewayClient("wss://gw.example/v1/ws", token) as gw:
            seq = await gw.publish("proj-1", "progress", {"step": 1, "of": 3, "label": "Planning"})
            async for event in gw.events("proj-1", kinds={"chat.message"}):
                ...

    Args:
        url: the gateway endpoint (``wss://host/v1/ws``, or ``ws://`` for local development).
        token: a JWT, or a callable (sync or async) returning one; it is called before every (re)connect,
            so an expiring token can be refreshed.
        ssl: an :class:`ssl.SSLContext` for ``wss://`` (default: the system's trust store).
        backoff_initial: the first reconnect delay in seconds (before jitter); doubles per failed attempt.
        backoff_max: the cap of the reconnect delay.
        connect_timeout: how long ``__aenter__`` / :meth:`connect` wait for the first ``welcome``.
        hello_timeout: how long one attempt waits for the WebSocket handshake and ``welcome``.
        ping_interval / ping_timeout: WebSocket keepalive (a silent, dead connection is dropped and resumed).
        max_message_bytes: publishes whose frame is larger are refused locally with :class:`TooLargeError`.
        max_unavailable_retries: a durable publish refused as ``unavailable`` is re-sent this often.
        backoff_reset_after: a connection that stayed up this long (seconds) resets the backoff.
        on_state: called with each new :class:`ConnectionState`.
        id_factory: makes publisher ids (default: UUID4 strings).
        refresh: refresh the token in-band before ``exp`` (protocol v1.1) through ``token`` (a callable).
        refresh_lead / refresh_ratio / refresh_min_delay: refresh ``refresh_lead`` seconds before ``exp``, or at
            ``refresh_ratio`` of the remaining lifetime for tokens with less than twice that left; never sooner
            than ``refresh_min_delay`` seconds.
        max_refresh_retries: retries of a refused (or unanswered) refresh; then the gateway closes 4001 at ``exp``
            and the client reconnects with a fresh token as in v1.
        refresh_timeout: a refresh without answer this long counts as failed.
        on_refresh_failed: called with ``(error, attempt, will_retry)`` for each failed refresh.
        max_reset_rejoins: re-joins after a ``left`` ``reset`` without progress before the subscriptions end.
        max_pending_history: :meth:`history` requests waiting for an answer at most.
    """

    def __init__(
        self,
        url: str,
        token: TokenProvider,
        *,
        ssl: Optional[ssl_module.SSLContext] = None,
        backoff_initial: float = 0.25,
        backoff_max: float = 10.0,
        connect_timeout: float = 30.0,
        hello_timeout: float = 10.0,
        ping_interval: Optional[float] = 20.0,
        ping_timeout: Optional[float] = 20.0,
        max_message_bytes: int = 1 << 20,
        max_unavailable_retries: int = 8,
        backoff_reset_after: float = 30.0,
        on_state: Optional[Callable[[ConnectionState], None]] = None,
        id_factory: Callable[[], str] = lambda: str(uuid.uuid4()),
        refresh: bool = True,
        refresh_lead: float = 60.0,
        refresh_ratio: float = 0.8,
        refresh_min_delay: float = 0.5,
        max_refresh_retries: int = 3,
        refresh_timeout: float = 10.0,
        on_refresh_failed: Optional[Callable[[GatewayError, int, bool], None]] = None,
        max_reset_rejoins: int = 8,
        max_pending_history: int = 64,
    ) -> None:
        self.url = url
        self._token = token
        self._ssl = ssl
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._connect_timeout = connect_timeout
        self._hello_timeout = hello_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._max_message_bytes = max_message_bytes
        self._max_unavailable_retries = max_unavailable_retries
        self._backoff_reset_after = backoff_reset_after
        self._on_state = on_state
        self._new_id = id_factory
        self._refresh = refresh
        self._refresh_lead = refresh_lead
        self._refresh_ratio = refresh_ratio
        self._refresh_min_delay = refresh_min_delay
        self._max_refresh_retries = max_refresh_retries
        self._refresh_timeout = refresh_timeout
        self._on_refresh_failed = on_refresh_failed
        self._max_reset_rejoins = max_reset_rejoins
        self._max_pending_history = max_pending_history
        self._refresh_task: Optional["asyncio.Task[None]"] = None
        self._refresh_fut: Optional["asyncio.Future[Optional[int]]"] = None
        self._history: Dict[str, _HistoryRequest] = {}
        #: Expiry (Unix seconds) of the token in force, from ``welcome`` / ``refreshed`` (None if unknown).
        self.exp: Optional[int] = None
        #: Accepted in-band token refreshes.
        self.refresh_count = 0

        self._state = ConnectionState.CONNECTING
        self._ever_open = False
        self._closing = False
        self._fatal: Optional[GatewayError] = None
        self._ws: Optional[ClientConnection] = None
        self._outbox: Optional["asyncio.Queue[Optional[str]]"] = None
        self._welcomed = False
        self._generation = 0
        self._supervisor: Optional["asyncio.Task[None]"] = None
        self._first_welcome: Optional["asyncio.Future[Welcome]"] = None
        self._sessions: Dict[str, _SessionState] = {}
        self._pending: "collections.OrderedDict[str, _Pending]" = collections.OrderedDict()
        self._inflight: Deque[tuple[str, str]] = collections.deque()  # (join|leave, session) awaiting answer
        self._timers: Set[asyncio.TimerHandle] = set()
        self.welcome: Optional[Welcome] = None
        #: Number of connections established (welcomed) so far.
        self.connections = 0

    # ---- lifecycle ----------------------------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def pending_count(self) -> int:
        """Publishes sent or queued and not yet acked."""
        return len(self._pending)

    async def __aenter__(self) -> "GatewayClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> Welcome:
        """Starts the connection (if not started) and waits for the first ``welcome``.

        Raises :class:`AuthenticationError` if the token is refused, :class:`GatewayConnectionError` if no
        connection was made within ``connect_timeout``.
        """
        if self._fatal:
            raise self._fatal
        if self._closing:
            raise ClientClosedError("client closed")
        loop = asyncio.get_running_loop()
        if self._supervisor is None:
            self._first_welcome = loop.create_future()
            self._supervisor = loop.create_task(self._run(), name="samokoder-gateway")
        if self.welcome is not None and self._first_welcome is not None and self._first_welcome.done():
            return self.welcome
        assert self._first_welcome is not None
        try:
            return await asyncio.wait_for(asyncio.shield(self._first_welcome), self._connect_timeout)
        except asyncio.TimeoutError:
            err = GatewayConnectionError(f"no connection to {self.url} within {self._connect_timeout} s")
            await self.close()
            raise err from None

    async def close(self) -> None:
        """Closes for good: no reconnect; pending publishes raise :class:`ClientClosedError`; subscriptions end."""
        if self._closing:
            return
        self._closing = True
        self._fail_all(ClientClosedError("client closed"), end_subs_cleanly=True)
        task = self._supervisor
        ws = self._ws
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(1000, "client closed"), 5)
            except Exception:  # noqa: BLE001 - best effort on shutdown
                pass
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        self._set_state(ConnectionState.CLOSED)

    # ---- subscriptions ------------------------------------------------------------------------------------

    async def join(
        self,
        session: str,
        *,
        since: Optional[int] = None,
        kinds: Optional[Collection[str]] = None,
        last: Optional[int] = None,
        presence: bool = False,
        on_presence: Optional[Callable[[PresenceChange], None]] = None,
    ) -> Subscription:
        """Joins ``session`` and returns a :class:`Subscription` once the gateway answered ``joined``.

        With ``since``, every durable event with seq > since is replayed first; without it, only new events.
        ``last=N`` (1-10000, not with ``since``; protocol v1.1) replays only the last N durable events.
        ``kinds`` filters what this subscription yields. Joining a session already joined adds a subscription
        that sees events from now on (``since`` is then ignored unless older than the session's position).
        ``presence=True`` (v1.1) keeps ``sub.presence`` current and calls ``on_presence`` with each
        :class:`PresenceChange` (``sync`` after every ``joined``, then ``join``/``leave``).
        Raises :class:`ForbiddenError` if the token may not join it.
        """
        self._check_usable()
        if last is not None:
            if not isinstance(last, int) or isinstance(last, bool) or not 1 <= last <= 10000:
                raise BadRequestError("join: last must be an integer from 1 to 10000", session=session)
            if since is not None:
                raise BadRequestError("join: last and since cannot be used together", session=session)
        st = self._sessions.get(session)
        is_new = st is None
        if st is None:
            st = _SessionState(session)
            self._sessions[session] = st
        if not is_new and last is not None and st.max_seq is not None:
            since, last = max(0, st.max_seq - last), None  # joined already: a replay from head - N
        sub = Subscription(self, st, kinds, since, last=last, presence=presence, on_presence=on_presence)
        need_presence_join = presence and not st.presence_on
        st.subs.add(sub)
        if not is_new and st.joined and since is None and last is None and not need_presence_join:
            sub._last_seq = st.max_seq  # from now on
            return sub
        if not is_new and since is None and last is None and st.max_seq is not None:
            sub._last_seq = st.max_seq  # from now on
        fut: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
        st.waiters.append(fut)
        # A new session, an older position than the session's subscriptions have, or presence to turn on:
        # (re-)join with since.
        if self._can_send() and (
            is_new or need_presence_join or (since is not None and (st.max_seq is None or since < st.max_seq))
        ):
            self._send_join(st)
        elif self._can_send() and st.joined:
            fut.set_result(None)
        try:
            await fut
        except BaseException:
            sub._end()
            st.subs.discard(sub)
            raise
        return sub

    async def events(
        self,
        session: str,
        *,
        since: Optional[int] = None,
        kinds: Optional[Collection[str]] = None,
        last: Optional[int] = None,
    ) -> AsyncIterator[Event]:
        """``async for event in gw.events(session, since=...)``: joins and yields events until the loop stops.

        Resumes by itself after reconnects: durable events are yielded exactly once, in order.
        Pass ``kinds`` (e.g. ``{"chat.message"}``) to receive only those kinds.
        """
        sub = await self.join(session, since=since, kinds=kinds, last=last)
        try:
            async for event in sub:
                yield event
        finally:
            sub.close()

    def leave(self, session: str) -> None:
        """Closes every subscription of ``session`` (the client then sends ``leave``)."""
        st = self._sessions.get(session)
        if st is not None:
            for sub in list(st.subs):
                sub.close()

    # ---- publishing ---------------------------------------------------------------------------------------

    async def publish_ack(
        self,
        session: str,
        kind: str,
        data: Any,
        *,
        id: Optional[str] = None,
        ephemeral: bool = False,
        timeout: Optional[float] = None,
    ) -> Ack:
        """Publishes and returns the gateway's :class:`Ack`.

        A durable publish is kept until acked and re-sent with the same ``id`` after every reconnect (the
        gateway dedupes, so it is stored once; a retry's ack has ``duplicate=True`` and the original seq).
        Ephemeral publishes (``ephemeral=True`` or a kind ending in ``.delta``) are sent once; if the
        connection drops first, the ack has ``dropped=True``.
        With ``timeout`` (seconds), raises :class:`asyncio.TimeoutError` and stops retrying after it; the
        event may or may not have been stored then (publish again with the same ``id`` to find out).
        Raises :class:`ForbiddenError`, :class:`RateLimitedError`, :class:`BadRequestError`,
        :class:`TooLargeError`, :class:`UnavailableError` (after retries), :class:`AuthenticationError`.
        """
        entry = self._enqueue_publish(session, kind, data, id=id, ephemeral=ephemeral)
        pid, fut = entry.id, entry.future
        try:
            if timeout is None:
                return await asyncio.shield(fut)
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except (asyncio.CancelledError, asyncio.TimeoutError):
            if self._pending.get(pid) is entry:
                del self._pending[pid]
            raise

    def _enqueue_publish(self, session: str, kind: str, data: Any, *, id: Optional[str], ephemeral: bool) -> _Pending:
        """Queues (and sends, if connected) a publish at once, in call order; its future gets the ack."""
        self._check_usable()
        pid = id if id is not None else self._new_id()
        if pid in self._pending:
            raise BadRequestError(f"publish id {pid!r} is already pending", ref=pid, session=session)
        is_ephemeral = ephemeral or kind.endswith(".delta")
        frame: Dict[str, Any] = {"type": "publish", "session": session, "id": pid, "kind": kind, "data": data}
        if ephemeral:
            frame["ephemeral"] = True
        text = json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
        size = len(text.encode("utf-8"))
        if size > self._max_message_bytes:
            raise TooLargeError(f"publish of {size} bytes is over the limit", ref=pid, session=session)
        fut: "asyncio.Future[Ack]" = asyncio.get_running_loop().create_future()
        entry = _Pending(pid, session, text, is_ephemeral, fut)
        self._pending[pid] = entry
        if self._can_send():
            self._send_pending(entry)
        return entry

    async def publish(
        self,
        session: str,
        kind: str,
        data: Any,
        *,
        id: Optional[str] = None,
        ephemeral: bool = False,
        timeout: Optional[float] = None,
    ) -> Optional[int]:
        """Publishes and returns the durable seq (None for ephemeral events). See :meth:`publish_ack`."""
        ack = await self.publish_ack(session, kind, data, id=id, ephemeral=ephemeral, timeout=timeout)
        return ack.seq

    async def send_message(self, session: str, text: str, **extra: Any) -> int:
        """Publishes ``chat.message`` with data ``{"text": text, **extra}``; returns its seq."""
        seq = await self.publish(session, "chat.message", {**extra, "text": text})
        assert seq is not None
        return seq

    async def stream_delta(self, session: str, text: str, *, stream: Optional[str] = None, **extra: Any) -> None:
        """Publishes an ephemeral ``chat.delta`` chunk ``{"text": text, "stream": stream, **extra}``.

        Deltas are not stored; the final text should follow as a ``chat.message`` with the same ``stream``
        (the session page replaces the streaming bubble with it). Best effort: a delta lost to a reconnect
        is not re-sent.
        """
        data: Dict[str, Any] = {**extra, "text": text}
        if stream is not None:
            data["stream"] = stream
        await self.publish_ack(session, "chat.delta", data)

    def stream(
        self,
        session: str,
        *,
        stream: Optional[str] = None,
        reply_to: Optional[int] = None,
        kind: str = "chat.delta",
        final_kind: str = "chat.message",
        interval: float = 0.03,
        max_chars: int = 64,
        final_timeout: Optional[float] = 30.0,
        **extra: Any,
    ) -> "MessageStream":
        """A token stream (protocol v1.1 §3) as an async context manager::

            async with gw.stream(session, reply_to=event.seq) as s:
                async for token in llm(...):
                    await s.append(token)

        Tokens are batched into ephemeral ``kind`` deltas ``{"stream", "text"}``: at most one per ``interval``
        seconds, or sooner once ``max_chars`` characters are waiting. On exit the final ``final_kind`` message
        ``{**extra, "stream", "text": <whole text>, "reply_to"?}`` is published (durable, id
        ``<stream>:final``, so a retry is deduped); if the block raised, the final message carries
        ``"status": "cancelled"`` (``asyncio.CancelledError``) or ``"failed"`` (any other exception) and the
        exception propagates. ``stream`` defaults to a random id (1-100 characters of ``A-Z a-z 0-9 . _ : -``).
        """
        sid = stream if stream is not None else f"s-{uuid.uuid4().hex}"
        if not (1 <= len(sid) <= 100) or any(not (c.isascii() and (c.isalnum() or c in "._:-")) for c in sid):
            raise BadRequestError("stream id must be 1-100 characters of A-Z a-z 0-9 . _ : -", session=session)
        if not kind.endswith(".delta"):
            raise BadRequestError("a stream's delta kind must end in .delta", session=session)
        if interval < 0 or max_chars < 1:
            raise ValueError("interval must be >= 0 and max_chars >= 1")
        return MessageStream(self, session, sid, kind, final_kind, interval, max_chars, reply_to, final_timeout, extra)

    async def history(
        self, session: str, *, before: Optional[int] = None, limit: Optional[int] = None, timeout: Optional[float] = None
    ) -> History:
        """A page of the session's durable history (protocol v1.1; no subscription is made).

        Returns up to ``limit`` (1-500, gateway default 50) events with seq < ``before`` (default: up to the
        head), the newest ones, oldest first, with ``first`` and ``head``. Page back with ``before`` = the
        smallest seq you hold until it equals ``first``. Waits for a connection if there is none; re-sent after
        a reconnect; ``unavailable`` is retried up to ``max_unavailable_retries`` times.
        Raises :class:`ForbiddenError`, :class:`BadRequestError`, :class:`UnavailableError`,
        ``asyncio.TimeoutError`` (with ``timeout``).
        """
        self._check_usable()
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 500):
            raise BadRequestError("history: limit must be an integer from 1 to 500", session=session)
        if before is not None and (not isinstance(before, int) or isinstance(before, bool) or before < 0):
            raise BadRequestError("history: before must be a non-negative integer", session=session)
        if len(self._history) >= self._max_pending_history:
            raise BadRequestError(f"history: more than {self._max_pending_history} requests pending", session=session)
        hid = f"h-{self._new_id()}"
        frame: Dict[str, Any] = {"type": "history", "session": session, "id": hid}
        if before is not None:
            frame["before"] = before
        if limit is not None:
            frame["limit"] = limit
        fut: "asyncio.Future[History]" = asyncio.get_running_loop().create_future()
        req = _HistoryRequest(hid, session, json.dumps(frame), fut)
        self._history[hid] = req
        if self._can_send():
            self._send_history(req)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        finally:
            if self._history.get(hid) is req:
                del self._history[hid]

    async def progress(
        self,
        session: str,
        step: int,
        of: int,
        label: Optional[str] = None,
        *,
        status: Optional[str] = None,
        ephemeral: bool = False,
        **extra: Any,
    ) -> Optional[int]:
        """Publishes ``progress`` ``{"step", "of", "label", "status"}`` (status: running, done or failed)."""
        data: Dict[str, Any] = {**extra, "step": step, "of": of}
        if label is not None:
            data["label"] = label
        if status is not None:
            data["status"] = status
        return await self.publish(session, "progress", data, ephemeral=ephemeral)

    # ---- internals: connection ----------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._closing:
            raise ClientClosedError("client closed")

    def _can_send(self) -> bool:
        return self._welcomed and self._outbox is not None

    def _set_state(self, state: ConnectionState) -> None:
        if self._state == state:
            return
        self._state = state
        if self._on_state is not None:
            try:
                self._on_state(state)
            except Exception:  # noqa: BLE001 - a listener's bug must not break the connection
                log.exception("on_state listener failed")

    async def _get_token(self) -> str:
        t = self._token
        if isinstance(t, str):
            return t
        value = t()
        if inspect.isawaitable(value):
            value = await value
        return str(value)

    def _backoff(self, attempt: int, floor: float = 0.0) -> float:
        base: float = min(self._backoff_max, self._backoff_initial * float(2 ** min(attempt, 30)))
        return max(floor, base / 2 + random.random() * base / 2)

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            self._set_state(ConnectionState.RESUMING if self._ever_open else ConnectionState.CONNECTING)
            close_code: Optional[int] = None
            close_reason = ""
            welcomed = False
            welcomed_at = 0.0
            try:
                token = await self._get_token()
                ws = await asyncio.wait_for(
                    ws_connect(
                        self.url,
                        ssl=self._ssl if self.url.startswith("wss:") else None,
                        open_timeout=self._hello_timeout,
                        ping_interval=self._ping_interval,
                        ping_timeout=self._ping_timeout,
                        close_timeout=2,
                        max_size=None,
                        compression=None,
                    ),
                    self._hello_timeout + 1,
                )
            except asyncio.CancelledError:
                raise
            except (OSError, InvalidHandshake, asyncio.TimeoutError, ValueError, InvalidURI) as e:
                log.info("gateway connect failed: %s", e)
                if isinstance(e, InvalidURI):
                    self._fatal_stop(GatewayConnectionError(f"invalid gateway url {self.url}: {e}"))
                    return
                attempt += 1
                await asyncio.sleep(self._backoff(attempt - 1))
                continue
            except Exception as e:  # noqa: BLE001 - a token provider's failure: retry later
                log.warning("getting a token or connecting failed: %r", e)
                attempt += 1
                await asyncio.sleep(self._backoff(attempt - 1))
                continue

            self._ws = ws
            self._generation += 1
            gen = self._generation
            writer: Optional["asyncio.Task[None]"] = None
            try:
                await ws.send(json.dumps({"type": "hello", "token": token}))
                first = json.loads(await asyncio.wait_for(ws.recv(), self._hello_timeout))
                if not isinstance(first, dict) or first.get("type") != "welcome":
                    raise GatewayError(f"expected welcome, got {first!r}", code="protocol")
                welcomed = True
                welcomed_at = asyncio.get_running_loop().time()
                outbox: "asyncio.Queue[Optional[str]]" = asyncio.Queue()
                self._outbox = outbox
                writer = asyncio.get_running_loop().create_task(self._write(ws, outbox))
                self._on_welcome(first)
                async for message in ws:
                    if isinstance(message, bytes):
                        continue
                    try:
                        frame = json.loads(message)
                    except ValueError:
                        log.warning("gateway sent invalid JSON")
                        continue
                    if isinstance(frame, dict):
                        self._dispatch(frame)
                close_code, close_reason = _close_info(ws)
            except ConnectionClosed as e:
                close_code, close_reason = (e.rcvd.code, e.rcvd.reason) if e.rcvd else (1006, "connection lost")
            except asyncio.TimeoutError:
                close_code, close_reason = 1006, "no welcome in time"
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001
                close_code, close_reason = 1006, f"{type(e).__name__}: {e}"
            finally:
                if writer is not None:
                    writer.cancel()
                if close_code == 1009:
                    self._give_up_largest(gen)
                self._after_disconnect(gen)
                if self._closing or close_code is not None:
                    try:
                        await asyncio.wait_for(ws.close(), 2)
                    except BaseException:  # noqa: BLE001
                        pass
            if self._closing:
                return
            log.info("gateway connection closed: %s %s", close_code, close_reason)
            if close_code == CLOSE_AUTH and not welcomed:
                self._fatal_stop(AuthenticationError(f"authentication refused: {close_reason or 'close 4001'}", close_code=CLOSE_AUTH))
                return
            if welcomed and asyncio.get_running_loop().time() - welcomed_at >= self._backoff_reset_after:
                attempt = 0
            # 4008 (rate or policy): back off several seconds at least.
            floor = min(self._backoff_max, 3.0) if close_code == CLOSE_POLICY else 0.0
            self._set_state(ConnectionState.RESUMING if self._ever_open else ConnectionState.CONNECTING)
            attempt += 1
            await asyncio.sleep(self._backoff(attempt - 1, floor))

    async def _write(self, ws: ClientConnection, outbox: "asyncio.Queue[Optional[str]]") -> None:
        try:
            while True:
                text = await outbox.get()
                if text is None:
                    return
                await ws.send(text)
        except ConnectionClosed:
            return

    def _give_up_largest(self, gen: int) -> None:
        """After a 1009 close, the gateway's size limit is lower than ours: fail the largest publish sent on
        that connection (re-sending it would close every new connection too)."""
        sent = [e for e in self._pending.values() if e.sent_on == gen]
        if not sent:
            return
        largest = max(sent, key=lambda e: len(e.text))
        del self._pending[largest.id]
        if not largest.future.done():
            largest.future.set_exception(
                TooLargeError("the gateway closed the connection: message too big (1009)", ref=largest.id, session=largest.session, close_code=1009)
            )

    def _send(self, text: str) -> None:
        if self._outbox is not None:
            self._outbox.put_nowait(text)

    def _after_disconnect(self, gen: int) -> None:
        if gen != self._generation:
            return
        self._ws = None
        self._outbox = None
        self._welcomed = False
        self._inflight.clear()
        self._stop_refresh()
        for req in self._history.values():
            req.sent_on = 0
        for st in self._sessions.values():
            st.joined = False
        for entry in list(self._pending.values()):
            if entry.ephemeral and entry.sent_on:
                del self._pending[entry.id]
                if not entry.future.done():
                    entry.future.set_result(Ack(id=entry.id, session=entry.session, dropped=True))
            else:
                entry.sent_on = 0

    def _on_welcome(self, f: Dict[str, Any]) -> None:
        self._welcomed = True
        self.connections += 1
        exp = f.get("exp")
        self.exp = exp if isinstance(exp, int) and not isinstance(exp, bool) else None
        self.welcome = Welcome(conn=str(f.get("conn", "")), sub=str(f.get("sub", "")), role=str(f.get("role", "")), exp=self.exp)
        if self._first_welcome is not None and not self._first_welcome.done():
            self._first_welcome.set_result(self.welcome)
        for st in self._sessions.values():
            self._send_join(st)
        for entry in list(self._pending.values()):
            self._send_pending(entry)
        for req in list(self._history.values()):
            self._send_history(req)
        if self._refresh and self.exp is not None and not isinstance(self._token, str):
            self._refresh_task = asyncio.get_running_loop().create_task(self._refresh_loop(self._generation), name="samokoder-gateway-refresh")
        self._maybe_open()

    # ---- internals: token refresh (v1.1) ------------------------------------------------------------------

    def _stop_refresh(self) -> None:
        task, self._refresh_task = self._refresh_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        fut, self._refresh_fut = self._refresh_fut, None
        if fut is not None and not fut.done():
            fut.cancel()

    def _refresh_delay(self) -> float:
        assert self.exp is not None
        remaining = self.exp - time.time()
        delay = remaining - self._refresh_lead if remaining > 2 * self._refresh_lead else remaining * self._refresh_ratio
        return min(max(self._refresh_min_delay, delay), 30 * 86400.0)

    async def _refresh_loop(self, gen: int) -> None:
        """Refreshes the token before ``exp`` on this connection; a refused refresh is retried a bounded number of
        times, then left to the gateway's 4001 at ``exp`` (the reconnect asks the token provider again)."""
        failures = 0
        delay = self._refresh_delay()
        while gen == self._generation and self.exp is not None:
            await asyncio.sleep(delay)
            if gen != self._generation or not self._can_send():
                return
            error: GatewayError
            try:
                token = await self._get_token()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the provider's failure counts as a failed refresh
                error = GatewayError(f"token provider failed: {type(e).__name__}", code="token")
            else:
                if gen != self._generation or not self._can_send():
                    return
                fut: "asyncio.Future[Optional[int]]" = asyncio.get_running_loop().create_future()
                self._refresh_fut = fut
                self._send(json.dumps({"type": "refresh", "token": token}))
                try:
                    exp = await asyncio.wait_for(fut, self._refresh_timeout)
                except asyncio.TimeoutError:
                    error = GatewayError("no answer to refresh in time", code="timeout")
                except GatewayError as e:
                    error = e
                else:
                    self.refresh_count += 1
                    if exp is not None:
                        self.exp = exp
                        if self.welcome is not None:
                            self.welcome = Welcome(self.welcome.conn, self.welcome.sub, self.welcome.role, exp)
                    log.debug("token refreshed; expires at %s", self.exp)
                    failures = 0
                    delay = self._refresh_delay()
                    continue
                finally:
                    if self._refresh_fut is fut:
                        self._refresh_fut = None
            failures += 1
            will_retry = failures <= self._max_refresh_retries
            log.warning(
                "token refresh failed (attempt %d, %s): %s", failures, "retrying" if will_retry else "giving up", error.message
            )
            if self._on_refresh_failed is not None:
                try:
                    self._on_refresh_failed(error, failures, will_retry)
                except Exception:  # noqa: BLE001
                    log.exception("on_refresh_failed listener failed")
            if not will_retry:
                return  # the old token stays in force until exp; then 4001 → reconnect with a fresh token
            delay = self._backoff(failures, self._refresh_min_delay)
            remaining = self.exp - time.time()
            if remaining > 0:
                delay = min(delay, max(self._refresh_min_delay / 2, remaining / 4))

    def _maybe_open(self) -> None:
        if not self._welcomed:
            return
        if any(not st.joined and st.subs for st in self._sessions.values()):
            return
        self._ever_open = True
        self._set_state(ConnectionState.OPEN)

    @staticmethod
    def _resume_since(st: _SessionState) -> Optional[int]:
        """Where to resume: the oldest position among the subscriptions (each drops what it has seen)."""
        positions = [sub._last_seq for sub in st.subs if sub._last_seq is not None]
        return min(positions) if positions else st.max_seq

    def _send_join(self, st: _SessionState) -> None:
        frame: Dict[str, Any] = {"type": "join", "session": st.session}
        since = self._resume_since(st)
        if since is not None:
            frame["since"] = since
            if st.epoch:
                frame["epoch"] = st.epoch
        else:
            lasts = [sub._last_n for sub in st.subs if sub._last_seq is None and sub._last_n is not None]
            if lasts:
                frame["last"] = max(lasts)
        st.presence_on = any(sub._presence for sub in st.subs)
        if st.presence_on:
            frame["presence"] = True
        self._inflight.append(("join", st.session))
        self._send(json.dumps(frame))

    def _send_pending(self, entry: _Pending) -> None:
        entry.sent_on = self._generation
        self._send(entry.text)

    def _send_history(self, req: _HistoryRequest) -> None:
        req.sent_on = self._generation
        self._send(req.text)

    def _fatal_stop(self, error: GatewayError) -> None:
        log.error("gateway client stopped: %s", error)
        self._fatal = error
        self._closing = True
        if self._first_welcome is not None and not self._first_welcome.done():
            self._first_welcome.set_exception(error)
            self._first_welcome.exception()  # mark retrieved: connect() may not be waiting
        self._fail_all(error, end_subs_cleanly=False)
        self._set_state(ConnectionState.CLOSED)

    def _fail_all(self, error: GatewayError, *, end_subs_cleanly: bool) -> None:
        for entry in self._pending.values():
            if not entry.future.done():
                entry.future.set_exception(error)
                entry.future.exception()
        self._pending.clear()
        for req in list(self._history.values()):
            if not req.future.done():
                req.future.set_exception(error)
                req.future.exception()
        self._history.clear()
        self._stop_refresh()
        for st in self._sessions.values():
            for w in st.waiters:
                if not w.done():
                    w.set_exception(error)
                    w.exception()
            st.waiters.clear()
            for sub in list(st.subs):
                sub._end(None if end_subs_cleanly else error)
        self._sessions.clear()
        for t in self._timers:
            t.cancel()
        self._timers.clear()

    # ---- internals: frames --------------------------------------------------------------------------------

    def _dispatch(self, f: Dict[str, Any]) -> None:
        kind = f.get("type")
        if kind == "event":
            self._on_event(f)
        elif kind == "ack":
            self._on_ack(f)
        elif kind == "joined":
            self._on_joined(f)
        elif kind == "left":
            if f.get("reason"):
                self._on_gateway_left(f)
            else:
                self._pop_inflight("leave", f.get("session"))
        elif kind == "error":
            self._on_error(f)
        elif kind == "refreshed":
            fut = self._refresh_fut
            exp = f.get("exp")
            if fut is not None and not fut.done():
                fut.set_result(exp if isinstance(exp, int) else None)
        elif kind == "presence":
            self._on_presence(f)
        elif kind == "history":
            self._on_history(f)

    # ---- internals: v1.1 frames ---------------------------------------------------------------------------

    def _on_gateway_left(self, f: Dict[str, Any]) -> None:
        """``left`` with a reason: the gateway ended the subscription (reset: re-join; otherwise: stop)."""
        session = str(f.get("session"))
        reason = str(f.get("reason"))
        st = self._sessions.get(session)
        if st is None:
            return
        st.joined = False
        if reason == "reset":
            st.reset_rejoins += 1
            if st.reset_rejoins > self._max_reset_rejoins:
                log.error("session %s: reset %d times without progress; giving up", session, st.reset_rejoins - 1)
                self._end_session(st, UnavailableError(f"session {session}: the gateway kept resetting the subscription", session=session))
                return
            log.warning("session %s: the gateway reset the subscription; re-joining from seq %s", session, self._resume_since(st))
            gen = self._generation

            def again() -> None:
                if gen == self._generation and self._can_send() and self._sessions.get(session) is st and not st.joined:
                    self._send_join(st)

            if st.reset_rejoins == 1:
                again()
            else:
                handle = asyncio.get_running_loop().call_later(self._backoff(st.reset_rejoins - 2), again)
                self._timers.add(handle)
            return
        if reason == "forbidden":
            err: GatewayError = ForbiddenError(f"the token in force no longer allows session {session}", session=session)
        else:
            err = GatewayError(f"the gateway ended the subscription to {session}: {reason}", code=reason, session=session)
        log.warning("session %s left by the gateway: %s", session, reason)
        self._end_session(st, err)

    def _end_session(self, st: _SessionState, err: GatewayError) -> None:
        if self._sessions.get(st.session) is st:
            del self._sessions[st.session]
        for w in st.waiters:
            if not w.done():
                w.set_exception(err)
                w.exception()
        st.waiters.clear()
        for sub in list(st.subs):
            sub._end(err)
        st.subs.clear()
        st.presence = None
        self._maybe_open()

    @staticmethod
    def _presence_list(st: _SessionState) -> List[Presence]:
        if not st.presence:
            return []
        return sorted(st.presence.values(), key=lambda p: (p.sub, p.role))

    def _presence_changed(self, st: _SessionState, action: str, sub: Optional[str] = None, role: Optional[str] = None) -> None:
        change = PresenceChange(session=st.session, action=action, presence=tuple(self._presence_list(st)), sub=sub, role=role)
        for s in list(st.subs):
            if s._presence and s._on_presence is not None:
                try:
                    s._on_presence(change)
                except Exception:  # noqa: BLE001
                    log.exception("on_presence listener failed")

    def _on_presence(self, f: Dict[str, Any]) -> None:
        st = self._sessions.get(str(f.get("session")))
        sub, role, action = f.get("sub"), str(f.get("role", "")), f.get("action")
        if st is None or not isinstance(sub, str):
            return
        if st.presence is None:
            st.presence = {}
        if action == "join":
            if (sub, role) not in st.presence and len(st.presence) >= _MAX_PRESENCE:
                return
            st.presence[(sub, role)] = Presence(sub, role, 1)
        elif action == "leave":
            st.presence.pop((sub, role), None)
        else:
            return
        self._presence_changed(st, str(action), sub, role)

    def _on_history(self, f: Dict[str, Any]) -> None:
        req = self._history.pop(str(f.get("id")), None)
        if req is None or req.future.done():
            return
        events = f.get("events")
        first, head = f.get("first"), f.get("head")
        req.future.set_result(
            History(
                session=req.session,
                events=tuple(Event.from_frame(e) for e in events if isinstance(e, dict)) if isinstance(events, list) else (),
                first=first if isinstance(first, int) else 0,
                head=head if isinstance(head, int) else 0,
            )
        )

    def _pop_inflight(self, kind: str, session: Any) -> None:
        for i, (k, s) in enumerate(self._inflight):
            if k == kind and s == session:
                del self._inflight[i]
                return

    def _on_joined(self, f: Dict[str, Any]) -> None:
        session = f.get("session")
        self._pop_inflight("join", session)
        st = self._sessions.get(str(session))
        if st is None:
            return
        head = f.get("head")
        st.head = head if isinstance(head, int) else st.head
        epoch = f.get("epoch")
        if isinstance(epoch, str):
            st.epoch = epoch
        head_seq = head if isinstance(head, int) else 0
        if f.get("reset"):
            log.warning("session %s was reset by the gateway (head %s): replaying from the start", session, head)
            for sub in st.subs:
                sub._last_seq = 0
            st.max_seq = head_seq
        else:
            if f.get("trimmed"):
                first = f.get("first")
                log.warning("session %s was trimmed: events before %s are gone", session, first)
                floor = max(0, (first if isinstance(first, int) else 1) - 1)
                for sub in st.subs:
                    if sub._last_seq is not None and sub._last_seq < floor:
                        sub._last_seq = floor
            st.max_seq = max(st.max_seq or 0, head_seq)
        for sub in st.subs:
            if sub._last_seq is None:
                sub._last_seq = max(0, head_seq - sub._last_n) if sub._last_n is not None else head_seq
        plist = f.get("presence")
        if isinstance(plist, list):
            st.presence = {}
            for p in plist[:_MAX_PRESENCE]:
                if isinstance(p, dict) and isinstance(p.get("sub"), str):
                    conns = p.get("conns")
                    st.presence[(p["sub"], str(p.get("role", "")))] = Presence(
                        p["sub"], str(p.get("role", "")), conns if isinstance(conns, int) else 1
                    )
            self._presence_changed(st, "sync")
        elif not st.presence_on:
            st.presence = None
        st.joined = True
        st.gap_rejoin = False
        for w in st.waiters:
            if not w.done():
                w.set_result(None)
        st.waiters.clear()
        if not st.subs:
            del self._sessions[st.session]
            self._inflight.append(("leave", st.session))
            self._send(json.dumps({"type": "leave", "session": st.session}))
        self._maybe_open()

    def _on_event(self, f: Dict[str, Any]) -> None:
        st = self._sessions.get(str(f.get("session")))
        if st is None:
            return
        seq = f.get("seq")
        if isinstance(seq, int):
            if st.joined and st.max_seq is not None and seq > st.max_seq + 1:
                # A gap (the gateway should never cause one): hold back, re-join where we are, let replay fill it.
                if not st.gap_rejoin:
                    st.gap_rejoin = True
                    log.error("gap in session %s: expected seq %d, got %d; re-joining", st.session, st.max_seq + 1, seq)
                    self._send_join(st)
                return
            if st.max_seq is None or seq > st.max_seq:
                st.max_seq = seq
                st.reset_rejoins = 0  # progress
            if st.head is None or seq > st.head:
                st.head = seq
        event = Event.from_frame(f)
        for sub in list(st.subs):
            sub._deliver(event)

    def _on_ack(self, f: Dict[str, Any]) -> None:
        entry = self._pending.get(str(f.get("id")))
        if entry is None or entry.session != f.get("session"):
            return
        del self._pending[entry.id]
        seq = f.get("seq")
        if not entry.future.done():
            entry.future.set_result(
                Ack(id=entry.id, session=entry.session, seq=seq if isinstance(seq, int) else None, duplicate=bool(f.get("duplicate")))
            )

    def _on_error(self, f: Dict[str, Any]) -> None:
        ref = f.get("ref")
        req = self._history.get(ref) if isinstance(ref, str) else None
        if req is not None:
            if f.get("code") == "unavailable" and req.retries < self._max_unavailable_retries:
                req.retries += 1
                req.sent_on = 0
                gen = self._generation

                def resend_history(r: _HistoryRequest = req, g: int = gen) -> None:
                    if g == self._generation and self._can_send() and self._history.get(r.id) is r and not r.sent_on:
                        self._send_history(r)

                handle = asyncio.get_running_loop().call_later(self._backoff(req.retries), resend_history)
                self._timers.add(handle)
                return
            del self._history[req.id]
            if not req.future.done():
                req.future.set_exception(error_from_frame(f, req.session))
            return
        if f.get("code") == "unauthorized" and self._refresh_fut is not None and not self._refresh_fut.done():
            # Only a refused refresh is answered `unauthorized` on the WebSocket; the old token stays in force.
            self._refresh_fut.set_exception(error_from_frame(f))
            return
        entry = self._pending.get(ref) if isinstance(ref, str) else None
        if entry is not None:
            code = f.get("code")
            if code == "unavailable" and not entry.ephemeral and entry.retries < self._max_unavailable_retries:
                entry.retries += 1
                entry.sent_on = 0
                delay = self._backoff(entry.retries)
                gen = self._generation
                log.info("publish %s not stored (%s); re-sending in %.2f s", entry.id, f.get("message"), delay)

                def resend(e: _Pending = entry, g: int = gen) -> None:
                    self._timers.discard(handle)
                    if g == self._generation and self._can_send() and self._pending.get(e.id) is e and not e.sent_on:
                        self._send_pending(e)

                handle = asyncio.get_running_loop().call_later(delay, resend)
                self._timers.add(handle)
                return
            del self._pending[entry.id]
            if not entry.future.done():
                entry.future.set_exception(error_from_frame(f, entry.session))
            return
        # An error without ref answers the oldest unanswered join/leave (the gateway answers them in order).
        if f.get("code") in ("forbidden", "bad_request", "not_found") and self._inflight:
            kind, session = self._inflight.popleft()
            err = error_from_frame(f, session)
            if kind == "join":
                st = self._sessions.pop(session, None)
                if st is not None:
                    for w in st.waiters:
                        if not w.done():
                            w.set_exception(err)
                    st.waiters.clear()
                    for sub in list(st.subs):
                        sub._end(err)
                    self._maybe_open()
            return
        log.warning("gateway error: %s %s", f.get("code"), f.get("message"))
        if f.get("code") == "unavailable":
            # A replay read failed (no ref): the subscription may stall; re-join every session where it left off.
            gen = self._generation

            def rejoin() -> None:
                if gen == self._generation and self._can_send():
                    for st in self._sessions.values():
                        if st.joined:
                            self._send_join(st)

            asyncio.get_running_loop().call_later(self._backoff_initial * (1 + random.random()), rejoin)

    def _unsubscribe(self, sub: Subscription) -> None:
        st = sub._state
        st.subs.discard(sub)
        if st.subs or self._sessions.get(st.session) is not st:
            return
        if st.joined:
            del self._sessions[st.session]
            self._fail_waiters(st)
            if self._can_send():
                self._inflight.append(("leave", st.session))
                self._send(json.dumps({"type": "leave", "session": st.session}))
        elif not self._can_send():
            del self._sessions[st.session]
            self._fail_waiters(st)
        # else: the join is in flight; _on_joined sends the leave.
        self._maybe_open()

    @staticmethod
    def _fail_waiters(st: _SessionState) -> None:
        for w in st.waiters:
            if not w.done():
                w.set_exception(ClientClosedError("subscription closed", session=st.session))
                w.exception()
        st.waiters.clear()


class MessageStream:
    """An answer streamed token by token (see :meth:`GatewayClient.stream`).

    ``append()`` batches tokens into ephemeral deltas (at most one per ``interval`` seconds, or as soon as
    ``max_chars`` characters are waiting); leaving the ``async with`` block publishes the final message.
    Attributes: ``id`` (the stream id), ``text`` (everything appended), ``deltas`` (deltas sent), ``seq`` (the
    final message's seq, after the block), ``status`` (None, ``"cancelled"`` or ``"failed"``).
    """

    def __init__(
        self,
        client: GatewayClient,
        session: str,
        stream_id: str,
        kind: str,
        final_kind: str,
        interval: float,
        max_chars: int,
        reply_to: Optional[int],
        final_timeout: Optional[float],
        extra: Dict[str, Any],
    ) -> None:
        self._client = client
        self.session = session
        self.id = stream_id
        self.kind = kind
        self.final_kind = final_kind
        self.interval = interval
        self.max_chars = max_chars
        self.reply_to = reply_to
        self._final_timeout = final_timeout
        self._extra = extra
        self._parts: List[str] = []
        self._bytes = 0
        self._buf: List[str] = []
        self._buf_len = 0
        self._last_flush = float("-inf")
        self._timer: Optional[asyncio.TimerHandle] = None
        self._inflight: Deque["asyncio.Future[Ack]"] = collections.deque()
        self._error: Optional[BaseException] = None
        self._entered = False
        self._closed = False
        self.deltas = 0
        self.seq: Optional[int] = None
        self.status: Optional[str] = None

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def final_id(self) -> str:
        """The final message's publisher id: derived from the stream id, so a retry is deduped."""
        return f"{self.id}:final"

    async def __aenter__(self) -> "MessageStream":
        self._client._check_usable()
        self._entered = True
        return self

    async def append(self, text: str) -> None:
        """Adds ``text`` to the answer; sends a delta now if ``max_chars`` are waiting or ``interval`` passed
        since the last one, else within ``interval``. Raises the error of a refused delta (e.g.
        :class:`RateLimitedError`, :class:`TooLargeError`), and :class:`TooLargeError` locally once the whole
        text would pass ``max_message_bytes`` minus 1 KiB (the gateway's bound for one stream)."""
        if self._closed or not self._entered:
            raise RuntimeError("append() outside the stream's async with block")
        if self._error is not None:
            raise self._error
        if not text:
            return
        size = len(text.encode("utf-8"))
        if self._bytes + size > self._client._max_message_bytes - 1024:
            raise TooLargeError("the streamed text would pass max_message_bytes - 1 KiB", session=self.session)
        self._bytes += size
        self._parts.append(text)
        self._buf.append(text)
        self._buf_len += len(text)
        loop = asyncio.get_running_loop()
        wait = self._last_flush + self.interval - loop.time()
        if self._buf_len >= self.max_chars or wait <= 0:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(wait, self._on_timer)
        # Bounded: wait for acks when too many deltas are unanswered (a stalled connection).
        while len(self._inflight) > _MAX_DELTAS_IN_FLIGHT:
            fut = self._inflight.popleft()
            try:
                await fut
            except GatewayError:
                pass  # recorded by _on_delta_done
        if self._error is not None:
            raise self._error

    def _on_timer(self) -> None:
        self._timer = None
        if not self._closed:
            self._flush()

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._buf:
            return
        chunk = "".join(self._buf)
        self._buf.clear()
        self._buf_len = 0
        self._last_flush = asyncio.get_running_loop().time()
        try:
            entry = self._client._enqueue_publish(self.session, self.kind, {"stream": self.id, "text": chunk}, id=None, ephemeral=False)
        except GatewayError as e:
            self._error = self._error or e
            return
        self.deltas += 1
        self._inflight.append(entry.future)
        entry.future.add_done_callback(self._on_delta_done)
        while self._inflight and self._inflight[0].done():
            self._inflight.popleft()

    def _on_delta_done(self, fut: "asyncio.Future[Ack]") -> None:
        if fut.cancelled():
            return
        e = fut.exception()
        if e is not None and self._error is None and not isinstance(e, ClientClosedError):
            self._error = e

    async def __aexit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> bool:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if exc is None:
            self._flush()  # the last batch, so live readers see it before the final message replaces it
        elif isinstance(exc, asyncio.CancelledError):
            self.status = "cancelled"
        else:
            self.status = "failed"
        data: Dict[str, Any] = {**self._extra, "stream": self.id, "text": self.text}
        if self.reply_to is not None:
            data["reply_to"] = self.reply_to
        if self.status is not None:
            data["status"] = self.status
        # Its own task, shielded: a second cancellation of the caller does not drop the final message.
        task = asyncio.get_running_loop().create_task(
            self._client.publish(self.session, self.final_kind, data, id=self.final_id, timeout=self._final_timeout)
        )
        try:
            self.seq = await asyncio.shield(task)
        except BaseException as e:  # noqa: BLE001
            if exc is None:
                raise
            if not isinstance(e, asyncio.CancelledError):
                log.warning("stream %s: the final message was not published: %r", self.id, e)
        return False


def _close_info(ws: ClientConnection) -> tuple[int, str]:
    rcvd = getattr(ws, "close_rcvd", None)
    if rcvd is not None:
        return rcvd.code, rcvd.reason
    return 1006, "connection lost"
