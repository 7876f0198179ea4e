"""The agent client against a real gateway: publish/ack, events, dedupe, typed exceptions."""

from __future__ import annotations

import asyncio
import contextlib
from typing import List

import pytest

from gatewayproc import GatewayProcess, Proxy, run
from samokoder_gateway import (
    Ack,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ConnectionState,
    Event,
    ForbiddenError,
    GatewayClient,
    GatewayConnectionError,
    RateLimitedError,
    TooLargeError,
)


async def wait_until(pred, timeout: float = 10.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def collect(sub_iter, into: List[Event]) -> "asyncio.Task[None]":  # type: ignore[no-untyped-def]
    async def loop() -> None:
        async for ev in sub_iter:
            into.append(ev)

    return asyncio.get_running_loop().create_task(loop())


def test_publish_ack_and_events(gateway: GatewayProcess) -> None:
    async def body() -> None:
        states: List[ConnectionState] = []
        agent_token = gateway.token("worker-1", "agent", ["*"])
        async with GatewayClient(gateway.url, agent_token, on_state=states.append) as agent, GatewayClient(
            gateway.url, gateway.token("alice", "user", ["proj-1"])
        ) as user:
            assert agent.welcome is not None and agent.welcome.sub == "worker-1" and agent.welcome.role == "agent"
            assert agent.state == ConnectionState.OPEN
            seen: List[Event] = []
            sub = await user.join("proj-1")
            assert sub.head == 0
            task = collect(sub, seen)

            assert await agent.progress("proj-1", 1, 3, "Planning") == 1
            ack = await agent.publish_ack("proj-1", "chat.message", {"text": "hello"})
            assert isinstance(ack, Ack) and ack.seq == 2 and not ack.duplicate
            assert await agent.publish("proj-1", "chat.delta", {"text": "hel"}) is None
            await agent.stream_delta("proj-1", "lo", stream="s1")
            assert await user.send_message("proj-1", "from the user") == 3

            await wait_until(lambda: len(seen) == 5, what="5 events")
            assert [(e.kind, e.seq) for e in seen] == [
                ("progress", 1), ("chat.message", 2), ("chat.delta", None), ("chat.delta", None), ("chat.message", 3),
            ]
            assert seen[0].data == {"step": 1, "of": 3, "label": "Planning"}
            assert seen[0].sender.sub == "worker-1" and seen[0].sender.role == "agent"
            assert seen[1].id == ack.id and seen[1].text == "hello"
            assert seen[3].data == {"text": "lo", "stream": "s1"} and seen[3].ephemeral
            assert seen[4].sender.role == "user" and len(seen[4].ts) == 24 and seen[4].ts.endswith("Z")
            assert sub.last_seq == 3
            sub.close()
            await asyncio.wait_for(task, 5)
        assert states[0] == ConnectionState.OPEN and states[-1] == ConnectionState.CLOSED

    run(body)


def test_events_since_replays_and_filters_kinds(gateway: GatewayProcess) -> None:
    async def body() -> None:
        async with GatewayClient(gateway.url, gateway.token("w", "agent", ["s"])) as agent:
            for i in range(1, 6):
                await agent.publish("s", "progress" if i % 2 else "chat.message", {"i": i, "text": str(i)})
            got: List[int] = []
            async with contextlib.aclosing(agent.events("s", since=1, kinds={"chat.message"})) as events:
                async for ev in events:
                    got.append(ev.seq or 0)
                    if ev.seq == 4:
                        break
            assert got == [2, 4]
            # Joining again (the first iteration left the session) replays again.
            again = [ev.seq async for ev in _take(agent.events("s", since=3), 2)]
            assert again == [4, 5]
            # A second subscription with an older position gets its replay; the first sees no duplicate.
            live = await agent.join("s")
            old = await agent.join("s", since=0)
            await agent.publish("s", "progress", {"i": 6})
            assert [(await live.__anext__()).seq] == [6]
            assert [(await old.__anext__()).seq for _ in range(6)] == [1, 2, 3, 4, 5, 6]
            await asyncio.sleep(0.1)
            assert live._queue.empty() and old._queue.empty()

    run(body)


async def _take(it, n: int):  # type: ignore[no-untyped-def]
    count = 0
    async for x in it:
        yield x
        count += 1
        if count == n:
            break


def test_dedupe_same_id(gateway: GatewayProcess) -> None:
    async def body() -> None:
        async with GatewayClient(gateway.url, gateway.token("w", "agent", ["s"])) as a, GatewayClient(
            gateway.url, gateway.token("w2", "agent", ["s"])
        ) as b:
            first = await a.publish_ack("s", "chat.message", {"text": "x"}, id="same")
            again = await a.publish_ack("s", "chat.message", {"text": "x"}, id="same")
            assert (first.seq, first.duplicate) == (1, False)
            assert (again.seq, again.duplicate) == (1, True)
            other = await b.publish_ack("s", "chat.message", {"text": "x"}, id="same")
            assert (other.seq, other.duplicate) == (2, False)

    run(body)


def test_retry_after_lost_ack_is_deduped(gateway: GatewayProcess) -> None:
    """The gateway stores a publish, the ack is lost with the connection: the retry (same id) is deduped."""

    async def body() -> None:
        proxy = await Proxy(gateway.port).start()
        try:
            async with GatewayClient(gateway.url, gateway.token("ops", "operator")) as observer, GatewayClient(
                proxy.url, gateway.token("w", "agent", ["s"]), backoff_initial=0.05, backoff_max=0.5
            ) as agent:
                watched: List[Event] = []
                obs_task = collect(await observer.join("s"), watched)
                mine: List[Event] = []
                my_task = collect(await agent.join("s"), mine)
                assert await agent.publish("s", "chat.message", {"text": "one"}) == 1

                proxy.blackhole_down = True
                pending = asyncio.ensure_future(agent.publish_ack("s", "chat.message", {"text": "two"}, id="m-two"))
                await wait_until(lambda: any(e.id == "m-two" for e in watched), what="stored event")
                proxy.cut_all()
                proxy.blackhole_down = False
                ack = await asyncio.wait_for(pending, 10)
                assert (ack.seq, ack.duplicate) == (2, True)
                await wait_until(lambda: len(mine) == 2, what="own events resumed")
                assert [e.seq for e in mine] == [1, 2]
                await asyncio.sleep(0.2)
                assert [e.seq for e in watched] == [1, 2]
                assert agent.connections == 2
                obs_task.cancel()
                my_task.cancel()
        finally:
            await proxy.close()

    run(body)


def test_typed_exceptions() -> None:
    gw = GatewayProcess(
        env={"GATEWAY_RATE_LIMITS_ROLES_USER_RATE_PER_SECOND": "1", "GATEWAY_RATE_LIMITS_ROLES_USER_BURST": "2"}
    ).start()

    async def body() -> None:
        # A refused token: AuthenticationError, no reconnect loop.
        bad = GatewayClient(gw.url, gw.token("u", "user", ["s"]) + "x", backoff_initial=0.05)
        with pytest.raises(AuthenticationError) as info:
            await bad.connect()
        assert info.value.close_code == 4001
        assert bad.state == ConnectionState.CLOSED
        with pytest.raises(AuthenticationError):
            await bad.publish("s", "chat.message", {})

        # Nothing listening: GatewayConnectionError after connect_timeout.
        nobody = GatewayClient("ws://127.0.0.1:9/v1/ws", "t", connect_timeout=0.5, backoff_initial=0.05)
        with pytest.raises(GatewayConnectionError):
            await nobody.connect()

        async with GatewayClient(gw.url, gw.token("u", "user", ["mine"])) as user:
            with pytest.raises(ForbiddenError) as f1:
                await user.publish("mine", "progress", {"step": 1})
            assert f1.value.ref is not None and f1.value.session == "mine"
            with pytest.raises(ForbiddenError):
                await user.send_message("theirs", "hi")
            with pytest.raises(ForbiddenError) as f2:
                await user.join("theirs")
            assert f2.value.session == "theirs"
            with pytest.raises(BadRequestError):
                await user.send_message("bad id!", "x")
            with pytest.raises(TooLargeError):
                await user.send_message("mine", "x" * (1 << 20))
            sub = await user.join("mine")  # still usable
            assert sub.session == "mine"
            results = await asyncio.gather(
                *(user.send_message("mine", f"m{i}") for i in range(6)), return_exceptions=True
            )
            limited = [r for r in results if isinstance(r, Exception)]
            assert limited and all(isinstance(r, RateLimitedError) for r in limited), results
            assert all(isinstance(r, int) for r in results if not isinstance(r, Exception))

        closed = GatewayClient(gw.url, gw.token("u2", "user", ["s"]))
        await closed.connect()
        await closed.close()
        with pytest.raises(ClientClosedError):
            await closed.publish("s", "chat.message", {})

    try:
        run(body)
    finally:
        gw.dispose()
