"""Echo agent: answers each user chat message with streamed deltas, progress steps and a final message.
Run: GATEWAY_URL=ws://127.0.0.1:8080/v1/ws GATEWAY_TOKEN=<agent JWT> SESSION=proj-1 python echo_agent.py"""
import asyncio, os
from samokoder_gateway import GatewayClient

async def main() -> None:
    session = os.environ["SESSION"]
    async with GatewayClient(os.environ["GATEWAY_URL"], os.environ["GATEWAY_TOKEN"]) as gw:
        async for msg in gw.events(session, kinds={"chat.message"}):
            if msg.sender.role != "user" or not msg.text:
                continue  # only answer people (not our own replies)
            stream = f"echo-{msg.seq}"
            await gw.progress(session, 1, 3, "Reading your message")
            await gw.progress(session, 2, 3, "Streaming the echo")
            for word in ["You said:", *msg.text.split()]:
                await gw.stream_delta(session, word + " ", stream=stream)
                await asyncio.sleep(0.05)
            await gw.send_message(session, f"You said: {msg.text}", stream=stream, reply_to=msg.seq)
            await gw.progress(session, 3, 3, "Done", status="done")

asyncio.run(main())
