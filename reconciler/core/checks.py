"""The checks that are pure functions of a plan and what was read: findings that block apply
(broken links, look-alikes, authors without an email, policy denials) and the refusals."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from reconciler.core import kinds
from reconciler.core.diff import Change, Desired, Finding, Live
from reconciler.core.model import folded
from reconciler.core.plan import Author, Plan
from reconciler.core.policy import Denial, Policy, check
from reconciler.core.text import clean, either
from reconciler.errors import ConfigurationError, ConflictError

# An apply that archives or purges more than this share of a kind's managed objects (and
# more than the minimum) needs --allow-mass-archive with the exact count.
MASS_ARCHIVE_FRACTION = 0.10
MASS_ARCHIVE_MINIMUM = 5


@dataclass(frozen=True)
class ApplyOptions:
    """What the operator allowed for this apply."""

    allow_purge: bool = False
    allow_uncommitted: bool = False
    allow_mass_archive: int | None = None
    lock_timeout: float = 60.0


def check_address(address: str) -> None:
    """Refuse a malformed ``--target`` address with the forms that are accepted."""
    kind, _, rest = address.partition(":")
    spec = kinds.BY_NAME.get(kind)
    ok = spec is not None and rest and (len(spec.identity) == 1 or "/" in rest.strip("/"))
    if not ok:
        raise ConfigurationError(
            f"--target {address!r} is not an address; use {either([spec.form for spec in kinds.REGISTRY])}"
        )


def check_targets(targets: Sequence[str], desired: Mapping[str, Any], live: Mapping[str, Any]) -> None:
    """Refuse ``--target`` addresses that name nothing: neither declared nor in the catalog."""
    unknown = [target for target in targets if target not in desired and target not in live]
    if unknown:
        raise ConfigurationError("--target matches nothing (neither declared in the tree nor in the catalog): "
                                 + ", ".join(clean(t) for t in unknown))


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
    denials = _denials(policy, changes, lambda address: authors.get(address, unknown).email)
    where = {c.address: c.location for c in changes}
    return [Finding(d.address, "error", d.message, where.get(d.address)) for d in denials]


def _denials(policy: Policy | None, changes: Sequence[Change], email_of: Callable[[str], str]) -> list[Denial]:
    """The policy's denials of ``changes``, each under the address of its change. A rename is
    checked on both names: its author must be let change the object under its old name (or a
    grant for one's own names would take over another's object by renaming it) and under its new."""
    checked: list[tuple[str, str, str]] = []
    renamed: dict[str, str] = {}
    for change in changes:
        email = email_of(change.address)
        checked.append((change.address, change.action, email))
        if change.renamed_from is not None:
            checked.append((change.renamed_from, change.action, email))
            renamed[change.renamed_from] = change.address
    return [replace(d, address=renamed.get(d.address, d.address)) for d in check(policy, checked)]


def refusals(plan: Plan, options: ApplyOptions, managed_counts: Mapping[str, int],
             policy: Policy | None = None) -> list[str]:
    """Every reason apply must refuse this plan, each naming its objects; empty when it may go.

    The policy is checked again here, so a saved plan made before a policy change is
    held to the policy in force when it is applied.
    """
    reasons = [f"{f.address}: {f.message}" if f.address else f.message for f in plan.errors]
    for denial in _denials(policy, plan.changes, lambda address: plan.author_of(address).email):
        line = f"{denial.address}: {denial.message}"
        if line not in reasons:
            reasons.append(line)
    purges = [c.address for c in plan.changes if c.op.deletes]
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
    destructive = [c for c in plan.changes if c.op.removes]
    by_kind = Counter(c.kind for c in destructive)
    tripped = {kind: n for kind, n in by_kind.items()
               if n > MASS_ARCHIVE_MINIMUM and n > MASS_ARCHIVE_FRACTION * max(managed_counts.get(kind, 0), 1)}
    if not tripped or options.allow_mass_archive == len(destructive):
        return []
    detail = ", ".join(f"{n} of {managed_counts.get(k, 0)} managed {k}s" for k, n in sorted(tripped.items()))
    return [f"the plan archives or purges {len(destructive)} objects ({detail}), more than "
            f"{MASS_ARCHIVE_FRACTION:.0%} of a kind; if that is intended, pass "
            f"--allow-mass-archive {len(destructive)}"]


def protection_tampered(plan: Plan, stored: Mapping[str, bool], recorded: Mapping[str, tuple[bool, int]]) -> list[str]:
    """The archives and purges of objects whose stored protect flag is off while the audit
    chain last recorded it on: the flag was changed outside apply, and is not trusted."""
    return [f"{address}: {_tampered(recorded[address][1])}" for address in destructive_addresses(plan)
            if address in recorded and recorded[address][0] and not stored.get(address, False)]


def tampered_protection_findings(changes: Sequence[Change], stored: Mapping[str, bool],
                                 recorded: Mapping[str, tuple[bool, int]]) -> list[Finding]:
    """``protection_tampered`` as blocking plan findings, in the same words, so that a plan
    fails where its apply would."""
    return [Finding(c.address, "error", _tampered(recorded[c.address][1]), c.location) for c in changes
            if c.op.removes and c.address in recorded and recorded[c.address][0]
            and not stored.get(c.address, False)]


def _tampered(seq: int) -> str:
    return (f"its stored protect flag is off, but the audit chain last recorded protect: true (entry {seq}); "
            "the flag was changed outside apply — set it back, or lift protection through a commit")


def destructive_addresses(plan: Plan) -> list[str]:
    """The objects the plan archives or purges."""
    return [c.address for c in plan.changes if c.op.removes]


def moved_since_plan(wanted: Mapping[str, str | None], found: Mapping[str, Live]) -> list[str]:
    """How the objects a plan touches moved since it was made: ``wanted`` maps each address to
    the token the plan saw (None: it must not exist), ``found`` holds them as they are now."""
    problems = []
    for address, token in sorted(wanted.items()):
        now = found.get(address)
        if token is None and now is not None:
            problems.append(f"{address} was created since the plan")
        elif token is not None and now is None:
            problems.append(f"{address} was deleted since the plan")
        elif now is not None and now.token != token:
            who = f" by {now.updated_by}" if now.updated_by else ""
            problems.append(f"{address} changed since the plan{who} (plan saw {token}, now {now.token})")
    return problems


def check_unmoved(problems: Sequence[str], elsewhere: Iterable[tuple[str, str]]) -> None:
    """Raise one ConflictError naming every object that moved (``problems``) or that another
    source now manages (``elsewhere``: address, source); nothing when there is neither."""
    lines = [*problems, *(f"{address} is now managed by source {other!r}" for address, other in elsewhere)]
    if lines:
        raise ConflictError("the catalog changed since the plan was made; nothing was applied:\n  "
                            + "\n  ".join(clean(line) for line in lines) + "\nrun plan again and review the new plan")
