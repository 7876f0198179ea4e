"""Samokoder realtime gateway: the asyncio agent client (protocol v1 and v1.1).

Example::

    import asyncio
    from samokoder_gateway import GatewayClient

    async def main() -> None:
        async with GatewayClient("wss://gateway.example/v1/ws", token) as gw:
            async for event in gw.events("proj-1", kinds={"chat.message"}):
                if event.sender.role == "user":
                    await gw.send_message("proj-1", f"You said: {event.text}")

See docs/clients.md in the gateway repository for the full API and the reconnect/resume semantics.
"""

from .client import GatewayClient, MessageStream, Subscription, TokenProvider
from .errors import (
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ForbiddenError,
    GatewayConnectionError,
    GatewayError,
    NotFoundError,
    RateLimitedError,
    TooLargeError,
    UnavailableError,
)
from .models import Ack, ConnectionState, Event, History, Presence, PresenceChange, Sender, Welcome

__version__ = "1.1.0"

__all__ = [
    "Ack",
    "AuthenticationError",
    "BadRequestError",
    "ClientClosedError",
    "ConnectionState",
    "Event",
    "ForbiddenError",
    "GatewayClient",
    "GatewayConnectionError",
    "GatewayError",
    "History",
    "MessageStream",
    "NotFoundError",
    "Presence",
    "PresenceChange",
    "RateLimitedError",
    "Sender",
    "Subscription",
    "TokenProvider",
    "TooLargeError",
    "UnavailableError",
    "Welcome",
    "__version__",
]
