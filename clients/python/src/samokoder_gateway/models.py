"""Value types: events, acks, connection states."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Tuple


class ConnectionState(str, enum.Enum):
    """Where the connection is. ``OPEN`` means welcomed and every session re-joined."""

    CONNECTING = "connecting"
    OPEN = "open"
    RESUMING = "resuming"
    CLOSED = "closed"


@dataclass(frozen=True)
class Sender:
    """Who published an event: the token's ``sub`` and ``role``."""

    sub: str
    role: str


@dataclass(frozen=True)
class Event:
    """One ``event`` frame.

    ``seq`` is the durable sequence number in the session (``None`` for ephemeral events such as
    ``chat.delta``); ``id`` the publisher's message id; ``ts`` an RFC 3339 UTC timestamp with milliseconds.
    """

    session: str
    seq: Optional[int]
    id: str
    kind: str
    sender: Sender
    ts: str
    data: Any
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def ephemeral(self) -> bool:
        """True for events that were fanned out but not stored (no seq)."""
        return self.seq is None

    @property
    def text(self) -> Optional[str]:
        """``data["text"]`` when data is an object with a string ``text`` (chat kinds), else None."""
        if isinstance(self.data, dict):
            t = self.data.get("text")
            return t if isinstance(t, str) else None
        return None

    @classmethod
    def from_frame(cls, f: Mapping[str, Any]) -> "Event":
        sender = f.get("from") or {}
        seq = f.get("seq")
        return cls(
            session=str(f.get("session", "")),
            seq=seq if isinstance(seq, int) else None,
            id=str(f.get("id", "")),
            kind=str(f.get("kind", "")),
            sender=Sender(sub=str(sender.get("sub", "")), role=str(sender.get("role", ""))),
            ts=str(f.get("ts", "")),
            data=f.get("data"),
            raw=f,
        )


@dataclass(frozen=True)
class Ack:
    """The gateway's ``ack`` of a publish. ``seq`` is None for ephemeral events; ``duplicate`` is True when
    the id had already been stored (a retry) and ``seq`` is the original one. ``dropped`` is True for an
    ephemeral publish whose connection was lost before the ack (it is not re-sent)."""

    id: str
    session: str
    seq: Optional[int] = None
    duplicate: bool = False
    dropped: bool = False


@dataclass(frozen=True)
class Welcome:
    """The ``welcome`` frame: this connection's id, the token's subject and role, and (protocol v1.1) ``exp``,
    the expiry of the token in force (Unix seconds; None from a v1 gateway)."""

    conn: str
    sub: str
    role: str
    exp: Optional[int] = None


@dataclass(frozen=True)
class Presence:
    """One subject joined to a session (protocol v1.1): ``conns`` is how many of its connections are joined
    (as of the last ``joined``; join/leave frames add and remove subjects)."""

    sub: str
    role: str
    conns: int = 1


@dataclass(frozen=True)
class PresenceChange:
    """A change of a session's presence list: ``action`` is ``sync`` (a new list from ``joined``), ``join`` or
    ``leave`` (``sub``/``role`` set); ``presence`` is the list after the change, sorted by sub, role."""

    session: str
    action: str
    presence: Tuple[Presence, ...]
    sub: Optional[str] = None
    role: Optional[str] = None


@dataclass(frozen=True)
class History:
    """A page of durable history (protocol v1.1 ``history``): ``events`` oldest first; ``first`` the oldest seq
    still held (head + 1 if none), ``head`` the session head. Fewer events than asked does not mean the start
    was reached: compare ``events[0].seq`` with ``first``."""

    session: str
    events: Tuple[Event, ...]
    first: int
    head: int
