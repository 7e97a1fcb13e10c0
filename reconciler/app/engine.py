"""Plan and apply, end to end: load the tree, read the catalog, diff, attribute, and execute."""

from __future__ import annotations

import getpass
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from reconciler.app import auditing as audit
from reconciler.catalog.postgres.outside import with_evidence
from reconciler.core.chain import audit_key
from reconciler.app.ci import Identity, ci_identity, local_identity
from reconciler.app.runs import RunDraft
from reconciler.catalog.postgres.audit_log import protection_recorded
from reconciler.catalog.postgres.connection import connect, describe, git_root, resolve_database, translated
from reconciler.catalog.postgres.locks import bound_lock_waits, lock_source, register_source
from reconciler.catalog.postgres.settled import (
    digest_of,
    last_applied_commit,
    lookalikes_in,
    record_files,
    settled_files,
)
from reconciler.catalog.postgres.reading import Skip, catalog_snapshot, datasets_stored_on, read_snapshot
from reconciler.catalog.postgres.writer import (
    Managed,
    Write,
    purge_storage_targets,
    recheck,
    translate,
    write_datasets,
    write_managed,
    write_records,
    write_storage_targets,
)
from reconciler.core.diff import Change, Desired, DiffResult, Finding, Live, diff, drift_message
from reconciler.errors import ConfigurationError, ConflictError, ReconcilerError
from reconciler.manifests.config import load_config
from reconciler.core.model import folded
from reconciler.app.attribution import attribute, base_outside_history
from reconciler.git.repository import GitRepository
from reconciler.git.review import Review, reviews
from reconciler.core.plan import FORMAT_VERSION, Author, FileDigest, Plan, from_diff, mask, walk_path
from reconciler.core.policy import Policy, check
from reconciler.core.text import clean

if TYPE_CHECKING:
    from reconciler.manifests.desired import DesiredState

# The CI systems whose actor names the person who ran an apply.
CI_ACTOR_VARIABLES = ("GITHUB_ACTOR", "GITLAB_USER_LOGIN", "BUILDKITE_BUILD_CREATOR",
                      "CIRCLE_USERNAME", "BUILD_REQUESTEDFOR")
MASS_ARCHIVE_FRACTION = 0.10
MASS_ARCHIVE_MINIMUM = 5
ADDRESS_KINDS = ("storage-target:", "dataset:", "record:")


class Refusal(ReconcilerError):
    """Apply refused before writing anything; the message names every object that caused it."""


@dataclass(frozen=True)
class Workspace:
    """Where a command works: the manifest tree, its repository, its source and its catalog."""

    tree: Path
    repo: GitRepository | None
    source: str
    database_url: str
    embedded: bool
    policy: Policy | None = None  # who may change what (reconciler.yaml); None: no restriction
    ui_base_url: str | None = None  # the platform UI, for links in markdown plans

    @property
    def database(self) -> str:
        """The catalog, described without its password."""
        return describe(self.database_url)


@dataclass(frozen=True)
class ApplyOptions:
    """What the operator allowed for this apply."""

    allow_purge: bool = False
    allow_uncommitted: bool = False
    allow_mass_archive: int | None = None
    lock_timeout: float = 60.0


@dataclass
class ApplyResult:
    """What an apply did: run id, outcome and per-object results."""

    run_id: str
    outcome: str
    objects: list[dict[str, str]] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, int]:
        """Objects per action."""
        counts = Counter(o["action"] for o in self.objects)
        return {a: counts.get(a, 0) for a in ("create", "update", "archive", "restore", "purge")}

    def to_json(self) -> dict[str, Any]:
        """The machine-readable apply result."""
        return {"run_id": self.run_id, "outcome": self.outcome, "summary": self.summary,
                "objects": self.objects}


def open_workspace(tree: Path, database_url: str | None,
                   announce: Callable[[str], None] | None = None) -> Workspace:
    """Resolve the tree, its git repository, its source name and the catalog URL (``announce``
    is told when the embedded catalog is being created)."""
    if not tree.exists():
        raise ConfigurationError(f"manifest tree {tree} does not exist")
    if not tree.is_dir():
        raise ConfigurationError(f"manifest tree {tree} is not a directory")
    repo = GitRepository.discover(tree)
    config = load_config(repo.root if repo else git_root(tree))
    url, embedded = resolve_database(database_url, tree, announce)
    return Workspace(tree, repo, config.source, url, embedded, config.policy, config.ui_base_url)


def applier() -> str:
    """Who runs this apply: the CI actor where there is one, else the OS user."""
    found = ci_identity(os.environ)
    return found.actor if found is not None else os_user()


def who_applies(repo: GitRepository | None, environ: Mapping[str, str]) -> Identity:
    """Whoever applies, as the audit log records it: the CI run's actor and identifiers, or
    (marked local) the OS user with the local git identity."""
    found = ci_identity(environ)
    if found is not None:
        return found
    name, email = repo.user_identity() if repo is not None else (None, None)
    return local_identity(os_user(), name, email)


def os_user() -> str:
    """The operating-system user running this process (``unknown`` where there is none)."""
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "unknown"


def applier_identity(repo: GitRepository | None) -> Author:
    """Whoever applies, as changes no commit asked for name them: the CI actor where there is
    one, else the local git identity (else the OS user); the email is git's ``user.email``
    outside CI, empty in CI."""
    for variable in CI_ACTOR_VARIABLES:
        if os.environ.get(variable):
            return Author(os.environ[variable], "", None, applier=True)
    name, email = repo.user_identity() if repo is not None else ("unknown", "unknown")
    if name == "unknown":
        name = os_user()
    return Author(name, "" if email == "unknown" else email, None, applier=True)


def actor_of(author: Author, applying: Author) -> str:
    """The actor the services' audit rows and ``created_by``/``updated_by`` name for a change:
    the commit author's email, or for a change whoever applies made, their email (else name)."""
    if author.applier:
        return applying.email or applying.name
    return author.email


def make_plan(ws: Workspace, *, targets: Sequence[str] = (), environ: Mapping[str, str] | None = None,
              resolve_secrets: bool = True, require_signed: bool = False, at_commit: str | None = None) -> Plan:
    """Compute the plan for the workspace's tree against its catalog (changes nothing).

    Findings that block apply: broken cross-links, the diff's own errors, changes the
    policy does not let their author make, and (with ``require_signed``) changes whose
    commit carries no valid signature. With ``at_commit``, the tree is read from that
    commit in git's object store, not from the working tree (a saved plan re-derived).

    The tree is parsed outside any catalog transaction (a server's
    idle_in_transaction_session_timeout never sees a long parse): the files a plan may
    pass over are chosen in one short transaction, then confirmed in the snapshot the
    state is read from; if they moved in between, the whole tree is read.
    """
    for target in targets:
        check_address(target)
    from reconciler.manifests.desired import desired_state, rebase  # the manifest loader is only needed here

    env = os.environ if environ is None else environ
    files = tree_files(ws) if at_commit is None else {}

    def load(skip: Collection[str]) -> DesiredState:
        if at_commit is not None:
            return _desired_at(ws, at_commit, env, resolve_secrets)
        state = desired_state(ws.tree, environ=env, resolve_env=resolve_secrets, skip=skip)
        return rebase(state, ws.repo.root) if ws.repo is not None else state

    changed = (_changed_files(ws) or set()) if at_commit is None else set()
    settled: dict[str, int] = {}
    if files:
        with catalog_snapshot(ws.database_url, embedded=ws.embedded) as conn:
            settled = settled_files(conn, ws.source, [f for f in files.values() if f.path not in changed])
    while True:
        skip = {display for display, file in files.items() if file.path in settled}
        state = load(skip)
        with catalog_snapshot(ws.database_url, embedded=ws.embedded) as conn:
            if skip and not _still_settled(conn, ws, files, changed, settled, state):
                settled = {}
                continue  # read the whole tree, outside the transaction
            catalog = read_snapshot(conn, Skip(ws.source, list(settled)))
            base, complete = last_applied_commit(conn, ws.source)
            purged = [a for a, d in state.desired.items() if d.kind == "storage-target" and d.purge]
            stored_on = datasets_stored_on(conn, purged) if purged else {}
            result = diff(state.desired, catalog.live, catalog.applied, source=ws.source, stored_on=stored_on)
            if result.outside:
                result = _observed(conn, result, state.desired)
        break
    commit = at_commit or (ws.repo.head() if ws.repo else None)
    tree = ws.repo.relative(ws.tree) if ws.repo else None
    outside = base_outside_history(ws.repo, base, commit, ws.source, ws.tree)
    if outside is not None:  # nothing can be planned against another history's apply
        return from_diff(DiffResult(findings=(Finding("", "error", outside),)), source=ws.source, commit=commit,
                         dirty=False, tree=tree, created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                         authors={}, secrets={}).narrowed(tuple(targets))
    _check_targets(targets, state.desired, catalog.live)
    declared = Counter(item.location.path for item in state.desired.values())
    read = {f.path: replace(f, objects=settled.get(f.path, declared.get(f.path, 0))) for f in files.values()}
    findings = link_findings(state.links, state.desired, catalog.live)
    findings += lookalike_findings(state.desired, catalog.live)
    known = _values_at(base, catalog.applied, result.changes) if complete else None
    attribution = attribute(ws.repo, ws.tree, result.changes, state.desired, base, applier_identity(ws.repo),
                            changed=changed, known=known, head=at_commit)
    authors = attribution.authors
    adopting = _adoptions(result, state.desired)
    adopters = attribute(ws.repo, ws.tree, adopting, state.desired, base, applier_identity(ws.repo), changed=changed,
                         known=_values_at(base, catalog.applied, adopting) if complete else None
                         ).authors if adopting else {}
    findings += policy_findings(ws.policy, result.changes, authors)
    findings += identity_findings(result.changes, authors)
    if require_signed:
        findings += signature_findings(ws.repo, result.changes, authors)
    plan = from_diff(result, source=ws.source, commit=commit, dirty=attribution.dirty, tree=tree,
                     created_at=datetime.now(UTC).isoformat(timespec="seconds"), authors=authors,
                     secrets=state.secrets, extra_findings=tuple(findings), files=read, reused_files=len(skip),
                     removals=attribution.removals, attribution_problem=attribution.problem, adopters=adopters,
                     remembered={c.address: catalog.applied[c.address].secret_paths for c in result.changes
                                 if c.address in catalog.applied and catalog.applied[c.address].secret_paths})
    return plan.narrowed(tuple(targets))


def _observed(conn: psycopg.Connection[Any], result: DiffResult, desired: Mapping[str, Desired]) -> DiffResult:
    """The diff with who changed each object outside git, and when, read from the services' audit
    rows (catalog/outside.py), and its drift findings saying so."""
    outside = with_evidence(conn, result.outside)
    where = {f.address: f.location for f in result.findings if f.severity == "drift"}
    findings = [f for f in result.findings if not (f.severity == "drift" and f.address in outside)]
    findings += [Finding(address, "drift", drift_message(found, declared=address in desired), where.get(address))
                 for address, found in outside.items()]
    return replace(result, outside=outside, findings=tuple(findings))


def _adoptions(result: DiffResult, desired: Mapping[str, Desired]) -> list[Change]:
    """For every object whose out-of-band change the tree now declares, the change a commit would
    have asked for to declare it: attributed like one, it names the commit that made the tree say so."""
    out = []
    for address, found in sorted(result.outside.items()):
        item = desired.get(address)
        if found.adopted and item is not None and found.after is not None:
            out.append(Change(address, item.kind, "update", found.after, found.after, found.adopted,
                              dict(item.record), item.location, None, item.protect, reason="manifest",
                              asked=found.adopted))
    return out


def _values_at(base: str | None, applied: Mapping[str, Any], changes: Sequence[Change]) -> dict[str, Any] | None:
    """What the changed objects declared at ``base``, the commit of a complete apply: what
    that apply recorded (nothing for an object it did not manage, or had archived for
    being no longer declared)."""
    if base is None:
        return None
    from reconciler.app.attribution import declared_value_of

    out: dict[str, Any] = {}
    for change in changes:
        done = applied.get(change.address)
        out[change.address] = declared_value_of(done) if done is not None and done.declared else None
    return out


def _still_settled(conn: Any, ws: Workspace, files: Mapping[str, FileDigest], changed: Collection[str],
                   settled: Mapping[str, int], state: DesiredState) -> bool:
    """Whether the files chosen to pass over are still settled in this snapshot, and none of
    their addresses is declared again by a file that was read (a duplicate or look-alike:
    then the full read names both places)."""
    again = settled_files(conn, ws.source, [f for f in files.values() if f.path not in changed])
    if any(again.get(path) != count for path, count in settled.items()):
        return False
    seen = {folded(address) for address in state.desired}
    return not any(folded(address) in seen for address in lookalikes_in(conn, ws.source, settled, seen))


def _desired_at(ws: Workspace, commit: str, environ: Mapping[str, str], resolve_secrets: bool) -> DesiredState:
    """What the tree declared at ``commit``, read from git's object store (paths relative to the
    repository's root)."""
    from reconciler.app.attribution import SUFFIXES
    from reconciler.manifests.desired import desired_from
    from reconciler.git.history import manifest_filter
    from reconciler.manifests.loader import load_versions

    if ws.repo is None:
        raise ConfigurationError(f"{ws.tree} is not in a git repository: a plan of a commit cannot be read")
    pathspec = ws.repo.relative(ws.tree)
    listed = ws.repo.tree_files(commit, pathspec, manifest_filter(pathspec, SUFFIXES))
    with ws.repo.blobs() as reader:
        contents = [(path, reader.read(blob) or b"") for path, blob in sorted(listed.items())]
    tree = load_versions(pathspec, contents, check_env=environ if resolve_secrets else None)
    return desired_from(tree, environ=environ, resolve_env=resolve_secrets)


def _check_targets(targets: Sequence[str], desired: Mapping[str, Any], live: Mapping[str, Any]) -> None:
    """Refuse ``--target`` addresses that name nothing: neither declared nor in the catalog."""
    unknown = [target for target in targets if target not in desired and target not in live]
    if unknown:
        raise ConfigurationError("--target matches nothing (neither declared in the tree nor in the catalog): "
                                 + ", ".join(clean(t) for t in unknown))


def _changed_files(ws: Workspace) -> set[str] | None:
    """Files of the tree whose working-tree content differs from HEAD (repository-relative);
    None outside git."""
    if ws.repo is None:
        return None
    return ws.repo.changed_paths(ws.repo.relative(ws.tree))


def tree_files(ws: Workspace) -> dict[str, FileDigest]:
    """Every manifest file of the workspace's tree (by the name the loader shows), with
    the path objects' locations give it and the digest of its bytes."""
    from reconciler.manifests.desired import repo_relative
    from reconciler.manifests.loader import discover

    found, _ = discover(ws.tree)  # what the walk refuses, the loader reports
    out = {}
    for file, display in found:
        digest = digest_of(file)
        if digest is not None:
            path = repo_relative(display, ws.repo.root) if ws.repo is not None else display
            out[display] = FileDigest(path, digest)
    return out


def check_address(address: str) -> None:
    """Refuse a malformed ``--target`` address with the forms that are accepted."""
    kind, _, rest = address.partition(":")
    ok = address.startswith(ADDRESS_KINDS) and rest and (kind != "record" or "/" in rest.strip("/"))
    if not ok:
        raise ConfigurationError(
            f"--target {address!r} is not an address; use storage-target:<name>, dataset:<slug> "
            "or record:<namespace>/<key>"
        )


def link_findings(links: Sequence[tuple[str, str, Any]], desired: Mapping[str, Desired],
                  live: Mapping[str, Live]) -> list[Finding]:
    """Cross-links the tree could not resolve itself, checked against the catalog."""
    out = []
    for address, target, location in links:
        if target not in desired and target not in live:
            out.append(Finding(address, "error", f"it refers to {target}, which is neither declared in "
                               "the tree nor in the catalog", location))
    return out


def lookalike_findings(desired: Mapping[str, Desired], live: Mapping[str, Live]) -> list[Finding]:
    """A note for each object the plan creates beside an undeclared catalog object whose
    identity differs from it only by letter case or Unicode normalisation."""
    new = [address for address in desired if address not in live]
    if not new:
        return []
    undeclared: dict[str, str] = {}
    for address in live:
        if address not in desired:
            undeclared.setdefault(folded(address), address)
    out = []
    for address in new:
        twin = undeclared.get(folded(address))
        if twin is not None:
            out.append(Finding(address, "note", f"the catalog holds {twin}, which differs from it only by letter "
                               "case or Unicode normalisation; this plan creates a separate object",
                               desired[address].location))
    return out


def identity_findings(changes: Sequence[Change], authors: Mapping[str, Author]) -> list[Finding]:
    """A blocking finding for every change whose commit has no author email: the services'
    audit rows and ``created_by``/``updated_by`` would name nobody."""
    out = []
    for change in changes:
        author = authors.get(change.address)
        if author is not None and not author.applier and author.commit and not author.email.strip():
            out.append(Finding(change.address, "error", f"commit {author.commit[:12]} by {author.name!r} has no "
                               "author email, and the catalog's audit rows must name who asked; amend the "
                               "commit's author (git commit --amend --author 'Name <email>') or rebase it",
                               change.location))
    return out


def policy_findings(policy: Policy | None, changes: Sequence[Change],
                    authors: Mapping[str, Author]) -> list[Finding]:
    """A blocking finding for every change whose author lacks the scope it needs."""
    unknown = Author("unknown", "unknown", None, True)
    denials = check(policy, [(c.address, c.action, authors.get(c.address, unknown).email) for c in changes])
    where = {c.address: c.location for c in changes}
    return [Finding(d.address, "error", d.message, where.get(d.address)) for d in denials]


def signature_findings(repo: GitRepository | None, changes: Sequence[Change],
                       authors: Mapping[str, Author]) -> list[Finding]:
    """With --require-signed-commits: every change must come from a commit with a valid signature."""
    commits = {a.commit for a in authors.values() if a.commit}
    verified = repo.verify_commits(commits) if repo is not None else {}
    out = []
    for change in changes:
        author = authors.get(change.address)
        if author is None or author.commit is None:
            reason = "it comes from uncommitted lines" if author else "its commit is unknown"
            out.append(Finding(change.address, "error", f"signed commits are required and {reason}",
                               change.location))
        elif not verified.get(author.commit, False):
            out.append(Finding(change.address, "error", f"signed commits are required and commit "
                               f"{author.commit[:12]} by {author.email} has no valid signature", change.location))
    return out


def refusals(plan: Plan, options: ApplyOptions, managed_counts: Mapping[str, int],
             policy: Policy | None = None) -> list[str]:
    """Every reason apply must refuse this plan, each naming its objects; empty when it may go.

    The policy is checked again here, so a saved plan made before a policy change is
    held to the policy in force when it is applied.
    """
    reasons = [f"{f.address}: {f.message}" if f.address else f.message for f in plan.errors]
    for denial in check(policy, [(c.address, c.action, plan.author_of(c.address).email) for c in plan.changes]):
        line = f"{denial.address}: {denial.message}"
        if line not in reasons:
            reasons.append(line)
    purges = [c.address for c in plan.changes if c.action == "purge"]
    if purges and not options.allow_purge:
        reasons.append("purge needs --allow-purge: " + ", ".join(purges))
    if plan.attribution_problem and plan.changes:
        reasons.append(f"attribution is impossible: {plan.attribution_problem}")
    uncommitted = plan.uncommitted
    if uncommitted and not options.allow_uncommitted:
        reasons.append("uncommitted changes (commit them, or pass --allow-uncommitted): "
                       + ", ".join(uncommitted))
    reasons += _mass_archive(plan, options, managed_counts)
    return reasons


def _mass_archive(plan: Plan, options: ApplyOptions, managed_counts: Mapping[str, int]) -> list[str]:
    destructive = [c for c in plan.changes if c.action in ("archive", "purge")]
    by_kind = Counter(c.kind for c in destructive)
    tripped = {kind: n for kind, n in by_kind.items()
               if n > MASS_ARCHIVE_MINIMUM and n > MASS_ARCHIVE_FRACTION * max(managed_counts.get(kind, 0), 1)}
    if not tripped or options.allow_mass_archive == len(destructive):
        return []
    detail = ", ".join(f"{n} of {managed_counts.get(k, 0)} managed {k}s" for k, n in sorted(tripped.items()))
    return [f"the plan archives or purges {len(destructive)} objects ({detail}), more than "
            f"{MASS_ARCHIVE_FRACTION:.0%} of a kind; if that is intended, pass "
            f"--allow-mass-archive {len(destructive)}"]


def apply_plan(ws: Workspace, plan: Plan, options: ApplyOptions, *,
               environ: Mapping[str, str] | None = None,
               progress: Callable[[str], None] = lambda _: None,
               advance: Callable[[int, int], None] | None = None, command: str | None = None) -> ApplyResult:
    """Execute a plan in one transaction under the source's lock, or refuse with nothing written.

    Every change is recorded in the audit log, with the change made outside git it reverts
    or adopts before it, and the run in the runs chain (``command``: how it was invoked).
    """
    if plan.source != ws.source:
        raise Refusal(f"the plan is for source {plan.source!r} but this repository is source {ws.source!r}")
    run_id = f"run-{uuid.uuid4()}"
    if not plan.changes and not plan.bookkeeping:
        _check_refusals(ws, plan, options)
        return ApplyResult(run_id, "no-op")
    env = os.environ if environ is None else environ
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
    conn = connect(ws.database_url, application_name=f"reconciler apply {run_id[4:12]} {identity.actor}"[:63])
    try:
        started = time.monotonic()
        progress(f"waiting for the apply lock of source {ws.source!r}")
        register_source(conn, ws.source, options.lock_timeout)
        with conn.transaction():
            lock_source(conn, ws.source, options.lock_timeout, started)  # and bounds the row-lock waits below
            _check_refusals(ws, plan, options, conn)
            progress("checking the catalog against the plan")
            recheck(conn, expected, ws.source)
            _execute(conn, writes, progress, advance, run_id)
            progress("recording what was applied")
            write_managed(conn, _managed(plan, ws), [c.address for c in plan.changes if c.action == "purge"],
                          ws.source, run_id, commit=plan.commit,
                          removed=[(c.address, c.kind) for c in plan.changes if c.desired is None])
            # One chained entry per change (and per change made outside git), and the run, committed with them.
            progress("appending to the audit log")
            audit.append(conn, drafts, run=run, key=key, lock_timeout=options.lock_timeout)
            if plan.files and not plan.targets:  # what a later plan may pass over (catalog/settled.py)
                record_files(conn, ws.source, run_id, plan.files)
    except psycopg.Error as error:
        failure = _scrubbed(translate(error, conn, touched=expected, lock_timeout=options.lock_timeout), plan, env)
        _record_unapplied(conn, run, failure, key, progress, options.lock_timeout)
        raise failure from None
    except ReconcilerError as error:
        _record_unapplied(conn, run, _scrubbed(error, plan, env), key, progress, options.lock_timeout)
        raise
    finally:
        conn.close()
    done = {"create": "created", "update": "updated", "archive": "archived", "restore": "restored",
            "purge": "purged"}
    return ApplyResult(run_id, "applied", [{"address": c.address, "action": c.action, "outcome": done[c.action]}
                                           for c in plan.changes])


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


def _record_unapplied(conn: psycopg.Connection[Any], run: RunDraft, error: ReconcilerError, key: bytes | None,
                      progress: Callable[[str], None], lock_timeout: float | None = None) -> None:
    """A refused or failed apply leaves a run (no entries), written after the rollback, waiting
    for the audit log's lock no longer than the apply did; if even that fails, the original
    error is still the one raised."""
    outcome = "refused" if isinstance(error, Refusal | ConflictError) else "failed"
    problem = audit.record_unapplied(conn, replace(run, outcome=outcome, message=error.message, complete=False), key,
                                     lock_timeout)
    if problem:
        progress(f"could not record the {outcome} run {run.run_id}: {problem}")


def check_refusals(ws: Workspace, plan: Plan, options: ApplyOptions) -> None:
    """Refuse before asking for confirmation, on the catalog as it is now (apply checks again)."""
    if not plan.changes:
        _check_refusals(ws, plan, options)
        return
    with connect(ws.database_url, autocommit=True) as conn, \
            translated("checking the plan against the catalog failed", conn, ws.database_url), \
            conn.transaction():
        bound_lock_waits(conn, options.lock_timeout)  # a table another session locks is waited for no longer
        _check_refusals(ws, plan, options, conn)


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


def _check_plan_schema(path: Path, data: Mapping[str, Any]) -> None:
    """Refuse a file the plan's JSON Schema (schemas/plan.schema.json) does not accept, naming
    the first place it fails (an unknown action, a missing key, a value of the wrong type)."""
    import jsonschema

    from reconciler.manifests.schema import schema_dirs

    if data.get("format_version") != FORMAT_VERSION:
        return  # Plan.from_json says which version it is and which one is read
    for directory in schema_dirs():
        schema_file = directory / "plan.schema.json"
        if schema_file.is_file():
            schema = json.loads(schema_file.read_text(encoding="utf-8"))
            break
    else:
        raise ConfigurationError("the plan's JSON Schema is missing from this installation; reinstall reconciler")
    problem = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(data))
    if problem is not None:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in problem.absolute_path).lstrip(".")
        raise ConfigurationError(f"{path} is not a reconciler plan: {clean(where or 'the top level')}: "
                                 f"{clean(problem.message[:300])}")


def _check_refusals(ws: Workspace, plan: Plan, options: ApplyOptions,
                    conn: psycopg.Connection[Any] | None = None) -> None:
    counts: dict[str, int] = {}
    tampered: list[str] = []
    if conn is not None:
        rows = conn.execute("SELECT kind, count(*) FROM reconciler.managed_objects WHERE source = %s "
                            "GROUP BY kind", (ws.source,)).fetchall()
        counts = {kind: n for kind, n in rows}
        tampered = _protection_tampered(conn, plan)
    reasons = refusals(plan, options, counts, ws.policy) + tampered
    if reasons:
        raise Refusal("apply refused; nothing was written:\n  " + "\n  ".join(clean(r) for r in reasons))


def _protection_tampered(conn: psycopg.Connection[Any], plan: Plan) -> list[str]:
    """The archives and purges of objects whose stored protect flag is off while the audit
    chain last recorded it on: the flag was changed outside apply, and is not trusted."""
    destructive = [c.address for c in plan.changes if c.action in ("archive", "purge")]
    if not destructive:
        return []
    stored = dict(conn.execute("SELECT address, protect FROM reconciler.managed_objects WHERE address = ANY(%s)",
                               (destructive,)).fetchall())
    recorded = protection_recorded(conn, destructive)
    return [f"{address}: its stored protect flag is off, but the audit chain last recorded protect: true "
            f"(entry {recorded[address][1]}); the flag was changed outside apply — set it back, or lift "
            "protection through a commit"
            for address in destructive
            if address in recorded and recorded[address][0] and not stored.get(address, False)]


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


def _execute(conn: psycopg.Connection[Any], writes: Sequence[Write], progress: Callable[[str], None],
             advance: Callable[[int, int], None] | None = None, run_id: str | None = None) -> None:
    by_kind: dict[str, list[Write]] = {"storage-target": [], "dataset": [], "record": []}
    for w in writes:
        by_kind[w.kind].append(w)
    if by_kind["storage-target"]:
        progress(f"writing {len(by_kind['storage-target'])} storage target change(s)")
        write_storage_targets(conn, by_kind["storage-target"])
    if by_kind["dataset"]:
        progress(f"writing {len(by_kind['dataset'])} dataset change(s)")
        write_datasets(conn, by_kind["dataset"], run_id=run_id)
    if by_kind["record"]:
        progress(f"writing {len(by_kind['record'])} record change(s)")
        total = len(by_kind["record"])
        write_records(conn, by_kind["record"],
                      None if advance is None else (lambda done: advance(done, total)))
    purge_storage_targets(conn, by_kind["storage-target"])


def _managed(plan: Plan, ws: Workspace) -> list[Managed]:
    rows = []
    for change in plan.changes:
        if change.desired is None or change.action == "purge" or change.location is None:
            continue
        rows.append(_managed_row(plan, ws, change.address, change.kind, change.desired, change.protect,
                                 change.location))
    for entry in plan.bookkeeping:
        rows.append(_managed_row(plan, ws, entry.address, entry.kind, entry.desired, entry.protect,
                                 entry.location))
    return rows


def _managed_row(plan: Plan, ws: Workspace, address: str, kind: str, desired: Mapping[str, Any],
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
