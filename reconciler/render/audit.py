"""The audit log for people and tools: entries as text blocks or JSON, and exports to Parquet or CSV."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from reconciler.core import runs as run_chain
from reconciler.core.chain import canonical, plain
from reconciler.core.text import clean

if TYPE_CHECKING:
    from reconciler.core.audit import Entry

EXPORT_FORMATS = ("parquet", "csv")
# Longest value shown in ``audit log`` text; JSON output is never shortened.
VALUE_LIMIT = 200

# The export's columns and their DuckDB types.
EXPORT_TYPES = {
    "seq": "BIGINT", "recorded_at": "TIMESTAMPTZ", "run_id": "VARCHAR", "source": "VARCHAR",
    "address": "VARCHAR", "kind": "VARCHAR", "action": "VARCHAR", "before": "JSON", "after": "JSON",
    "fields": "VARCHAR[]", "commit_sha": "VARCHAR", "author_name": "VARCHAR", "author_email": "VARCHAR",
    "uncommitted": "BOOLEAN", "manifest_path": "VARCHAR", "manifest_line": "INTEGER", "applier": "VARCHAR",
    "plan_digest": "VARCHAR", "prev_hash": "VARCHAR", "hash": "VARCHAR", "reason": "VARCHAR",
    "commit_date": "TIMESTAMPTZ", "protect": "BOOLEAN", "merge_commit": "VARCHAR", "pull_request": "INTEGER", "ci_url": "VARCHAR",
    "applied_by": "JSON", "changed_at": "TIMESTAMPTZ", "evidence": "VARCHAR", "mac": "VARCHAR",
}


# --- listing ---------------------------------------------------------------------------------


def render_json(found: Iterable[Entry]) -> str:
    """Entries as a JSON array (every column, full values)."""
    return json.dumps([e.to_json() for e in found], indent=2, ensure_ascii=False) + "\n"


def render_text(found: Iterable[Entry]) -> str:
    """Entries as blocks: when, what, who asked (author, commit and how it reached the branch),
    who applied (and the CI run), the plan, and old → new."""
    blocks = [_block(entry) for entry in found]
    return "\n".join(blocks) if blocks else "No audit log entries.\n"


def _minute(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _block(entry: Entry) -> str:
    when = entry.recorded_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    reason = f" ({entry.reason})" if entry.reason and entry.reason != "manifest" else ""
    lines = [f"entry {entry.seq}  {when}  {entry.action} {clean(entry.address)}{reason}", _asked_line(entry)]
    if entry.commit_sha and entry.reason != "out-of-band":
        lines.append(f"  review    {_review(entry)}")
    lines.append(f"  applier   {run_chain.who_applied(entry.applier, entry.applied_by)}, {clean(entry.run_id)}, "
                 f"source {clean(entry.source)}")
    if entry.ci_url:
        lines.append(f"  ci        {clean(entry.ci_url)}")
    lines.append(f"  plan      {clean(entry.plan_digest)}")
    if entry.manifest_path:
        line = f":{entry.manifest_line}" if entry.manifest_line else ""
        lines.append(f"  manifest  {clean(entry.manifest_path)}{line}")
    lines += _changed_lines(entry)
    return "\n".join(lines) + "\n"


def _asked_line(entry: Entry) -> str:
    """Who the entry names: the commit's author, whoever applied, or who changed it outside git."""
    who = f"{clean(entry.author_name)}" + (f" <{clean(entry.author_email)}>" if entry.author_email
                                             and entry.author_email != entry.author_name else "")
    if entry.reason == "out-of-band":
        when = f" at {entry.changed_at.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S UTC')}" if entry.changed_at else ""
        source = f" ({clean(entry.evidence)})" if entry.evidence else ""
        return f"  by        {who}{when}, outside git{source}"
    commit = entry.commit_sha[:12] if entry.commit_sha else "no commit"
    if entry.uncommitted:
        commit += " (uncommitted)"
    elif entry.reason not in (None, "manifest") and entry.commit_sha:
        commit = f"value declared in {commit}"
    if entry.commit_date is not None and entry.reason in (None, "manifest", "adoption"):
        commit += f" of {_minute(entry.commit_date)}"
    label = "author" if entry.reason in (None, "manifest") and not entry.uncommitted else "by"
    return f"  {label:<9} {who}, {commit}"


def _review(entry: Entry) -> str:
    """How the entry's commit reached the branch, as recorded at apply."""
    request = f", pull request #{entry.pull_request}" if entry.pull_request is not None else ""
    if entry.merge_commit is None:
        return "not recorded" + request
    if entry.merge_commit == entry.commit_sha:
        return ("on the branch's first-parent line" + request if request
                else "pushed directly (no merge commit, no pull request)")
    return f"merged in {entry.merge_commit[:12]}{request}"


def _changed_lines(entry: Entry) -> list[str]:
    before, after = entry.before or {}, entry.after or {}
    names = entry.fields or tuple(sorted(set(before) | set(after)))
    label = "  changed   "
    lines = []
    for name in names:
        if name in before or name in after:
            old = _value(before[name]) if entry.before is not None and name in before else "(none)"
            new = _value(after[name]) if entry.after is not None and name in after else "(none)"
            lines.append(f"{label}{clean(name)}: {old} → {new}")
        else:
            lines.append(f"{label}{clean(name)}")
        label = " " * len(label)
    return lines


def _value(value: Any) -> str:
    text = clean(canonical(plain(value)))
    return text if len(text) <= VALUE_LIMIT else text[: VALUE_LIMIT - 1] + "…"
