"""Resume after the gateway is restarted (same data directory and port)."""

from __future__ import annotations

import asyncio
import signal
from typing import List

import pytest

from gatewayproc import GatewayProcess, run
from samokoder_gateway import ConnectionState, Event, GatewayClient


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_resume_after_gateway_restart(gateway: GatewayProcess, sig: int) -> None:
    async def body() -> None:
        token_calls = 0

        async def agent_token() -> str:
            nonlocal token_calls
            token_calls += 1
            return gateway.token("w", "agent", ["*"])

        states: List[ConnectionState] = []
        fast = dict(backoff_initial=0.05, backoff_max=0.5)
        async with GatewayClient(gateway.url, agent_token, **fast) as agent, GatewayClient(  # type: ignore[arg-type]
            gateway.url, gateway.token("reader", "agent", ["s"]), on_state=states.append, **fast  # type: ignore[arg-type]
        ) as reader:
            seen: List[Event] = []

            async def consume() -> None:
                async for ev in reader.events("s", since=0):
                    seen.append(ev)

            consumer = asyncio.get_running_loop().create_task(consume())
            seqs = [await agent.publish("s", "progress", {"i": i}) for i in range(1, 21)]
            assert seqs == list(range(1, 21))

            # A burst in flight when the gateway goes away, and more published while it is down.
            burst = [asyncio.ensure_future(agent.publish("s", "progress", {"i": f"b{k}"})) for k in range(40)]
            await asyncio.sleep(0)
            await asyncio.to_thread(gateway.stop, sig)
            during = [asyncio.ensure_future(agent.publish("s", "chat.message", {"text": f"d{k}"})) for k in range(10)]
            await asyncio.sleep(0.3)
            assert agent.pending_count > 0
            assert agent.state == ConnectionState.RESUMING
            await asyncio.to_thread(gateway.start)  # same port and data directory

            more = await asyncio.wait_for(asyncio.gather(*burst, *during), 20)
            assert sorted(more) == list(range(21, 71)), "every publish stored exactly once"
            assert await agent.publish("s", "chat.message", {"text": "after"}) == 71

            deadline = asyncio.get_running_loop().time() + 15
            while len(seen) < 71 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            assert [e.seq for e in seen] == list(range(1, 72)), "no loss, no duplicate, in order"
            assert token_calls >= 2
            assert ConnectionState.RESUMING in states and states[-1] == ConnectionState.OPEN
            consumer.cancel()

    run(body, timeout=60)
