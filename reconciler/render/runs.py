"""The runs chain as ``audit runs`` prints it: JSON, or one block per run."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC

from reconciler.core.runs import ACTIONS, Run, who_applied
from reconciler.core.text import clean


def render_json(found: Iterable[Run]) -> str:
    """Runs as a JSON array (every column)."""
    return json.dumps([run.to_json() for run in found], indent=2, ensure_ascii=False) + "\n"


def render_text(found: Iterable[Run]) -> str:
    """Runs as blocks: when, outcome, who applied (with the CI run), what, and the entries it wrote."""
    blocks = [_block(run) for run in found]
    return "\n".join(blocks) if blocks else "No runs.\n"


def _block(run: Run) -> str:
    when = (run.finished_at or run.started_at).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    number = f"run {run.seq}" if run.seq is not None else "run (before the runs chain)"
    lines = [f"{number}  {when}  {clean(run.outcome)}  {clean(run.run_id)}, source {clean(run.source)}",
             f"  applier   {who_applied(run.applier, run.applied_by)}"]
    if run.ci_url:
        lines.append(f"  ci        {clean(run.ci_url)}")
    if run.command:
        lines.append(f"  command   {clean(run.command)}")
    commit = clean(run.commit_sha[:12]) if run.commit_sha else "no commit"
    lines.append(f"  commit    {commit}, plan digest {clean(run.plan_digest or 'none')}")
    counts = ", ".join(f"{int(run.counts.get(a, 0))} {a}" for a in ACTIONS if run.counts.get(a))
    if run.entries is not None:
        last = (run.first_entry or 0) + run.entries - 1
        span = ("" if not run.entries or run.first_entry is None else f" (entry {last})" if run.entries == 1
                else f" (entries {run.first_entry}–{last})")
        counts = f"{counts or 'no change'}; {run.entries} audit entr{'y' if run.entries == 1 else 'ies'}{span}"
    lines.append(f"  changes   {counts or 'no change'}")
    if run.message:
        lines.append(f"  message   {clean(run.message)}")
    return "\n".join(lines) + "\n"


