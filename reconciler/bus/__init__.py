"""The platform's event bus, as its services find it: their own environment variables.

``@apphub/event-bus`` (``packages/event-bus/src/index.ts``, ``createEventPublisher``)
posts each envelope to ``APPHUB_EVENT_PROXY_URL`` when it is set (``proxy.py``), and
otherwise adds it as a job to the BullMQ ingress queue on ``REDIS_URL`` (``queue.py``).
``REDIS_URL=inline`` or ``APPHUB_EVENTS_MODE=inline`` is its inline mode, in which
nothing leaves the process; the reconciler then sends nothing, as with neither set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from reconciler.errors import ConfigurationError

PROXY_URL: Final = "APPHUB_EVENT_PROXY_URL"
PROXY_TOKEN: Final = "APPHUB_EVENT_PROXY_TOKEN"
REDIS_URL: Final = "REDIS_URL"
QUEUE_NAME: Final = "APPHUB_EVENT_QUEUE_NAME"
EVENTS_MODE: Final = "APPHUB_EVENTS_MODE"
DEFAULT_QUEUE_NAME: Final = "apphub_event_ingress_queue"  # DEFAULT_EVENT_QUEUE_NAME
TIMEOUT_SECONDS: Final = 10.0  # to connect, and for each answer


class Sender(Protocol):
    """An open connection to the bus."""

    def send(self, envelopes: Sequence[Mapping[str, Any]]) -> None:
        """Hand the envelopes to the bus, in order; raises EventDeliveryError saying how many went first."""
        ...

    def __enter__(self) -> Sender: ...

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None: ...


@dataclass(frozen=True)
class Bus:
    """Where the events go: the HTTP event proxy (``url``, ``token``) or a BullMQ queue
    (``url`` of Redis, ``queue``)."""

    kind: str  # "proxy" or "queue"
    url: str
    token: str | None = None
    queue: str = DEFAULT_QUEUE_NAME

    @property
    def description(self) -> str:
        """The bus as messages name it: never a token or a password."""
        if self.kind == "proxy":
            return f"the event proxy at {_without_credentials(self.url)}"
        return f"the BullMQ queue {self.queue!r} on {_without_credentials(self.url)}"

    def open(self) -> Sender:
        """A connection to the bus (a context manager)."""
        if self.kind == "proxy":
            from reconciler.bus.proxy import ProxySender

            return ProxySender(self.url, self.token, TIMEOUT_SECONDS)
        from reconciler.bus.queue import QueueSender

        return QueueSender(self.url, self.queue, TIMEOUT_SECONDS)


def configured(environ: Mapping[str, str]) -> Bus | None:
    """The bus the environment names, as the services read it; None when it names none."""
    proxy = environ.get(PROXY_URL, "").strip()
    if proxy:
        _check(proxy, ("http", "https"), f"{PROXY_URL} must be an http:// or https:// URL")
        return Bus("proxy", proxy, environ.get(PROXY_TOKEN, "").strip() or None)
    redis = environ.get(REDIS_URL, "").strip()
    if not redis or redis.lower() == "inline" or environ.get(EVENTS_MODE, "").strip().lower() == "inline":
        return None
    url = redis if "://" in redis else f"redis://{redis}"  # as parseRedisConnection reads it
    _check(url, ("redis", "rediss"), f"{REDIS_URL} must be a redis:// or rediss:// URL (or host:port)")
    return Bus("queue", url, queue=environ.get(QUEUE_NAME, "").strip() or DEFAULT_QUEUE_NAME)


def not_configured(environ: Mapping[str, str]) -> str | None:
    """The one line plan and apply say when no bus is configured (None when one is)."""
    if configured(environ) is not None:
        return None
    return (f"note: no event bus is configured ({PROXY_URL} or {REDIS_URL}): record changes are applied "
            "without announcing them as platform events")


def _check(url: str, schemes: tuple[str, ...], message: str) -> None:
    """Refuse a URL the bus could not be reached at (the message never quotes it: it may hold a password)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        raise ConfigurationError(message) from None
    if parts.scheme not in schemes or not parts.hostname:
        raise ConfigurationError(message)


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
