"""Protocol v1.1 in the agent client against the real gateway: in-band token refresh, presence, history and
join ``last``, ``left`` forbidden after a narrowing refresh, and the token-stream helper (batching, final message,
cancelled/failed status)."""

from __future__ import annotations

import asyncio
import os
from typing import Any, Dict, Iterator, List, Tuple

import jwt
import pytest

from gatewayproc import GatewayProcess, run
from samokoder_gateway import (
    Event,
    ForbiddenError,
    GatewayClient,
    GatewayError,
    PresenceChange,
)



async def wait_until(pred, timeout: float = 10.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def strict_gateway() -> Iterator[GatewayProcess]:
    """No clock leeway and a fast expiry check: an unrefreshed token is closed 4001 at exp."""
    gw = GatewayProcess(env={"GATEWAY_AUTH_LEEWAY_SECONDS": "0", "GATEWAY_LIMITS_TOKEN_RECHECK_SECONDS": "0.2"}).start()
    try:
        yield gw
    finally:
        gw.dispose()


def test_token_refreshed_many_times_without_reconnect(strict_gateway: GatewayProcess) -> None:
    gw = strict_gateway
    calls = 0

    def token() -> str:
        nonlocal calls
        calls += 1
        return gw.token("py-refresher", "agent", ["*"], ttl=3)

    async def body() -> None:
        async with GatewayClient(gw.url, token, backoff_initial=0.05) as client:
            assert client.welcome is not None and isinstance(client.welcome.exp, int)
            conn = client.welcome.conn
            seen: List[int] = []
            sub = await client.join("py-refresh")

            async def collect() -> None:
                async for ev in sub:
                    if ev.seq is not None:
                        seen.append(ev.seq)

            task = asyncio.get_running_loop().create_task(collect())
            await wait_until(lambda: client.refresh_count >= 5, 25, "5 refreshes")
            assert client.connections == 1, "no second connection"
            assert client.welcome.conn == conn
            assert calls == 1 + client.refresh_count
            assert client.exp is not None and client.exp >= client.welcome.exp - 1
            seq = await client.send_message("py-refresh", "still connected")
            await wait_until(lambda: seq in seen, 5, "own event")
            assert client.connections == 1
            task.cancel()

    run(body, timeout=60)


def test_refused_refresh_retried_then_reconnect(strict_gateway: GatewayProcess) -> None:
    gw = strict_gateway
    calls = 0
    failing = True
    failures: List[Tuple[str, int, bool]] = []

    def token() -> str:
        nonlocal calls
        calls += 1
        if calls > 1 and failing:
            return jwt.encode({"sub": "py-r2", "role": "agent", "sessions": ["*"], "exp": 2**31}, "x" * 40, algorithm="HS256")
        return gw.token("py-r2", "agent", ["*"], ttl=5 if failing else 3600)

    def on_failed(err: GatewayError, attempt: int, will_retry: bool) -> None:
        nonlocal failing
        failures.append((err.code, attempt, will_retry))
        if not will_retry:
            failing = False

    async def body() -> None:
        # The first refresh at 30 % of a 4-5 s lifetime: the bounded retries end well before exp, so the
        # reconnect after 4001 gets a good token again.
        async with GatewayClient(
            gw.url, token, backoff_initial=0.05, max_refresh_retries=2, refresh_ratio=0.3, on_refresh_failed=on_failed
        ) as client:
            await wait_until(lambda: client.connections == 2 and client.state.value == "open", 20, "reconnect after 4001")
            assert failures == [("unauthorized", 1, True), ("unauthorized", 2, True), ("unauthorized", 3, False)]
            assert client.refresh_count == 0
            assert await client.send_message("py-r2", "after the reconnect") == 1

    run(body, timeout=60)


def test_left_forbidden_after_narrowing_refresh(strict_gateway: GatewayProcess) -> None:
    gw = strict_gateway
    sessions = ["py-keep", "py-drop"]

    async def body() -> None:
        async with GatewayClient(gw.url, lambda: gw.token("py-narrow", "user", list(sessions), ttl=3)) as client:
            keep = await client.join("py-keep")
            drop = await client.join("py-drop")
            sessions[:] = ["py-keep"]
            with pytest.raises(ForbiddenError) as info:
                await asyncio.wait_for(drop.__anext__(), 10)
            assert info.value.session == "py-drop"
            assert client.refresh_count >= 1 and client.connections == 1
            seq = await client.send_message("py-keep", "kept")
            ev = await asyncio.wait_for(keep.__anext__(), 5)
            assert ev.seq == seq
            with pytest.raises(ForbiddenError):
                await client.join("py-drop")

    run(body, timeout=40)


def test_presence_two_tabs(gateway: GatewayProcess) -> None:
    S = "py-presence"

    async def body() -> None:
        changes: List[PresenceChange] = []
        async with GatewayClient(gateway.url, gateway.token("watcher", "agent", ["*"])) as watcher:
            wsub = await watcher.join(S, presence=True, on_presence=changes.append)
            assert [(p.sub, p.conns) for p in wsub.presence or []] == [("watcher", 1)]
            assert [c.action for c in changes] == ["sync"]
            tok = gateway.token("alice", "user", [S])
            tab1 = GatewayClient(gateway.url, tok)
            tab2 = GatewayClient(gateway.url, tok)
            await tab1.connect()
            await tab2.connect()
            t1 = await tab1.join(S, presence=True)
            await wait_until(lambda: len(changes) == 2, 5, "join")
            assert (changes[1].action, changes[1].sub, changes[1].role) == ("join", "alice", "user")
            assert [p.sub for p in changes[1].presence] == ["alice", "watcher"]
            assert [(p.sub, p.conns) for p in t1.presence or []] == [("alice", 1), ("watcher", 1)]
            t2 = await tab2.join(S, presence=True)
            assert [(p.sub, p.conns) for p in t2.presence or []] == [("alice", 2), ("watcher", 1)]
            await asyncio.sleep(0.3)
            assert len(changes) == 2, "a second tab sends no frame"
            await tab1.close()
            await asyncio.sleep(0.3)
            assert len(changes) == 2
            await tab2.close()
            await wait_until(lambda: len(changes) == 3, 5, "leave")
            assert (changes[2].action, changes[2].sub) == ("leave", "alice")
            assert [p.sub for p in wsub.presence or []] == ["watcher"]
            plain = await watcher.join(S)
            assert plain.presence is None

    run(body)


def test_history_paging_and_join_last(gateway: GatewayProcess) -> None:
    S = "py-history"

    async def body() -> None:
        async with GatewayClient(gateway.url, gateway.token("hist", "agent", ["*"])) as agent:
            for i in range(1, 26):
                await agent.publish(S, "note", {"i": i})
            page = await agent.history(S, limit=10)
            assert [e.seq for e in page.events] == list(range(16, 26))
            assert (page.first, page.head) == (1, 25)
            assert isinstance(page.events[0], Event) and page.events[0].data == {"i": 16}
            seqs = [e.seq for e in page.events]
            pages = 1
            while seqs[0] != page.first and pages < 10:
                older = await agent.history(S, before=seqs[0], limit=10)
                seqs = [e.seq for e in older.events] + seqs
                pages += 1
            assert pages == 3 and seqs == list(range(1, 26))
            assert len((await agent.history(S)).events) == 25
            empty = await agent.history("py-never")
            assert (empty.events, empty.first, empty.head) == ((), 1, 0)
            with pytest.raises(GatewayError):
                await agent.history(S, limit=0)

            async with GatewayClient(gateway.url, gateway.token("u", "user", ["other"])) as user:
                with pytest.raises(ForbiddenError):
                    await user.history(S)

            sub = await agent.join(S, last=3)
            got = [(await asyncio.wait_for(sub.__anext__(), 5)).seq for _ in range(3)]
            assert got == [23, 24, 25]
            await agent.publish(S, "note", {"i": 26})
            assert (await asyncio.wait_for(sub.__anext__(), 5)).seq == 26

    run(body)


def _collector(sub: Any, into: List[Event]) -> "asyncio.Task[None]":
    async def loop() -> None:
        async for ev in sub:
            into.append(ev)

    return asyncio.get_running_loop().create_task(loop())


def test_stream_helper_batches_deltas_and_publishes_the_final_message(gateway: GatewayProcess) -> None:
    S = "py-stream"

    async def body() -> None:
        async with GatewayClient(gateway.url, gateway.token("streamer", "agent", ["*"])) as agent, GatewayClient(
            gateway.url, gateway.token("reader", "user", [S])
        ) as reader:
            seen: List[Event] = []
            task = _collector(await reader.join(S), seen)
            # 500 one-character tokens appended at once: one delta per 64 characters (plus the first at once).
            tokens = [chr(ord("a") + i % 26) for i in range(500)]
            async with agent.stream(S, stream="ans-1", reply_to=7) as s:
                for t in tokens:
                    await s.append(t)
            assert s.seq is not None and s.status is None
            assert 8 <= s.deltas <= 10, s.deltas
            await wait_until(lambda: any(e.seq == s.seq for e in seen), 5, "final message")
            deltas = [e for e in seen if e.kind == "chat.delta"]
            assert len(deltas) == s.deltas
            assert all(e.data["stream"] == "ans-1" and len(e.data["text"]) <= 64 for e in deltas)
            assert "".join(e.data["text"] for e in deltas) == "".join(tokens)
            final = next(e for e in seen if e.seq == s.seq)
            assert final.kind == "chat.message" and final.id == "ans-1:final"
            assert final.data == {"stream": "ans-1", "text": "".join(tokens), "reply_to": 7}

            # Slow tokens (one per 5 ms for 0.6 s): at most about one delta per 30 ms.
            seen.clear()
            async with agent.stream(S, stream="ans-2") as s2:
                for i in range(120):
                    await s2.append(f"{i % 10}")
                    await asyncio.sleep(0.005)
            assert 5 <= s2.deltas <= 0.6 / 0.03 + 6, s2.deltas
            # A custom batch size.
            async with agent.stream(S, stream="ans-3", max_chars=10, interval=10) as s3:
                for _ in range(100):
                    await s3.append("x")
            assert s3.deltas == 11  # the first token at once, then one per 10 characters (the last 9 on exit: 1)
            # Re-publishing the same final id is deduped (the id is derived from the stream id).
            ack = await agent.publish_ack(S, "chat.message", {"stream": "ans-3", "text": "x" * 100}, id="ans-3:final")
            assert ack.duplicate and ack.seq == s3.seq
            task.cancel()

    run(body)


def test_stream_helper_marks_cancelled_and_failed(gateway: GatewayProcess) -> None:
    S = "py-stream-cancel"

    async def body() -> None:
        async with GatewayClient(gateway.url, gateway.token("streamer", "agent", ["*"])) as agent:
            started = asyncio.Event()

            async def answer() -> None:
                async with agent.stream(S, stream="c-1") as s:
                    await s.append("partial ")
                    await s.append("answer")
                    started.set()
                    await asyncio.sleep(3600)

            t = asyncio.get_running_loop().create_task(answer())
            await started.wait()
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            with pytest.raises(ValueError):
                async with agent.stream(S, stream="f-1") as s:
                    await s.append("some")
                    raise ValueError("model crashed")
            assert s.status == "failed" and s.seq is not None
            page = await agent.history(S)
            finals = {e.id: e.data for e in page.events}
            assert finals["c-1:final"] == {"stream": "c-1", "text": "partial answer", "status": "cancelled"}
            assert finals["f-1:final"] == {"stream": "f-1", "text": "some", "status": "failed"}

    run(body)


def test_stream_snapshot_for_a_late_joiner(gateway: GatewayProcess) -> None:
    S = "py-stream-snap"

    async def body() -> None:
        async with GatewayClient(gateway.url, gateway.token("streamer", "agent", ["*"])) as agent:
            async with agent.stream(S, stream="snap-1", interval=0) as s:
                await s.append("Hello, ")
                await s.append("wor")
                await asyncio.sleep(0.2)
                async with GatewayClient(gateway.url, gateway.token("late", "user", [S])) as late:
                    sub = await late.join(S, since=0)
                    snap = await asyncio.wait_for(sub.__anext__(), 5)
                    assert snap.seq is None and snap.id == "snap-1" and snap.kind == "chat.delta"
                    assert snap.data == {"stream": "snap-1", "full": "Hello, wor"}
                    await s.append("ld")
                    d = await asyncio.wait_for(sub.__anext__(), 5)
                    assert d.data == {"stream": "snap-1", "text": "ld"}
            assert s.seq is not None

    run(body)
