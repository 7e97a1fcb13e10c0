"""The apply use case: refuse or execute a plan in one transaction under the source's lock,
with the audit log, the runs chain, the bookkeeping and the outbox of platform events
written in the same transaction, and the events delivered after its commit."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from reconciler.app import auditing as audit
from reconciler.app.events import Delivery, deliver_after_apply
from reconciler.core.runs import RunDraft
from reconciler.app.workspace import Workspace, actor_of, applier_identity, who_applies
from reconciler.bus import Bus, configured
from reconciler.catalog.port import ApplySession, Managed, RefusalReader, Write
from reconciler.core.chain import audit_key
from reconciler.core.checks import ApplyOptions, destructive_addresses, protection_tampered, refusals
from reconciler.core import ops
from reconciler.core.diff import Change, collector_paused
from reconciler.core.plan import Author, Plan, mask, walk_path
from reconciler.core.text import clean
from reconciler.errors import ConfigurationError, ConflictError, ReconcilerError, Refusal
from reconciler.git.repository import GitRepository
from reconciler.git.review import Review, reviews



@dataclass
class ApplyResult:
    """What an apply did: run id, outcome, per-object results, and how its platform events went."""

    run_id: str
    outcome: str
    objects: list[dict[str, str]] = field(default_factory=list)
    events: Delivery | None = None  # None: no event bus is configured

    @property
    def summary(self) -> dict[str, int]:
        """Objects per action (as the plan counts them: ``Plan.summary``)."""
        counts = Counter(o["action"] for o in self.objects)
        return {op.name: counts.get(op.name, 0) for op in ops.OPERATIONS if op.counted or counts.get(op.name)}

    def to_json(self) -> dict[str, Any]:
        """The machine-readable apply result."""
        out: dict[str, Any] = {"run_id": self.run_id, "outcome": self.outcome, "summary": self.summary,
                               "objects": self.objects}
        if self.events is not None:
            out["events"] = self.events.to_json()
        return out


def apply_plan(ws: Workspace, plan: Plan, options: ApplyOptions, *,
               environ: Mapping[str, str] | None = None,
               progress: Callable[[str], None] = lambda _: None,
               advance: Callable[[int, int], None] | None = None, command: str | None = None) -> ApplyResult:
    """Execute a plan in one transaction under the source's lock, or refuse with nothing written.

    Every change is recorded in the audit log, with the change made outside git it reverts
    or adopts before it, and the run in the runs chain (``command``: how it was invoked).
    With an event bus configured, each record change's platform event is queued in the
    same transaction and, after the commit, every pending event is delivered (a failure
    leaves them pending and is reported in the result, not raised).
    """
    if plan.source != ws.source:
        raise Refusal(f"the plan is for source {plan.source!r} but this repository is source {ws.source!r}")
    run_id = f"run-{uuid.uuid4()}"
    env = os.environ if environ is None else environ
    bus = configured(env)
    if not plan.changes and not plan.bookkeeping:
        _check_refusals(ws, plan, options)
        return _delivered(ws, ApplyResult(run_id, "no-op"), bus, options, progress)
    # Drafts, rows and audit entries are built by the hundred thousand while the plan (and the
    # tree it holds) is alive: a cyclic collection would rescan all of it, again and again.
    with collector_paused():
        applied = _execute(ws, plan, options, env, run_id, bus is not None, progress, advance, command)
    return _delivered(ws, applied, bus, options, progress)


def _execute(ws: Workspace, plan: Plan, options: ApplyOptions, env: Mapping[str, str], run_id: str,
             announce: bool, progress: Callable[[str], None], advance: Callable[[int, int], None] | None,
             command: str | None) -> ApplyResult:
    """``apply_plan`` once there is something to apply: everything in one transaction."""
    key = audit_key(env)
    applying = applier_identity(ws.repo)
    identity = who_applies(ws.repo, env)
    writes = [_write(c, plan, env, applying) for c in plan.changes]
    context = audit.Context(run_id, identity.actor, applying, identity.to_json(), identity.url,
                            _reviews(ws.repo, plan, identity.pull_request))
    drafts = audit.drafts_for(plan, run_id=run_id, applier=identity.actor, applying=applying, context=context)
    run = RunDraft(run_id, ws.source, identity.actor, plan.commit, plan.digest(), "applied", plan.summary,
                   complete=plan.commit is not None and not plan.targets and not plan.dirty, command=command,
                   applied_by=identity.to_json(), ci_url=identity.url)
    expected = {c.address: (c.kind, c.against) for c in plan.changes}
    expected.update({b.address: (b.kind, b.against) for b in plan.bookkeeping})
    # A rename touches the object under its old name, and its new name must still be free.
    expected.update({c.renamed_from: (c.kind, c.against) for c in plan.changes if c.renamed_from})
    expected.update({c.address: (c.kind, None) for c in plan.changes if c.renamed_from})
    name = f"reconciler apply {run_id[4:12]} {identity.actor}"
    with ws.catalog.session(name) as session:
        try:
            progress(f"waiting for the apply lock of source {ws.source!r}")
            with session.locked(ws.source, options.lock_timeout, expected) as writer:
                _check_refusals(ws, plan, options, writer)
                progress("checking the catalog against the plan")
                writer.recheck(expected, ws.source)
                writer.write(writes, progress, advance, run_id, announce=announce)
                progress("recording what was applied")
                writer.record_managed(_managed(plan), [c.address for c in plan.changes if c.op.deletes],
                                      ws.source, run_id, commit=plan.commit,
                                      removed=[(c.address, c.kind) for c in plan.changes if c.desired is None],
                                      renamed=[(c.renamed_from, c.address) for c in plan.changes
                                               if c.renamed_from is not None])
                # One chained entry per change (and per change made outside git), and the run, committed with them.
                progress("appending to the audit log")
                audit.append(writer, drafts, run=run, key=key, lock_timeout=options.lock_timeout)
                if plan.files and not plan.targets:  # what a later plan may pass over (settled files)
                    writer.record_files(ws.source, run_id, plan.files)
        except ReconcilerError as error:
            _record_unapplied(session, run, _scrubbed(error, plan, env), key, progress, options.lock_timeout)
            raise
    return ApplyResult(run_id, "applied", [{"address": c.address, "action": c.action, "outcome": c.op.done,
                                            **({"from": c.renamed_from} if c.renamed_from else {})}
                                           for c in plan.changes])


def _delivered(ws: Workspace, result: ApplyResult, bus: Bus | None, options: ApplyOptions,
               progress: Callable[[str], None]) -> ApplyResult:
    """After the commit: deliver every pending event (this apply's and any left by earlier ones)."""
    if bus is not None:
        result.events = deliver_after_apply(ws.catalog, bus, options.lock_timeout, progress)
    return result


def _reviews(repo: GitRepository | None, plan: Plan, ci_request: int | None) -> dict[str, Review]:
    """How each commit the plan names reached the branch it was applied from (the plan's commit)."""
    if repo is None or plan.commit is None:
        return {}
    commits = {a.commit for a in [*plan.authors.values(), *plan.adopters.values()] if a.commit}
    ref = plan.commit if repo.commit_exists(plan.commit) else "HEAD"
    return reviews(repo, commits, ref, ci_request=ci_request)  # attribution names commits by full sha


def _scrubbed(error: ReconcilerError, plan: Plan, environ: Mapping[str, str]) -> ReconcilerError:
    """``error`` with the value of every secret the plan resolves taken out of its message:
    the server's detail of a failed write can quote the row, secrets included."""
    error.message = audit.scrub(error.message, plan.secret_values(environ))
    error.args = (error.message,)
    return error


def _record_unapplied(session: ApplySession, run: RunDraft, error: ReconcilerError, key: bytes | None,
                      progress: Callable[[str], None], lock_timeout: float | None = None) -> None:
    """A refused or failed apply leaves a run (no entries), written after the rollback, waiting
    for the audit log's lock no longer than the apply did; if even that fails, the original
    error is still the one raised."""
    outcome = "refused" if isinstance(error, Refusal | ConflictError) else "failed"
    problem = audit.record_unapplied(session, replace(run, outcome=outcome, message=error.message, complete=False), key,
                                     lock_timeout)
    if problem:
        progress(f"could not record the {outcome} run {run.run_id}: {problem}")


def check_refusals(ws: Workspace, plan: Plan, options: ApplyOptions) -> None:
    """Refuse before asking for confirmation, on the catalog as it is now (apply checks again)."""
    if not plan.changes:
        _check_refusals(ws, plan, options)
        return
    with ws.catalog.checking(options.lock_timeout) as reader:
        _check_refusals(ws, plan, options, reader)


def _check_refusals(ws: Workspace, plan: Plan, options: ApplyOptions, reader: RefusalReader | None = None) -> None:
    counts: dict[str, int] = {}
    tampered: list[str] = []
    if reader is not None:
        counts = reader.managed_counts(ws.source)
        destructive = destructive_addresses(plan)
        if destructive:
            tampered = protection_tampered(plan, reader.stored_protection(destructive),
                                           reader.recorded_protection(destructive))
    reasons = refusals(plan, options, counts, ws.policy)
    reasons += [line for line in tampered if line not in reasons]  # the plan's own error says the same
    if reasons:
        raise Refusal("apply refused; nothing was written:\n  " + "\n  ".join(clean(r) for r in reasons))


def _write(change: Change, plan: Plan, environ: Mapping[str, str], applying: Author) -> Write:
    after = change.after
    secrets = plan.secrets.get(change.address, {})
    if after is not None and secrets:
        after = resolve_secrets(after, secrets, environ)
    actor = actor_of(plan.author_of(change.address), applying)
    return Write(change.address, change.kind, change.action, change.before, after, change.fields, actor)


def resolve_secrets(fields: Mapping[str, Any], secrets: Mapping[str, str],
                    environ: Mapping[str, str]) -> dict[str, Any]:
    """Put the environment's values back at the secret paths (saved plans hold only ${env:NAME})."""
    from reconciler.core.model import env_references, substitute_env

    out = mask(fields, {}, None) or {}
    for path, template in secrets.items():
        unset = [name for name in env_references(template) if name not in environ]
        if unset:
            raise ConfigurationError(f"environment variable {unset[0]} is not set (needed by {path})")
        parent, last = walk_path(out, path.split("."))
        if isinstance(parent, dict):
            parent[last] = substitute_env(template, environ)
        elif isinstance(parent, list):
            parent[int(last)] = substitute_env(template, environ)
    return out


def _managed(plan: Plan) -> list[Managed]:
    rows = []
    for change in plan.changes:
        if change.desired is None or change.op.deletes or change.location is None:
            continue
        rows.append(_managed_row(plan, change.address, change.kind, change.desired, change.protect,
                                 change.location))
    for entry in plan.bookkeeping:
        rows.append(_managed_row(plan, entry.address, entry.kind, entry.desired, entry.protect,
                                 entry.location))
    return rows


def _managed_row(plan: Plan, address: str, kind: str, desired: Mapping[str, Any],
                 protect: bool, location: Any) -> Managed:
    """The bookkeeping row; its path is kept relative to the repository root, so a later
    removal is traced from wherever the next command runs."""
    secrets = plan.secrets.get(address)
    # Only a storage target's config holds secrets; other fields are recorded as they are
    # (a deep copy of every record's fields cost 340 MB at 100,000 records).
    applied = (mask(desired, secrets, None) or {}) if secrets else desired
    path = str(location.path)  # already repository-relative (desired.rebase)
    # The commit whose tree was applied (none when what was applied is not committed).
    author = plan.authors.get(address)
    commit = None if author is not None and author.uncommitted else plan.commit
    return Managed(address, kind, applied, protect, commit, path, location.line, location.end_line,
                   tuple(secrets or ()))
