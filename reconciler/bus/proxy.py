"""Platform events over HTTP, as ``@apphub/event-bus``'s proxy publisher sends them.

``packages/event-bus/src/httpPublisher.ts`` (``createEventProxyPublisher``): one
``POST`` of the envelope as JSON to the proxy URL as given, with
``Content-Type: application/json`` and, when ``APPHUB_EVENT_PROXY_TOKEN`` is set,
``Authorization: Bearer <token>``; any status outside 200–299 is a failure, whose
reason is the JSON body's ``error`` string when it has one.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from reconciler.core.text import clean
from reconciler.errors import EventDeliveryError


class ProxySender:
    """Posts envelopes one at a time, in order, to the event proxy at ``url``."""

    def __init__(self, url: str, token: str | None, timeout: float) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout
        # Redirects are not followed: a POST would be turned into a GET, and the event lost.
        self.opener = urllib.request.build_opener(_NoRedirect())

    def __enter__(self) -> ProxySender:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        return None

    def send(self, envelopes: Sequence[Mapping[str, Any]]) -> None:
        for sent, envelope in enumerate(envelopes):
            try:
                self._post(envelope)
            except EventDeliveryError as error:
                error.sent = sent
                raise

    def _post(self, envelope: Mapping[str, Any]) -> None:
        body = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as error:
            raise EventDeliveryError(f"the event proxy answered {error.code}: {_reason(error)}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            why = error.reason if isinstance(error, urllib.error.URLError) else error
            raise EventDeliveryError(f"the event proxy could not be reached: {clean(str(why))}") from None


def _reason(error: urllib.error.HTTPError) -> str:
    """The proxy's own reason (its JSON ``error``), else the status, as the publisher reports it."""
    try:
        found = json.loads(error.read().decode("utf-8", "replace"))
    except (ValueError, OSError):
        found = None
    reason = found.get("error") if isinstance(found, dict) else None
    if isinstance(reason, str) and reason.strip():
        return clean(reason.strip())
    return f"Event proxy responded with status {error.code}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> None:
        return None
