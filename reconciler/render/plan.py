"""Plans and apply results → text, markdown and JSON strings; never prints."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from reconciler.core import kinds, ops
from reconciler.core.plan import Plan
from reconciler.core.text import clean

NO_CHANGES: Final = "No changes. The catalog matches the manifests."
PURGE_TITLE: Final = "Destructive changes (need --allow-purge):"
VALUE_LIMIT: Final = 200  # longest single value shown; longer ones end in "…"
UNMANAGED_SHOWN: Final = 10
FOLD_ABOVE: Final = 20  # markdown groups longer than this fold into <details>
MARKDOWN_ROWS: Final = 20  # field lines per change in markdown before "… n more"
# A run of more than LONG_RUN changes of one kind and action is not read change by change:
# without --full, text and markdown show its first RUN_SHOWN and say how many more there are.
LONG_RUN: Final = 50
RUN_SHOWN: Final = 20
FULL_POINTER: Final = "--full prints them all; --format json lists them all"
MD_FULL_POINTER: Final = "`--full` prints them all; `--format json` lists them all"

_RESET = "\x1b[0m"
_BOLD, _GREEN, _YELLOW, _RED, _BOLD_RED, _CYAN = (
    "\x1b[1m", "\x1b[32m", "\x1b[33m", "\x1b[31m", "\x1b[1;31m", "\x1b[36m")
_PAD = "      "
_MISSING: Final = object()
_ABSENT, _REMOVED = "(absent)", "(removed)"
_MARKERS: Final = frozenset({_ABSENT, _REMOVED})
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~#])")


@dataclass(frozen=True)
class _Look:
    """How one operation shows: its symbol and its colour."""

    symbol: str
    ansi: str


# One look per operation (core/ops.py); the past tense apply reports is the operation's own.
_LOOKS: Final[Mapping[type[ops.Operation], _Look]] = {
    ops.Create: _Look("+", _GREEN),
    ops.Update: _Look("~", _YELLOW),
    ops.Rename: _Look("»", _YELLOW),
    ops.Archive: _Look("-", _RED),
    ops.Restore: _Look("↺", _CYAN),
    ops.Purge: _Look("!", _BOLD_RED),
}
_UNKNOWN_LOOK = _Look("?", _BOLD)
_DONE_STYLE: Final = {op.done: look.ansi for op, look in _LOOKS.items()}


def _op(change: Mapping[str, Any]) -> type[ops.Operation] | None:
    """The operation of a change of the plan's JSON (None for a word no operation has)."""
    return ops.named(str(change.get("action", "")))


def _deletes(change: Mapping[str, Any]) -> bool:
    op = _op(change)
    return op is not None and op.deletes


@dataclass(frozen=True)
class _Row:
    """One line under a change: ``label: new`` (``old`` None) or ``label: old → new``."""

    label: str
    old: str | None
    new: str


# ---------------------------------------------------------------------------------------------
# Shared pieces: values, positions, authors, field changes


def _cap(text: str) -> str:
    return text if len(text) <= VALUE_LIMIT else text[: VALUE_LIMIT - 1] + "…"


def _value(value: Any) -> str:
    """A value as JSON (``"text"``, ``5``, ``true``, ``null``, ``{...}``), capped in length."""
    return _cap(clean(json.dumps(value, ensure_ascii=False, default=str)))


def _where(source: Mapping[str, Any] | None) -> str | None:
    return f"{clean(source['path'])}:{source['line']}" if source else None


_REASON_WORDS: Final = {"drift": "reverts a change made outside git", "secret": "a secret's value changed",
                         "adoption": "adopts an object the catalog already had"}


def _author(change: Mapping[str, Any]) -> str:
    """Who the change is attributed to: ``Name <email>, commit abc1234`` for a change a commit
    asked for; otherwise whoever applies, why, and the commit that declares the value."""
    author = change.get("author") or {}
    name, email = author.get("name"), author.get("email")
    who = clean(f"{name} <{email}>" if email else name) if name and name != "unknown" else ""
    commit = author.get("commit")
    if author.get("uncommitted"):
        return f"{who} (uncommitted)" if who else "uncommitted"
    if author.get("applier"):
        why = _REASON_WORDS.get(str(change.get("reason")), "no commit asked for it")
        declared = f"; value declared in commit {clean(commit)[:7]}" if commit else ""
        return f"whoever applies ({why}{declared})"
    return f"{who or 'unknown'}, commit {clean(commit)[:7]}" if commit else (who or "unknown")


def _lookup(node: Any, rest: str) -> Any:
    """Follow a changed path (``metadata.iam.readScopes[0]``) into a value; _MISSING if absent."""
    if not rest:
        return node
    index = re.match(r"\[(\d+)\]", rest)
    if index and isinstance(node, list):
        position = int(index.group(1))
        return _lookup(node[position], rest[index.end():]) if position < len(node) else _MISSING
    rest = rest.removeprefix(".")
    if isinstance(node, Mapping):
        # Longest key first: a key may itself contain "." or "[".
        for key in sorted((k for k in node if isinstance(k, str)), key=len, reverse=True):
            if rest == key or rest.startswith((key + ".", key + "[")):
                found = _lookup(node[key], rest[len(key):])
                if found is not _MISSING:
                    return found
    return _MISSING


def _field_of(path: str, fields: Sequence[str]) -> str:
    for name in fields:
        if path == name or path.startswith((name + ".", name + "[")):
            return name
    return path


def _changed_rows(change: Mapping[str, Any]) -> list[_Row]:
    """Each changed path old → new, from the masked ``before``/``after`` of the change JSON."""
    before, after = change.get("before") or {}, change.get("after") or {}
    fields = list(change.get("fields") or [])
    rows: list[_Row] = []
    whole: set[str] = set()
    for path in change.get("paths") or []:
        old, new = _lookup(before, path), _lookup(after, path)
        if old is _MISSING and new is _MISSING:  # a key deepdiff spells ambiguously: show the field
            path = _field_of(path, fields)
            if path in whole:
                continue
            whole.add(path)
            old, new = before.get(path), after.get(path)
        rows.append(_Row(_cap(clean(path)), _ABSENT if old is _MISSING else _value(old),
                         _REMOVED if new is _MISSING else _value(new)))
    if "protect" in fields:
        protect = bool(change.get("protect"))
        rows.append(_Row("protect", _value(not protect), _value(protect)))
    return rows


def _says_something(quiet: Mapping[str, Any], name: str, value: Any) -> bool:
    if value is None or value == "" or value == {} or value == []:
        return False
    return not (name in quiet and type(value) is type(quiet[name]) and value == quiet[name])


def _created_rows(change: Mapping[str, Any]) -> list[_Row]:
    """A new object's fields that say something, one row each: not empty, not the default."""
    after = change.get("after") or {}
    # Values a new object takes unless its manifest says otherwise (its kind's defaults: every
    # new record is not deleted, every new dataset active) say nothing on a create.
    spec = kinds.BY_NAME.get(str(change.get("kind")))
    quiet = spec.defaults if spec is not None else {}
    return [_Row(clean(name), None, _value(value)) for name, value in after.items()
            if _says_something(quiet, name, value)]


def _no_rows(change: Mapping[str, Any]) -> list[_Row]:
    return []


_BODIES: Final[Mapping[type[ops.Operation], Callable[[Mapping[str, Any]], list[_Row]]]] = {
    ops.Create: _created_rows, ops.Update: _changed_rows, ops.Rename: _changed_rows, ops.Archive: _changed_rows,
    ops.Restore: _changed_rows, ops.Purge: _no_rows,
}


def _rows(change: Mapping[str, Any]) -> list[_Row]:
    op = _op(change)
    return (_BODIES.get(op, _changed_rows) if op is not None else _changed_rows)(change)


def _named(change: Mapping[str, Any]) -> str:
    """The change's address; a rename's as ``dataset:old → dataset:new``."""
    renamed = change.get("from")
    return f"{renamed} → {change['address']}" if renamed else str(change["address"])


def _source_text(change: Mapping[str, Any]) -> tuple[str, str]:
    """Where the change comes from, and a remark: how a declaration went away (its file
    deleted or moved out of the tree, or the object removed from a file that is still
    there), or that there is none."""
    where = _where(change.get("source"))
    removal = change.get("removal")
    if where is None:
        return "", "no manifest"
    if change.get("desired") is not None:
        return where, ""
    if removal is None:
        return where, "no longer declared"
    commit = clean(removal["commit"])[:7]
    if removal.get("moved_to"):
        return where, f"moved to {clean(removal['moved_to'])} in {commit}"
    if removal.get("file_removed"):
        return where, f"manifest removed in {commit}"
    return where, f"removed from {clean(removal['path'])} in {commit}"


def _closing(data: Mapping[str, Any]) -> str:
    """The plan's last line; zero counts rather than "no changes" when errors block the plan."""
    summary = data["summary"]
    errors = any(f["severity"] == "error" for f in data["findings"])
    if not any(summary.get(a, 0) for a in ops.NAMES) and not errors:
        return NO_CHANGES
    return "Plan: " + ", ".join(f"{summary.get(op.name, 0)} to {op.name}" for op in _counted(summary)) + "."


def _counted(summary: Mapping[str, Any]) -> list[type[ops.Operation]]:
    """The operations a closing count names: every one always counted, the others when some are planned."""
    return [op for op in ops.OPERATIONS if op.counted or summary.get(op.name, 0)]


def _by_severity(data: Mapping[str, Any], severity: str) -> list[Mapping[str, Any]]:
    return [f for f in data["findings"] if f["severity"] == severity]


def _drift_by_address(data: Mapping[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for finding in _by_severity(data, "drift"):
        out.setdefault(finding["address"], []).append(finding["message"])
    return out


def _finding_line(finding: Mapping[str, Any]) -> str:
    where = _where(finding.get("source"))
    text = f"{clean(finding['address'])}: " if finding["address"] else ""
    return text + clean(finding["message"]) + (f" ({where})" if where else "")


def _plural(count: int, one: str, many: str) -> str:
    return f"{count:,} {one if count == 1 else many}"


def _unmanaged_sentence(count: int) -> str:
    verb = "is" if count == 1 else "are"
    return f"{_plural(count, 'unmanaged object', 'unmanaged objects')} in the catalog {verb} left alone"


# ---------------------------------------------------------------------------------------------
# Text


class _Paint:
    """ANSI colour when asked for, plain text otherwise."""

    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, text: str, ansi: str) -> str:
        return f"{ansi}{text}{_RESET}" if self.color and ansi else text


def render_text(plan: Plan, *, color: bool = False, full: bool = False) -> str:
    """The plan for a terminal, Terraform-like; secrets masked exactly as in a saved plan.

    Without ``full``, a run of more than LONG_RUN changes of one kind and action shows its
    first RUN_SHOWN and a line saying how many more there are; purges, changes that carry a
    drift warning, findings and the summary are always shown whole.
    """
    data = plan.to_json()
    paint = _Paint(color)
    drift = _drift_by_address(data)
    changes = data["changes"]
    lines = [_text_header(data)]
    lines += _text_changes([c for c in changes if not _deletes(c)], drift, paint, full)
    purges = [c for c in changes if _deletes(c)]
    if purges:
        lines += ["", paint(PURGE_TITLE, _BOLD_RED)]
        for change in purges:
            lines += ["", *_text_change(change, drift, paint)]
    lines += _text_bookkeeping(data)
    if data["unmanaged"]:
        lines += ["", _unmanaged_sentence(len(data["unmanaged"])) + ":"]
        lines += [f"    {clean(a)}" for a in data["unmanaged"][:UNMANAGED_SHOWN]]
        if len(data["unmanaged"]) > UNMANAGED_SHOWN:
            lines.append(f"    … and {len(data['unmanaged']) - UNMANAGED_SHOWN:,} more "
                         "(--format json lists them all)")
    planned = {c["address"] for c in changes}
    orphans = [f for f in _by_severity(data, "drift") if f["address"] not in planned]
    for title, found, ansi in (("Drift:", orphans, _YELLOW), ("Notes:", _by_severity(data, "note"), ""),
                               ("Errors:", _by_severity(data, "error"), _RED)):
        if found:
            lines += ["", paint(title, ansi + _BOLD if ansi else "")]
            lines += [paint(f"  - {_finding_line(f)}", ansi) for f in found]
    lines += ["", paint(_closing(data), _BOLD)]
    return "\n".join(lines) + "\n"


def _long_runs(changes: Sequence[Mapping[str, Any]], full: bool) -> dict[tuple[str, str], int]:
    """How many changes each (kind, action) run that folds holds; nothing with ``full``."""
    if full:
        return {}
    counts: dict[tuple[str, str], int] = {}
    for change in changes:
        run = (change["kind"], change["action"])
        counts[run] = counts.get(run, 0) + 1
    return {run: count for run, count in counts.items() if count > LONG_RUN}


def _folded_line(kind: str, action: str, hidden: int) -> str:
    spec = kinds.BY_NAME.get(kind)
    one, many = (spec.noun, spec.plural) if spec is not None else (kind, kind)
    return f"  … {_plural(hidden, 'more ' + one, 'more ' + many)} to {action} not shown ({FULL_POINTER})"


def _text_changes(changes: Sequence[Mapping[str, Any]], drift: Mapping[str, list[str]], paint: _Paint,
                  full: bool) -> list[str]:
    """Every change but purges, long runs folded; the fold lines follow the last change of their kind."""
    folding = _long_runs(changes, full)
    hidden: dict[tuple[str, str], int] = dict.fromkeys(folding, 0)
    shown = dict(hidden)
    last_of_kind = {change["kind"]: index for index, change in enumerate(changes)}
    lines: list[str] = []
    for index, change in enumerate(changes):
        run = (change["kind"], change["action"])
        if run not in folding:
            lines += ["", *_text_change(change, drift, paint)]
        elif change["address"] in drift or shown[run] < RUN_SHOWN:
            lines += ["", *_text_change(change, drift, paint)]
            shown[run] += 1
        else:
            hidden[run] += 1
        if last_of_kind[change["kind"]] == index:
            for action in ops.NAMES:
                count = hidden.get((change["kind"], action), 0)
                if count:
                    lines += ["", _folded_line(change["kind"], action, count)]
    return lines


def _text_header(data: Mapping[str, Any]) -> str:
    commit = data.get("commit")
    line = f'Plan for source "{clean(data["source"])}" ' + (
        f"at commit {clean(commit)[:7]}" if commit else "(no commit)")
    if data.get("dirty"):
        line += " (the working tree has uncommitted changes)"
    if data.get("digest"):
        line += f"\nPlan digest: {clean(data['digest'])}"
    if data.get("attribution_problem"):
        line += f"\nAttribution impossible: {clean(data['attribution_problem'])}; apply refuses this plan"
    targets = data.get("targets") or []
    if targets:
        shown = ", ".join(clean(t) for t in targets[:UNMANAGED_SHOWN])
        more = f", … and {len(targets) - UNMANAGED_SHOWN:,} more" if len(targets) > UNMANAGED_SHOWN else ""
        line += f"\nLimited to --target: {shown}{more}"
    return line


def _text_change(change: Mapping[str, Any], drift: Mapping[str, list[str]], paint: _Paint) -> list[str]:
    op = _op(change)
    look = _LOOKS.get(op, _UNKNOWN_LOOK) if op is not None else _UNKNOWN_LOOK
    flags = clean(change["action"]) + (", protected" if change.get("protect") else "")
    where, remark = _source_text(change)
    lines = [paint(f"  {look.symbol} {clean(_named(change))} ({flags})", look.ansi),
             f"{_PAD}source: " + " ".join(filter(None, (where, f"({remark})" if remark else ""))),
             f"{_PAD}author: {_author(change)}"]
    if _deletes(change):
        lines.append(paint(f"{_PAD}deleted permanently from the catalog; this cannot be undone", _BOLD_RED))
    lines += [f"{_PAD}{row.label}: " + (row.new if row.old is None else f"{row.old} → {row.new}")
              for row in _rows(change)]
    lines += [paint(f"{_PAD}! drift: {clean(message)}", _YELLOW) for message in drift.get(change["address"], [])]
    return lines


def _text_bookkeeping(data: Mapping[str, Any]) -> list[str]:
    adopted = [b["address"] for b in data["bookkeeping"] if b["reason"] == "adopt"]
    refreshed = len(data["bookkeeping"]) - len(adopted)
    lines: list[str] = []
    if adopted:
        count = _plural(len(adopted), "object", "objects")
        lines += ["", f"Adopted as they are (no catalog change; the reconciler starts managing {count}):"]
        lines += [f"  = {clean(a)}" for a in adopted[:UNMANAGED_SHOWN]]
        if len(adopted) > UNMANAGED_SHOWN:
            lines.append(f"    … and {len(adopted) - UNMANAGED_SHOWN:,} more")
    if refreshed:
        count = _plural(refreshed, "object", "objects")
        lines += ["", f"Refreshed in the reconciler's own records only (no catalog change): {count}."]
    return lines


# ---------------------------------------------------------------------------------------------
# JSON


def render_json(plan: Plan) -> str:
    """The plan as its documented JSON (schemas/plan.schema.json), as ``--out`` saves it."""
    return json.dumps(plan.to_json(), indent=2, sort_keys=False, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------------------------
# Markdown


def _code(text: str) -> str:
    """Inline code that survives backticks inside the text."""
    text = clean(text)
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _md_value(shown: str) -> str:
    """A rendered value as code; the markers ``(absent)``/``(removed)`` (never JSON) in italics."""
    return f"_{shown}_" if shown in _MARKERS else _code(shown)


def _md(text: str) -> str:
    """Free text with markdown and HTML neutralised."""
    text = clean(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


@dataclass
class _Group:
    """One markdown section, filled item by item within the size budget, in priority order."""

    priority: int
    heading: str
    items: list[str]
    counts_as: str = ""  # "changes" | "findings": hidden items named in the closing note
    intro: str = ""
    kind_heading: str = ""  # shown once, before the first group of its kind that is shown
    fold_label: str = ""
    total: int | None = None  # how many there are, when ``items`` lists only the first few
    pointer: str = ""  # after "… n more not shown", where the rest can be seen
    shown: int = 0
    included: bool = False

    @property
    def count(self) -> int:
        """How many items the group stands for, shown or not."""
        return len(self.items) if self.total is None else self.total

    def render(self, shown: int, with_kind: bool) -> str:
        parts = [self.kind_heading] if with_kind and self.kind_heading else []
        parts.append(self.heading)
        if self.intro:
            parts.append(self.intro)
        bullets = "\n".join(self.items[:shown])
        hidden = self.count - shown
        if hidden > 0 and self.items:
            bullets += f"\n- _… {hidden:,} more not shown_" + (f" ({self.pointer})" if self.pointer else "")
        if len(self.items) > FOLD_ABOVE:
            bullets = f"<details><summary>{self.fold_label}</summary>\n\n{bullets.strip()}\n\n</details>"
        if bullets.strip():
            parts.append(bullets.strip("\n"))
        return "\n\n".join(parts)

    def overhead(self) -> int:
        """An upper bound of everything but the items themselves."""
        return len(self.render(0, with_kind=True)) + 2


def render_markdown(plan: Plan, *, limit: int = 60_000, full_plan_hint: str = "the JSON plan artifact",
                    ui_base_url: str | None = None, full: bool = False) -> str:
    """The plan for a pull-request comment, always shorter than ``limit`` characters.

    The summary table, errors and purges are kept whole first; other lists are cut
    when the budget runs out, and a closing note points to ``full_plan_hint``. With
    ``ui_base_url``, datasets and the cross-links of records (``datasetSlug``,
    ``assetId``) link to their pages in the platform's UI. Without ``full``, a run of
    more than LONG_RUN changes of one kind and action lists its first RUN_SHOWN (and
    every one that carries drift) before the budget is shared out.
    """
    data = plan.to_json()
    head, foot = _md_head(data), f"**{_closing(data)}**"
    groups = _md_groups(data, ui_base_url, full)
    totals = {kind: sum(g.count for g in groups if g.counts_as == kind) for kind in ("changes", "findings")}
    reserve = len(_md_note(totals["changes"], totals["findings"], full_plan_hint)) + 4
    budget = limit - 1 - len(head) - len(foot) - reserve - 4
    for group in sorted(groups, key=lambda g: g.priority):
        first = len(group.items[0]) + 1 if group.items else 0
        if group.overhead() + first > budget:
            continue
        budget -= group.overhead()
        group.included = True
        for item in group.items:
            if len(item) + 1 > budget:
                break
            budget -= len(item) + 1
            group.shown += 1
    parts, kinds_shown = [head], set()
    for group in groups:
        if group.included:
            parts.append(group.render(group.shown, with_kind=group.kind_heading not in kinds_shown))
            kinds_shown.add(group.kind_heading)
    parts.append(foot)
    hidden = {kind: sum(g.count - g.shown for g in groups if g.counts_as == kind)
              for kind in ("changes", "findings")}
    if any(hidden.values()):
        parts.append(_md_note(hidden["changes"], hidden["findings"], full_plan_hint))
    out = "\n\n".join(parts) + "\n"
    return out if len(out) < limit else out[: max(limit - 2, 0)] + "\n"  # safety net: huge hint


def _md_note(changes: int, findings: int, hint: str) -> str:
    what = [_plural(n, f"more {one}", f"more {many}") for n, one, many in
            ((changes, "change", "changes"), (findings, "finding", "findings")) if n]
    return f"… {' and '.join(what)} not shown; see the full plan in {hint}."


def _md_head(data: Mapping[str, Any]) -> str:
    facts = [f"Source {_code(data['source'])}",
             f"commit {_code(data['commit'][:7])}" if data.get("commit") else "no commit"]
    if data.get("dirty"):
        facts.append("⚠️ computed from a working tree with uncommitted changes")
    if data.get("targets"):
        facts.append(f"limited to {_plural(len(data['targets']), 'target', 'targets')} (`--target`)")
    if data.get("attribution_problem"):
        facts.append(f"⚠️ attribution impossible: {_md(data['attribution_problem'])}; apply refuses this plan")
    if data.get("digest"):
        facts.append(f"plan digest {_code(data['digest'])}")
    table = ["| action | count |", "| --- | ---: |"]
    table += [f"| {op.name} | {data['summary'].get(op.name, 0)} |" for op in _counted(data["summary"])]
    return "## Reconciler plan\n\n" + " · ".join(facts) + "\n\n" + "\n".join(table)


def _md_links(change: Mapping[str, Any], base: str | None) -> str | None:
    """Links to the platform UI, as the change's kind names them (``KindSpec.ui_links``): the
    dataset itself, or a record's datasetSlug and assetId."""
    spec = kinds.BY_NAME.get(change["kind"])
    if not base or spec is None:
        return None
    fields = change.get("after") or change.get("before") or {}
    links = [f"[{label} {_md(value)}]({base}/{path}/{quote(value, safe='')})"
             for label, value, path in spec.ui_links(change["address"].split(":", 1)[1], fields)]
    return "  - links: " + " · ".join(links) if links else None


def _md_change(change: Mapping[str, Any], drift: Mapping[str, list[str]], base: str | None = None) -> str:
    where, remark = _source_text(change)
    flags = f"**{_md(change['action'])}**" + (" (protected)" if change.get("protect") else "")
    place = " ".join(filter(None, (_code(where) if where else "", f"({_md(remark)})" if remark else "")))
    lines = [f"- {_code(_named(change))} {flags} · {place} · {_md(_author(change))}"]
    rows = _rows(change)
    for row in rows[:MARKDOWN_ROWS]:
        shown = _md_value(row.new) if row.old is None else f"{_md_value(row.old)} → {_md_value(row.new)}"
        lines.append(f"  - {_code(row.label)}: {shown}")
    if len(rows) > MARKDOWN_ROWS:
        lines.append(f"  - … {len(rows) - MARKDOWN_ROWS:,} more fields (see the JSON plan)")
    lines += [f"  - ⚠️ drift: {_md(message)}" for message in drift.get(change["address"], [])]
    link = _md_links(change, base)
    if link:
        lines.append(link)
    return "\n".join(lines)


def _md_finding(finding: Mapping[str, Any], marker: str) -> str:
    where = _where(finding.get("source"))
    address = f"{_code(finding['address'])}: " if finding["address"] else ""
    return f"- {marker}{address}{_md(finding['message'])}" + (f" ({_code(where)})" if where else "")


def _md_groups(data: Mapping[str, Any], base: str | None = None, full: bool = True) -> list[_Group]:
    """Every section in display order; priority decides what the size budget keeps first."""
    drift = _drift_by_address(data)
    errors, drifts, notes = (_by_severity(data, s) for s in ("error", "drift", "note"))
    purges = [c for c in data["changes"] if _deletes(c)]
    groups = [
        _Group(1, f"### ❌ Errors ({len(errors):,})", [_md_finding(f, "❌ ") for f in errors], "findings",
               "Apply refuses this plan until these are fixed.", fold_label=f"{len(errors):,} errors"),
        _Group(3, f"### ⚠️ Drift ({len(drifts):,})", [_md_finding(f, "⚠️ ") for f in drifts], "findings",
               "Changed in the catalog outside git; apply records each change, then reverts it "
               "(or adopts it, where the tree now declares the same value).", fold_label=f"{len(drifts):,} drifted"),
        _Group(2, f"### 🛑 Destructive changes ({len(purges):,}) — need `--allow-purge`",
               [_md_change(c, drift, base) for c in purges], "changes",
               "> 🛑 These objects are **deleted permanently**. `apply` refuses them "
               "without `--allow-purge`.", fold_label=f"{len(purges):,} purges"),
    ]
    for spec in kinds.REGISTRY:
        of_kind = [c for c in data["changes"] if c["kind"] == spec.name and not _deletes(c)]
        for action in (op.name for op in ops.OPERATIONS if not op.deletes):
            run = [c for c in of_kind if c["action"] == action]
            count, folded = len(run), not full and len(run) > LONG_RUN
            if folded:
                run = [c for index, c in enumerate(run) if index < RUN_SHOWN or c["address"] in drift]
            groups.append(_Group(4, f"#### {action} ({count:,})", [_md_change(c, drift, base) for c in run],
                                 "changes", kind_heading=f"### {spec.title} ({len(of_kind):,})",
                                 fold_label=f"{count:,} to {action}", total=count if folded else None,
                                 pointer=MD_FULL_POINTER if folded else ""))
    unmanaged = data["unmanaged"]
    adopted = [b["address"] for b in data["bookkeeping"] if b["reason"] == "adopt"]
    groups += [
        _Group(5, f"### Notes ({len(notes):,})", [_md_finding(f, "") for f in notes], "findings",
               fold_label=f"{len(notes):,} notes"),
        _Group(6, f"### Unmanaged ({len(unmanaged):,})", [f"- {_code(a)}" for a in unmanaged[:UNMANAGED_SHOWN]],
               intro=_md(_unmanaged_sentence(len(unmanaged))) + "." + (
                   " The JSON plan lists them all." if len(unmanaged) > UNMANAGED_SHOWN else ""),
               total=len(unmanaged)),
        _Group(7, f"### Adopted without changes ({len(adopted):,})",
               [f"- {_code(a)}" for a in adopted[:UNMANAGED_SHOWN]],
               intro="Already match their manifests; the reconciler starts managing them.", total=len(adopted)),
    ]
    return [g for g in groups if g.items]


# ---------------------------------------------------------------------------------------------
# Apply results


def render_apply_result(result: Mapping[str, Any], *, color: bool = False, full: bool = False) -> str:
    """What an apply did: one line per object, then ``Apply complete: …``.

    ``result`` is ``{"run_id", "outcome", "summary": {action: count}, "objects": [...]}``.
    Without ``full``, an action done to more than LONG_RUN objects lists its first
    RUN_SHOWN, then how many more.
    """
    paint = _Paint(color)
    objects = list(result.get("objects") or [])
    per_action: dict[Any, int] = {}
    for o in objects:
        per_action[o.get("action")] = per_action.get(o.get("action"), 0) + 1
    folding = {action for action, count in per_action.items() if count > LONG_RUN and not full}
    shown: dict[Any, int] = {}
    lines = []
    for o in objects:
        action = o.get("action")
        if action in folding and shown.get(action, 0) >= RUN_SHOWN:
            continue
        shown[action] = shown.get(action, 0) + 1
        lines.append(paint(f"{clean(o.get('outcome'))} {clean(_named(o))}", _DONE_STYLE.get(o.get("outcome"), "")))
    for action in (a for a in dict.fromkeys([*ops.NAMES, *per_action]) if a in folding):
        op = ops.named(str(action))
        done = op.done if op is not None else clean(str(action))
        lines.append(f"… {per_action[action] - RUN_SHOWN:,} more {done} not shown ({FULL_POINTER})")
    summary = result.get("summary")
    if not summary:
        summary = {a: sum(1 for o in objects if o.get("action") == a) for a in ops.NAMES}
    if result.get("run_id"):
        outcome = f" ({clean(result['outcome'])})" if result.get("outcome") else ""
        lines.append(f"Run {clean(result['run_id'])}{outcome}")
    counts = [(int(summary.get(op.name, 0)), op.done) for op in _counted(summary)]
    closing = ("Apply complete: " + ", ".join(f"{n} {done}" for n, done in counts) + "."
               if any(n for n, _ in counts) else "Apply complete: nothing to do.")
    lines.append(paint(closing, _BOLD))
    return "\n".join(lines) + "\n"


def render_apply_result_json(result: Mapping[str, Any]) -> str:
    """The apply result as JSON, for CI."""
    return json.dumps(dict(result), indent=2, ensure_ascii=False, default=str) + "\n"
