"""The reconciler's audit log: entries, their chain, and what an apply records.

Every applied change becomes one entry of ``reconciler.audit_log``, written in the
apply's transaction. Entries form a hash chain::

    hash = sha256(prev_hash + canonical(entry))      (UTF-8, lowercase hex)

where the first entry's ``prev_hash`` is 64 zeros and ``canonical(entry)`` is the
JSON object of every column except ``hash`` and ``mac``, with sorted keys, no
whitespace and unescaped UTF-8, after these normalisations, chosen so that what
PostgreSQL hands back re-serialises byte for byte:

- floats (anywhere, also inside ``before``/``after``) that are integral become the
  integer their shortest decimal form names (``1.0`` → ``1``, ``1e300`` → ``10**300``):
  jsonb keeps numbers as decimals and gives ``1e300`` back as that integer; other
  floats keep Python's shortest repr (``0.1``, ``1e-07``), which a decimal round trip
  preserves; NaN and infinities are refused (jsonb cannot hold them);
- ``recorded_at`` (and ``commit_date``, ``changed_at``) are UTC text with
  microseconds, ``2026-11-21T10:04:05.123456Z``;
- ``fields`` is a JSON array of strings; absent values are ``null``;
- a column added after the first version (``reason``, ``commit_date``,
  ``merge_commit``, ``pull_request``, ``ci_url``, ``applied_by``, ``changed_at``,
  ``evidence``) is left out of the object when it is null, so that entries written
  before it existed still verify.

With ``RECONCILER_AUDIT_KEY`` set, each entry also gets ``mac = HMAC-SHA256(key,
hash)``: a role that can insert rows but does not hold the key cannot write an entry
that verifies with it. Once the newest entry carries a MAC, an apply without the key
(or with another key) is refused, so a keyed log stays keyed.

Each apply also records one run (reconciler/core/runs.py), chained the same way, stating
how many entries it appended: ``reconciler audit verify`` checks both chains and holds
them against each other (reconciler/app/verification.py).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.core import runs as run_chain
from reconciler.app.exporting import export as export
from reconciler.app.exporting import export_format as export_format
from reconciler.render.audit import EXPORT_FORMATS as EXPORT_FORMATS
from reconciler.render.audit import EXPORT_TYPES as EXPORT_TYPES
from reconciler.render.audit import render_json as render_json
from reconciler.render.audit import render_text as render_text
from reconciler.catalog.postgres import audit_log
from reconciler.catalog.postgres.audit_log import Filters as Filters  # re-exported for the CLI
from reconciler.catalog.port import ApplySession, CatalogWriter
from reconciler.core.chain import GENESIS as GENESIS
from reconciler.core.chain import Head
from reconciler.core.chain import canonical as canonical
from reconciler.core.chain import keyed_problem
from reconciler.core.chain import plain as plain
from reconciler.core.chain import utc_text as utc_text
from reconciler.core.diff import OutOfBand, is_archived
from reconciler.errors import ConfigurationError
from reconciler.core.plan import MASK, Author, Plan, mask

if TYPE_CHECKING:
    from reconciler.app.verification import Verified
    from reconciler.git.repository import GitRepository
    from reconciler.git.review import Review


# Entries and their sealing are values (reconciler/core/audit.py), re-exported here.
from reconciler.core.audit import Draft as Draft  # noqa: E402
from reconciler.core.audit import Entry as Entry  # noqa: E402
from reconciler.core.audit import _sealed as _sealed  # noqa: E402
from reconciler.core.audit import seal as seal  # noqa: E402


# --- recording an apply ----------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """What every entry of one apply shares: the run, who applies, and how commits reached the branch."""

    run_id: str
    applier: str
    applying: Author | None = None  # whoever applies, as changes no commit asked for name them
    applied_by: Mapping[str, Any] | None = None  # the identity the CI or the machine gives
    ci_url: str | None = None
    reviews: Mapping[str, Review] | None = None  # commit → how it reached the branch


def drafts_for(plan: Plan, *, run_id: str, applier: str, applying: Author | None = None,
               context: Context | None = None) -> list[Draft]:
    """The entries an apply of ``plan`` records: one per change, secrets masked exactly as the
    plan JSON masks them, each preceded by the change made outside git it reverts or adopts
    (an entry of its own, reason ``out-of-band``) and by the adoption of what the tree now
    declares as the catalog holds it (reason ``adoption``); objects with no catalog change
    whose out-of-band change the tree now declares get those two entries alone.

    Manifest paths are the plan's: relative to the repository root when there is one. A
    change no commit asked for (or an uncommitted one) names ``applying``, whoever applies
    now, whoever computed the plan.
    """
    ctx = context or Context(run_id, applier, applying)
    ctx = replace(ctx, run_id=run_id, applier=applier, applying=applying or ctx.applying)
    digest = plan.digest()
    drafts: list[Draft] = []
    for change in plan.changes:
        found = plan.outside.get(change.address)
        if found is not None:
            drafts += _outside_drafts(plan, ctx, digest, change.address, change.kind, change.location, found)
        drafts.append(_change_draft(plan, ctx, digest, change))
    changed = {change.address for change in plan.changes} if plan.outside else set()
    for entry in plan.bookkeeping:
        found = plan.outside.get(entry.address)
        if found is not None and entry.address not in changed:
            drafts += _outside_drafts(plan, ctx, digest, entry.address, entry.kind, entry.location, found)
        if entry.reason == "adopt" and entry.protect:
            drafts.append(_protect_draft(plan, ctx, digest, entry))
    return drafts


def _common(plan: Plan, ctx: Context, digest: str, commit: str | None) -> dict[str, Any]:
    review = ctx.reviews.get(commit) if ctx.reviews and commit else None
    return {"run_id": ctx.run_id, "source": plan.source, "applier": ctx.applier, "plan_digest": digest,
            "ci_url": ctx.ci_url, "applied_by": ctx.applied_by,
            "merge_commit": review.merge_commit if review else None,
            "pull_request": review.pull_request if review else None}


def _named(author: Author, ctx: Context) -> tuple[str, str]:
    applying = ctx.applying
    if author.applier and applying is not None:
        return applying.name, applying.email
    return author.name, author.email


def _change_draft(plan: Plan, ctx: Context, digest: str, change: Any) -> Draft:
    secrets = plan.secrets.get(change.address, {})
    hidden = plan.masked_paths(change.address)  # secrets now, and paths that held one at an earlier apply
    author = plan.author_of(change.address)
    name, email = _named(author, ctx)
    return Draft(
        address=change.address, kind=change.kind, action=change.action,
        # Drafts are only read (seal copies them), so fields without secrets are shared.
        before=mask(change.before, hidden, MASK) if hidden else change.before,
        after=mask(change.after, secrets, None) if secrets else change.after,
        fields=tuple(change.fields), commit_sha=author.commit, author_name=name,
        author_email=email, uncommitted=bool(author.uncommitted),
        manifest_path=change.location.path if change.location else None,
        manifest_line=change.location.line if change.location else None,
        reason=change.reason, commit_date=_moment(author.date),
        protect=change.protect if change.action != "purge" else None, **_common(plan, ctx, digest, author.commit))


def _protect_draft(plan: Plan, ctx: Context, digest: str, entry: Any) -> Draft:
    """Taking over an object with protect: true changes nothing in the catalog, but the flag
    goes into the chain like every other change of it."""
    name, email = (ctx.applying.name, ctx.applying.email) if ctx.applying else ("unknown", "")
    return Draft(address=entry.address, kind=entry.kind, action="update", before=None, after=None,
                 fields=("protect",), commit_sha=plan.commit, author_name=name, author_email=email,
                 uncommitted=False, manifest_path=entry.location.path, manifest_line=entry.location.line,
                 reason="adoption", protect=True, **_common(plan, ctx, digest, plan.commit))


def _outside_drafts(plan: Plan, ctx: Context, digest: str, address: str, kind: str, location: Any,
                    found: OutOfBand) -> list[Draft]:
    """The out-of-band change itself, then the adoption of what the tree now declares as it is."""
    where: dict[str, Any] = {"manifest_path": location.path if location else None,
                             "manifest_line": location.line if location else None}
    was, now = is_archived(kind, found.before), found.after is not None and is_archived(kind, found.after)
    action = "purge" if found.after is None else "archive" if now and not was else "restore" if was and not now \
        else "update"
    by = found.by or "unknown"
    drafts = [Draft(address=address, kind=kind, action=action, before=found.before, after=found.after,
                    fields=found.fields, commit_sha=None, author_name=by,
                    author_email=by if "@" in by else "", uncommitted=False, reason="out-of-band",
                    changed_at=_moment(found.at), evidence=found.evidence, **where,
                    **_common(plan, ctx, digest, None))]
    if found.adopted and found.after is not None:
        author = plan.adopters.get(address) or ctx.applying or Author("unknown", "", None, applier=True)
        name, email = _named(author, ctx)
        held = {name_: found.after[name_] for name_ in found.adopted}
        drafts.append(Draft(address=address, kind=kind, action="update", before=held, after=held,
                            fields=found.adopted, commit_sha=author.commit, author_name=name, author_email=email,
                            uncommitted=bool(author.uncommitted), reason="adoption",
                            commit_date=_moment(author.date), **where, **_common(plan, ctx, digest, author.commit)))
    return drafts


def _moment(text: str | None) -> datetime | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def append(writer: CatalogWriter, drafts: Sequence[Draft], *, run: run_chain.RunDraft | None = None,
           key: bytes | None = None, lock_timeout: float | None = None) -> list[Entry]:
    """Append the drafts to the log, and ``run`` to the runs, inside the caller's transaction.

    The append lock is held from reading the heads until the caller commits, so two
    applies never chain onto the same head. With ``key``, every entry and the run carry a
    MAC; a log whose newest entry or run is keyed refuses an append without that key. The lock
    is waited for at most ``lock_timeout`` seconds (None: as the session's lock_timeout
    allows), then LockTimeout names its holder.
    """
    if not drafts and run is None:
        return []
    head = writer.lock_audit_head(lock_timeout)
    problem = (keyed_problem("entry", head.seq, head.hash, head.mac, key)
               or keyed_problem("run", head.run_seq, head.run_hash, head.run_mac, key))
    if problem:
        raise ConfigurationError(f"{problem}; nothing was applied")
    sealed = _sealed(drafts, after_seq=head.seq, after_hash=head.hash or GENESIS, recorded_at=head.now, key=key)
    if sealed:
        writer.append_entries(row for _, row in sealed)
    if run is not None:
        writer.insert_run(run_chain.seal(run, head, entries=len(sealed), first_entry=head.seq + 1,
                                                  key=key).values())
    return [entry for entry, _ in sealed]


def record_unapplied(session: ApplySession, run: run_chain.RunDraft, key: bytes | None,
                     lock_timeout: float | None = None) -> str | None:
    """Record a refused or failed apply as a run with no entries, in a transaction of its own after
    the rollback; returns why it could not be (never raises)."""
    def build(head: Head) -> Sequence[Any] | str:
        problem = (keyed_problem("entry", head.seq, head.hash, head.mac, key)
                   or keyed_problem("run", head.run_seq, head.run_hash, head.run_mac, key))
        if problem:
            return problem
        return run_chain.seal(run, head, entries=0, first_entry=head.seq + 1, key=key).values()

    return session.record_unapplied_run(
        build, lock_timeout, lambda: run_chain.outside_chain(run, datetime.now(UTC)).values())


def scrub(text: str, values: Iterable[str]) -> str:
    """``text`` with every one of the secret ``values`` replaced by ***, longest first."""
    for value in sorted(values, key=len, reverse=True):
        if value:
            text = text.replace(value, MASK)
    return text


# --- verifying and listing --------------------------------------------------------------------


def verify(url: str, *, expect_head: str | None = None, repo: GitRepository | None = None,
           **checks: Any) -> Verified:
    """Verify the log (reconciler/app/verification.py): both chains, the entry counts of the
    runs, and whatever ``checks`` ask for (anchors, the key, git, replay)."""
    from reconciler.app.verification import verify as run_checks

    return run_checks(url, expect_head=expect_head, repo=repo, **checks)


def parse_time(text: str, option: str = "--since") -> datetime:
    """An ISO date or time for a time option; one without a zone is UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigurationError(
            f"{option} {text!r} is not an ISO date or time (e.g. 2026-01-31, 2026-01-31T12:00, "
            "2026-01-31T12:00:00+02:00)") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_since(text: str) -> datetime:
    """An ISO date or time for ``--since``; one without a zone is UTC."""
    return parse_time(text, "--since")


def entries(url: str, filters: Filters) -> Generator[Entry, None, None]:
    """The entries ``audit log`` lists, newest first."""
    return audit_log.read_entries(url, Entry.from_row, filters, newest_first=True)


def runs(url: str, *, limit: int | None = None, source: str | None = None) -> Generator[run_chain.Run, None, None]:
    """The runs ``audit runs`` lists, newest first."""
    return audit_log.read_runs(url, run_chain.Run.from_row, newest_first=True, limit=limit, source=source)


# --- the catalog ------------------------------------------------------------------------------


def catalog_url(database_url: str | None, anchor: Path, announce: Callable[[str], None] | None = None) -> str:
    """The catalog the audit commands read, the embedded one started and migrated when chosen
    (``announce`` is told when it is being created)."""
    from reconciler.catalog.postgres.connection import resolve_database
    from reconciler.catalog.postgres.migrations import migrate

    url, embedded = resolve_database(database_url, anchor, announce)
    if embedded:
        migrate(url)
    return url
