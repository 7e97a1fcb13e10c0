"""Platform events as jobs of the BullMQ ingress queue, as ``@apphub/event-bus`` adds them.

``packages/event-bus/src/index.ts`` (``createEventPublisher``): a job named
``apphub.event`` (``DEFAULT_EVENT_JOB_NAME``) with the data ``{envelope}``, on the queue
``APPHUB_EVENT_QUEUE_NAME`` (default ``apphub_event_ingress_queue``) of ``REDIS_URL``; the
core's ingress worker (``services/core/src/eventIngressWorker.ts``) reads them. One
difference, for redelivery: each job's id is its event's id, so a job the queue still
holds is not added twice. A batch is added in one Redis transaction: all of it or none.
The ``bullmq`` package speaks BullMQ's protocol; this module only uses it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Final

from bullmq import Queue
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ConstantBackoff

from reconciler.core.text import clean
from reconciler.errors import EventDeliveryError

JOB_NAME: Final = "apphub.event"


class QueueSender:
    """Adds envelopes to the BullMQ queue ``name`` on the Redis at ``url``."""

    def __init__(self, url: str, name: str, timeout: float) -> None:
        self.url = url
        self.name = name
        self.timeout = timeout
        self._runner: asyncio.Runner | None = None
        self._queue: Queue | None = None

    def __enter__(self) -> QueueSender:
        self._runner = asyncio.Runner()
        # bullmq's own client retries a lost connection for minutes; this one gives up
        # within the timeout, so an apply never hangs on a bus that is down.
        client = Redis.from_url(self.url, decode_responses=True, socket_connect_timeout=self.timeout,
                                socket_timeout=self.timeout, retry=Retry(ConstantBackoff(0.2), 1))
        self._queue = Queue(self.name, {"connection": client})
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._runner is None:
            return
        try:
            if self._queue is not None:
                self._runner.run(asyncio.wait_for(self._queue.close(), self.timeout))
        except Exception:  # noqa: BLE001
            pass  # closing a connection that is already gone: nothing is left to lose
        finally:
            self._runner.close()
            self._runner = None

    def send(self, envelopes: Sequence[Mapping[str, Any]]) -> None:
        if self._runner is None or self._queue is None:
            raise EventDeliveryError("the BullMQ queue is not open")
        jobs = [{"name": JOB_NAME, "data": {"envelope": dict(e)}, "opts": {"jobId": e["id"]}} for e in envelopes]
        try:
            self._runner.run(asyncio.wait_for(self._queue.addBulk(jobs), self.timeout))
        except asyncio.TimeoutError:
            raise EventDeliveryError(f"the BullMQ queue did not answer within {self.timeout:g} s") from None
        except Exception as error:  # noqa: BLE001  (Redis's errors, and bullmq's own: e.g. a Redis too old)
            why = clean(str(error)) or type(error).__name__
            raise EventDeliveryError(f"the BullMQ queue could not take the events: {why}") from None
