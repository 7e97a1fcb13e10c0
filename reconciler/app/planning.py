"""The plan use case: read the tree and the catalog, diff, attribute, and gather the findings."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from reconciler.app.attribution import attribute, base_outside_history
from reconciler.app.workspace import Workspace, applier_identity, changed_files, settled_units, tree_units
from reconciler.catalog.port import PlanReader
from reconciler.core.checks import (
    check_address,
    check_targets,
    identity_findings,
    link_findings,
    lookalike_findings,
    policy_findings,
    tampered_protection_findings,
)
from reconciler.core.diff import Change, Desired, DiffResult, Finding, diff, drift_message
from reconciler.core.model import folded
from reconciler.core.plan import Author, FileDigest, Plan, from_diff
from reconciler.errors import ConfigurationError
from reconciler.git.repository import GitRepository

if TYPE_CHECKING:
    from reconciler.manifests.desired import DesiredState

def make_plan(ws: Workspace, *, targets: Sequence[str] = (), environ: Mapping[str, str] | None = None,
              resolve_secrets: bool = True, require_signed: bool = False, at_commit: str | None = None) -> Plan:
    """Compute the plan for the workspace's tree against its catalog (changes nothing).

    Findings that block apply: broken cross-links, the diff's own errors, changes the
    policy does not let their author make, and (with ``require_signed``) changes whose
    commit carries no valid signature. With ``at_commit``, the tree is read from that
    commit in git's object store, not from the working tree (a saved plan re-derived).

    The tree is parsed and the diff computed outside any catalog transaction (a
    server's idle_in_transaction_session_timeout never sees a long parse or diff): the
    files a plan may pass over are chosen in one short transaction, then confirmed in
    the snapshot the state is read from (if they moved in between, the whole tree is
    read); the evidence of changes made outside git is read in a last short one.
    """
    for target in targets:
        check_address(target)
    from reconciler.manifests.desired import desired_state, rebase  # the manifest loader is only needed here

    env = os.environ if environ is None else environ
    files, units = tree_units(ws) if at_commit is None else ({}, {})

    def load(skip: Collection[str]) -> DesiredState:
        if at_commit is not None:
            return _desired_at(ws, at_commit, env, resolve_secrets)
        state = desired_state(ws.tree, environ=env, resolve_env=resolve_secrets, skip=skip)
        return rebase(state, ws.repo.root) if ws.repo is not None else state

    changed = (changed_files(ws) or set()) if at_commit is None else set()
    settled: dict[str, int] = {}
    if files:
        with ws.catalog.reading() as reader:
            settled = reader.settled_files(ws.source, [f for f in files.values() if f.path not in changed])
        settled = settled_units(settled, files, units)
    while True:
        skip = {display for display, file in files.items() if file.path in settled}
        state = load(skip)
        with ws.catalog.reading() as reader:
            if skip and not _still_settled(reader, ws, files, changed, settled, state):
                settled = {}
                continue  # read the whole tree, outside the transaction
            catalog = reader.state(ws.source, list(settled))
            if skip and any(d.renamed_from in catalog.live for d in state.desired.values() if d.renamed_from):
                # A rename still to apply names every record that links the old name, so every
                # file is read; a renamedFrom kept after its rename is applied costs nothing.
                settled = {}
                continue
            base, complete = reader.last_applied(ws.source)
            purged = [a for a, d in state.desired.items() if d.purge]
            stored_on = reader.stored_on(purged)
        break
    # The diff runs with no transaction open (at 100,000 records it takes seconds, which a
    # short idle_in_transaction_session_timeout would not allow); the evidence of changes
    # made outside git, and the protect flags the audit chain last recorded for what the plan
    # archives or purges, are read in a second short one. Apply re-checks every change's
    # ``against`` token under lock, so the two snapshots need not be one.
    result = diff(state.desired, catalog.live, catalog.applied, source=ws.source, stored_on=stored_on,
                  text_of=catalog.text_of)
    tampered: list[Finding] = []
    if result.outside or any(c.op.removes for c in result.changes):
        with ws.catalog.reading() as reader:
            if result.outside:
                result = _observed(reader, result, state.desired)
            tampered = _tampered(reader, result.changes, catalog.applied)
    commit = at_commit or (ws.repo.head() if ws.repo else None)
    tree = ws.repo.relative(ws.tree) if ws.repo else None
    outside = base_outside_history(ws.repo, base, commit, ws.source, ws.tree)
    if outside is not None:  # nothing can be planned against another history's apply
        return from_diff(DiffResult(findings=(Finding("", "error", outside),)), source=ws.source, commit=commit,
                         dirty=False, tree=tree, created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                         authors={}, secrets={}).narrowed(tuple(targets))
    check_targets(targets, state.desired, catalog.live)
    declared = Counter(item.location.path for item in state.desired.values())
    read = {f.path: replace(f, objects=settled.get(f.path, declared.get(f.path, 0))) for f in files.values()}
    findings = link_findings(state.links, state.desired, catalog.live)
    findings += lookalike_findings(state.desired, catalog.live)
    findings += tampered
    known = _values_at(base, catalog.applied, result.changes) if complete else None
    attribution = attribute(ws.repo, ws.tree, result.changes, state.desired, base, applier_identity(ws.repo),
                            changed=changed, known=known, head=at_commit, data_files=dict(state.data_files))
    authors = attribution.authors
    adopting = _adoptions(result, state.desired)
    adopters = attribute(ws.repo, ws.tree, adopting, state.desired, base, applier_identity(ws.repo), changed=changed,
                         known=_values_at(base, catalog.applied, adopting) if complete else None,
                         data_files=dict(state.data_files)).authors if adopting else {}
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


def _observed(reader: PlanReader, result: DiffResult, desired: Mapping[str, Desired]) -> DiffResult:
    """The diff with who changed each object outside git, and when, as the catalog tells it
    (the services' audit rows), and its drift findings saying so."""
    outside = reader.with_evidence(result.outside)
    where = {f.address: f.location for f in result.findings if f.severity == "drift"}
    findings = [f for f in result.findings if not (f.severity == "drift" and f.address in outside)]
    findings += [Finding(address, "drift", drift_message(found, declared=address in desired), where.get(address))
                 for address, found in outside.items()]
    return replace(result, outside=outside, findings=tuple(findings))


def _tampered(reader: PlanReader, changes: Sequence[Change], applied: Mapping[str, Any]) -> list[Finding]:
    """An error for every archive or purge whose stored protect flag was cleared outside apply
    (the audit chain last recorded it on): apply refuses those, so the plan says so first. The
    chain is read only for the objects the plan archives or purges."""
    destructive = [c.address for c in changes if c.op.removes and c.address in applied]
    if not destructive:
        return []
    stored = {address: bool(applied[address].protect) for address in destructive}
    return tampered_protection_findings(changes, stored, reader.recorded_protection(destructive))


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


def _still_settled(reader: PlanReader, ws: Workspace, files: Mapping[str, FileDigest], changed: Collection[str],
                   settled: Mapping[str, int], state: DesiredState) -> bool:
    """Whether the files chosen to pass over are still settled in this snapshot, and none of
    their addresses is declared again by a file that was read (a duplicate or look-alike:
    then the full read names both places)."""
    again = reader.settled_files(ws.source, [f for f in files.values() if f.path not in changed])
    if any(again.get(path) != count for path, count in settled.items()):
        return False
    seen = {folded(address) for address in state.desired}
    return not any(folded(address) in seen for address in reader.lookalikes(ws.source, settled, seen))


def _desired_at(ws: Workspace, commit: str, environ: Mapping[str, str], resolve_secrets: bool) -> DesiredState:
    """What the tree declared at ``commit``, read from git's object store (paths relative to the
    repository's root)."""
    from reconciler.app.attribution import SUFFIXES
    from reconciler.manifests.datapaths import DATA_SUFFIXES
    from reconciler.manifests.desired import desired_from
    from reconciler.git.history import manifest_filter
    from reconciler.manifests.loader import load_versions

    if ws.repo is None:
        raise ConfigurationError(f"{ws.tree} is not in a git repository: a plan of a commit cannot be read")
    pathspec = ws.repo.relative(ws.tree)
    listed = ws.repo.tree_files(commit, pathspec, manifest_filter(pathspec, SUFFIXES + DATA_SUFFIXES))
    links = ws.repo.tree_links(commit, pathspec)  # data files may be links, followed as on disk
    with ws.repo.blobs() as reader:
        contents = [(path, reader.read(blob) or b"") for path, blob in sorted(listed.items())]
        tree = load_versions(pathspec, contents, check_env=environ if resolve_secrets else None, links=links,
                             other=lambda path: reader.read(f"{commit}:{path}"))
    return desired_from(tree, environ=environ, resolve_env=resolve_secrets)


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
