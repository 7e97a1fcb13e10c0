"""Pending platform events as ``reconciler events`` prints them: a line each, or JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence

from reconciler.core.events import QueuedEvent, envelope, js_iso
from reconciler.core.events import counted as _events
from reconciler.core.text import clean


def render_text(events: Sequence[QueuedEvent], total: int) -> str:
    """Pending events, one line each: seq, id, type, the record, run, queued, attempts, last error."""
    if not total:
        return "No platform events are pending.\n"
    lines = []
    for e in events:
        payload = e.payload
        what = f"record:{payload.get('namespace')}/{payload.get('key')}"
        mode = f" ({payload['mode']})" if payload.get("mode") else ""
        tried = f", {e.attempts} attempt(s), last error: {e.last_error}" if e.attempts else ""
        lines.append(clean(f"{e.seq} {e.id} {e.type}{mode} {what} run {e.run_id} queued {js_iso(e.queued_at)}{tried}"))
    shown = f" (the oldest {len(events)} shown)" if len(events) < total else ""
    lines.append(f"{_events(total)} pending{shown}; `reconciler events --deliver` sends them.")
    return "\n".join(lines) + "\n"


def render_json(events: Sequence[QueuedEvent], total: int) -> str:
    """Pending events as JSON: each with its envelope as it will be sent, and its delivery so far."""
    rows = [{"seq": e.seq, "envelope": envelope(e), "queued_at": js_iso(e.queued_at), "attempts": e.attempts,
             "last_error": e.last_error} for e in events]
    return json.dumps({"pending": total, "events": rows}, indent=2, ensure_ascii=False) + "\n"
