"""Saved plans: reading a plan file (checked against its JSON Schema) and deriving it again from
git and the catalog before it is applied, so that nothing in the file is trusted."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from reconciler.app.planning import make_plan
from reconciler.app.workspace import Workspace
from reconciler.core.plan import FORMAT_VERSION, Plan, with_kinds
from reconciler.core.text import clean
from reconciler.errors import ConfigurationError, ConflictError, Refusal

def rederive(ws: Workspace, saved: Plan, *, environ: Mapping[str, str] | None = None,
             require_signed: bool = False, written: Mapping[str, Any] | None = None) -> Plan:
    """The plan a saved plan stands for, computed again — from the tree at the saved plan's
    commit (read from git, wherever HEAD is now) and the catalog as it is now — and returned
    only if it equals the saved plan change for change. Nothing in the file is trusted:
    protection, ownership, purge flags and authors all come from the catalog and git."""
    where = f"commit {saved.commit[:12]}" if saved.commit else "no commit"
    if saved.source != ws.source:
        raise Refusal(f"the plan is for source {saved.source!r} but this repository is source {ws.source!r}")
    if ws.repo is None or saved.commit is None:
        raise Refusal("a saved plan can only be applied from a commit of a git repository; this one was made "
                      "from " + ("no commit" if saved.commit is None else "a tree outside git"))
    if saved.dirty or saved.uncommitted:
        raise Refusal("the saved plan was made from a working tree with uncommitted changes, which git does not "
                      "hold; commit them, then plan --out again")
    if not ws.repo.commit_exists(saved.commit) or len(saved.commit) < 40:
        raise Refusal(f"the saved plan's {where} is not in this repository; fetch it (git fetch) or plan again")
    tree = ws.repo.relative(ws.tree)
    if saved.tree is not None and saved.tree != tree:
        raise Refusal(f"the saved plan is for the tree {clean(saved.tree)!r}, not {clean(tree)!r}; run apply with "
                      "that tree as PATH")
    derived = make_plan(ws, targets=saved.targets, environ=environ, require_signed=require_signed,
                        at_commit=saved.commit)
    moved = _moved_since(saved, derived)
    if moved:
        raise ConflictError("the catalog changed since the plan was made; nothing was applied:\n  "
                            + "\n  ".join(clean(line) for line in moved) + "\nrun plan again and review the new plan")
    differences = plan_differences(written if written is not None else saved.to_json(), derived)
    if differences:
        shown = differences[:20] + ([f"… and {len(differences) - 20} more"] if len(differences) > 20 else [])
        raise Refusal(f"the saved plan is not what the tree at {where} and the catalog give now; nothing was "
                      "written:\n  " + "\n  ".join(clean(d) for d in shown) + "\nmake a new plan and review it")
    # What only informs (when it was made, notes, unmanaged objects) is the reviewed file's, so
    # the audit log names the reviewed plan by its own digest.
    return replace(derived, created_at=saved.created_at, findings=saved.findings, unmanaged=saved.unmanaged)


def _moved_since(saved: Plan, derived: Plan) -> list[str]:
    """Objects the saved plan changes whose catalog version has moved since (a stale plan)."""
    now = {c.address: c.against for c in derived.changes}
    return [f"{c.address} changed since the plan (plan saw {c.against}, now {now[c.address]})"
            for c in saved.changes if c.address in now and now[c.address] != c.against]


# Parts of a plan that may differ between a plan and the same plan computed again: when it
# was computed, what it noticed in passing, and who ran it (not who asked for the changes).
_INCIDENTAL = ("created_at", "digest", "unmanaged", "findings")


def plan_differences(saved: Mapping[str, Any], derived: Plan) -> list[str]:
    """How a saved plan (its JSON, exactly as the file holds it) differs from the same plan
    derived again, one line per difference."""
    left, right = _comparable(saved), _comparable(derived.to_json(include_digest=False))
    out = [f"{key}: {json.dumps(left.get(key))} in the file, {json.dumps(right.get(key))} now"
           for key in sorted(set(left) | set(right)) if key not in ("changes", "bookkeeping")
           and left.get(key) != right.get(key)]
    for part in ("changes", "bookkeeping"):
        mine = {item["address"]: item for item in left.get(part, [])}
        theirs = {item["address"]: item for item in right.get(part, [])}
        for address in sorted(set(mine) | set(theirs)):
            if address not in theirs:
                out.append(f"{address}: in the file, but no such {'change' if part == 'changes' else 'entry'} now")
            elif address not in mine:
                out.append(f"{address}: planned now ({theirs[address].get('action') or 'bookkeeping'}), "
                           "but not in the file")
            elif mine[address] != theirs[address]:
                keys = sorted(k for k in set(mine[address]) | set(theirs[address])
                              if mine[address].get(k) != theirs[address].get(k))
                out.append(f"{address}: {', '.join(keys)} differ")
        if left.get(part) is not None and [i.get("address") for i in left[part]] != \
                [i.get("address") for i in right.get(part, [])] and not out:
            out.append(f"{part}: in another order")
    return out


def _comparable(plan: Mapping[str, Any]) -> dict[str, Any]:
    data = {k: v for k, v in plan.items() if k not in _INCIDENTAL}
    findings = plan.get("findings")
    data["errors"] = [f for f in findings if isinstance(f, Mapping) and f.get("severity") == "error"] \
        if isinstance(findings, list) else findings
    changes = []
    for change in data.get("changes") or []:
        if isinstance(change, Mapping) and isinstance(change.get("author"), Mapping):
            author = dict(change["author"])
            if author.get("applier") is True:  # whoever computed the plan; the apply names whoever applies
                author.pop("name", None)
                author.pop("email", None)
            change = {**change, "author": author}
        changes.append(change)
    data["changes"] = changes
    return data


def load_plan_file(path: Path) -> tuple[Plan, dict[str, Any]]:
    """Read a plan saved by ``plan --out``: the plan, and the JSON exactly as the file holds it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigurationError(f"cannot read plan file {path}: {error}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path} is not a reconciler plan")
    _check_plan_schema(path, data)
    return Plan.from_json(data), data


def plan_schema() -> dict[str, Any]:
    """The plan's JSON Schema: schemas/plan.schema.json with its kinds from the registry
    (``core.plan.with_kinds``), which is also what the committed file holds."""
    from reconciler.manifests.schema import schema_dirs

    for directory in schema_dirs():
        schema_file = directory / "plan.schema.json"
        if schema_file.is_file():
            return with_kinds(json.loads(schema_file.read_text(encoding="utf-8")))
    raise ConfigurationError("the plan's JSON Schema is missing from this installation; reinstall reconciler")


def render_plan_schema() -> str:
    """The plan's JSON Schema as the committed file holds it (regenerate the file with
    ``python -m reconciler.app.saved > schemas/plan.schema.json`` after adding a kind)."""
    return json.dumps(plan_schema(), indent=2, ensure_ascii=False) + "\n"


def _check_plan_schema(path: Path, data: Mapping[str, Any]) -> None:
    """Refuse a file the plan's JSON Schema does not accept, naming the first place it fails
    (an unknown action, a missing key, a value of the wrong type)."""
    import jsonschema

    if data.get("format_version") != FORMAT_VERSION:
        return  # Plan.from_json says which version it is and which one is read
    schema = plan_schema()
    problem = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(data))
    if problem is not None:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in problem.absolute_path).lstrip(".")
        raise ConfigurationError(f"{path} is not a reconciler plan: {clean(where or 'the top level')}: "
                                 f"{clean(problem.message[:300])}")


if __name__ == "__main__":
    import sys

    sys.stdout.write(render_plan_schema())
