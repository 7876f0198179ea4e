"""The example echo agent, run as a process, answers a user's chat message with deltas, progress and a reply."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import List

from gatewayproc import GatewayProcess, run
from samokoder_gateway import Event, GatewayClient

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "echo_agent.py"


def test_echo_agent(gateway: GatewayProcess) -> None:
    env = dict(os.environ)
    env.update(
        GATEWAY_URL=gateway.url,
        GATEWAY_TOKEN=gateway.token("echo-bot", "agent", ["*"]),
        SESSION="proj-echo",
        PYTHONPATH=str(EXAMPLE.parents[1] / "src") + os.pathsep + env.get("PYTHONPATH", ""),
    )
    agent = subprocess.Popen([sys.executable, str(EXAMPLE)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:

        async def body() -> None:
            async with GatewayClient(gateway.url, gateway.token("alice", "user", ["proj-echo"])) as user:
                seen: List[Event] = []
                sub = await user.join("proj-echo")
                # The agent joins without `since`: wait until it has joined before talking to it.
                deadline = asyncio.get_running_loop().time() + 20
                while True:
                    seq = await user.send_message("proj-echo", "hello there agent")
                    async for ev in _until_reply_or(sub, 1.5):
                        seen.append(ev)
                    if any(e.kind == "chat.message" and e.sender.role == "agent" for e in seen):
                        break
                    assert asyncio.get_running_loop().time() < deadline, "the echo agent never answered"
                while not any(e.kind == "progress" and (e.data or {}).get("status") == "done" for e in seen):
                    seen.append(await asyncio.wait_for(sub.__anext__(), 5))
                deltas = "".join(e.data["text"] for e in seen if e.kind == "chat.delta")
                assert deltas.strip() == "You said: hello there agent"
                reply = next(e for e in seen if e.kind == "chat.message" and e.sender.role == "agent")
                assert reply.text == "You said: hello there agent"
                assert reply.data["reply_to"] == seq and reply.data["stream"] == f"echo-{seq}"
                steps = [e.data["step"] for e in seen if e.kind == "progress"]
                assert steps == [1, 2, 3]

        run(body, timeout=40)
    finally:
        agent.terminate()
        try:
            agent.wait(10)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(5)


async def _until_reply_or(sub, seconds: float):  # type: ignore[no-untyped-def]
    """Events until the agent's final reply, or until `seconds` pass without one."""
    end = asyncio.get_running_loop().time() + seconds
    while True:
        left = end - asyncio.get_running_loop().time()
        if left <= 0:
            return
        try:
            ev = await asyncio.wait_for(sub.__anext__(), left)
        except asyncio.TimeoutError:
            return
        yield ev
        if ev.kind == "chat.message" and ev.sender.role == "agent":
            return
