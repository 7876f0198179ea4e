"""Typed exceptions raised by :class:`samokoder_gateway.GatewayClient`."""

from __future__ import annotations

from typing import Any, Mapping, Optional


class GatewayError(Exception):
    """Base class of every error the client raises.

    ``code`` is the protocol error code (``forbidden``, ``rate_limited``, ...) or a client-side code
    (``closed``, ``connect``); ``ref`` is the publish id the gateway refused, where there is one;
    ``session`` the session it concerns; ``close_code`` the WebSocket close code behind it, if any.
    """

    code: str = "error"

    def __init__(
        self,
        message: str,
        *,
        code: Optional[str] = None,
        ref: Optional[str] = None,
        session: Optional[str] = None,
        close_code: Optional[int] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.ref = ref
        self.session = session
        self.close_code = close_code

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, ref={self.ref!r})"


class AuthenticationError(GatewayError):
    """The token was refused (close 4001 before ``welcome``). Fatal: the client stops reconnecting."""

    code = "unauthorized"


class ForbiddenError(GatewayError):
    """The token may not join that session, or publish that kind there."""

    code = "forbidden"


class RateLimitedError(GatewayError):
    """Over the publish rate: the event was not accepted. Retry later (the same id is safe)."""

    code = "rate_limited"


class BadRequestError(GatewayError):
    """A malformed frame or a field that breaks the rules (session id, kind, id)."""

    code = "bad_request"


class NotFoundError(GatewayError):
    """``leave`` of a session that is not joined."""

    code = "not_found"


class TooLargeError(GatewayError):
    """The publish is larger than the gateway accepts."""

    code = "too_large"


class UnavailableError(GatewayError):
    """Storage refused the write or the gateway is draining: the event was not stored.

    The client re-sends such publishes by itself (same id) a bounded number of times before raising this.
    """

    code = "unavailable"


class ClientClosedError(GatewayError):
    """The client was closed before the operation completed."""

    code = "closed"


class GatewayConnectionError(GatewayError):
    """No connection could be established within ``connect_timeout``."""

    code = "connect"


_BY_CODE: Mapping[str, type[GatewayError]] = {
    "unauthorized": AuthenticationError,
    "forbidden": ForbiddenError,
    "rate_limited": RateLimitedError,
    "bad_request": BadRequestError,
    "not_found": NotFoundError,
    "too_large": TooLargeError,
    "unavailable": UnavailableError,
}


def error_from_frame(frame: Mapping[str, Any], session: Optional[str] = None) -> GatewayError:
    """The typed exception for a gateway ``error`` frame."""
    code = str(frame.get("code", "error"))
    cls = _BY_CODE.get(code, GatewayError)
    message = str(frame.get("message") or code)
    ref = frame.get("ref")
    return cls(message, code=code, ref=ref if isinstance(ref, str) else None, session=session)
