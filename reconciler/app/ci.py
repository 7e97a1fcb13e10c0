"""Who applies: the CI run's own identifiers beside its actor, or the local machine's identities.

An apply in CI names the actor the CI system gives (``GITHUB_ACTOR``, …) and, beside it,
the identifiers of the run, so that the claim can be checked against the CI's own records
(the run's page, its logs, its audit trail). An apply outside CI names the local git
identity and the operating-system user, marked ``local``: neither is verified by anything.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# refs/pull/42/merge (GitHub, pull_request events) names the pull request of the run.
_GITHUB_PULL_REF = re.compile(r"^refs/pull/(\d+)/")


@dataclass(frozen=True)
class Identity:
    """Who applies, as the audit log records it (``applied_by``)."""

    kind: str  # "ci" | "local"
    actor: str  # the name the applier column holds
    details: Mapping[str, Any]  # every identifier known, without empty values
    url: str | None = None  # the CI run (job) page
    pull_request: int | None = None  # the pull or merge request the CI run is for

    def to_json(self) -> dict[str, Any]:
        """The ``applied_by`` object: kind, actor and the identifiers, nothing empty."""
        return {"kind": self.kind, "actor": self.actor, **self.details}


def _pick(env: Mapping[str, str], **names: str) -> dict[str, str]:
    """``{key: env[variable]}`` for every variable that is set and not empty."""
    return {key: env[variable].strip() for key, variable in names.items() if env.get(variable, "").strip()}


def _number(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() and 0 < int(text) < 2**31 else None


def _github(env: Mapping[str, str]) -> Identity | None:
    if not env.get("GITHUB_ACTOR", "").strip():
        return None
    ids = _pick(env, actor_id="GITHUB_ACTOR_ID", triggering_actor="GITHUB_TRIGGERING_ACTOR",
                run_id="GITHUB_RUN_ID", run_attempt="GITHUB_RUN_ATTEMPT", run_number="GITHUB_RUN_NUMBER",
                workflow="GITHUB_WORKFLOW", job="GITHUB_JOB", event="GITHUB_EVENT_NAME",
                repository="GITHUB_REPOSITORY", ref="GITHUB_REF", sha="GITHUB_SHA")
    url = None
    if "repository" in ids and "run_id" in ids:
        server = env.get("GITHUB_SERVER_URL", "").strip().rstrip("/") or "https://github.com"
        url = f"{server}/{ids['repository']}/actions/runs/{ids['run_id']}"
        if "run_attempt" in ids:
            url += f"/attempts/{ids['run_attempt']}"
    pulled = _GITHUB_PULL_REF.match(ids.get("ref", ""))
    return Identity("ci", env["GITHUB_ACTOR"].strip(), {"system": "github-actions", **ids},
                    url, _number(pulled.group(1)) if pulled else None)


def _gitlab(env: Mapping[str, str]) -> Identity | None:
    if not env.get("GITLAB_USER_LOGIN", "").strip():
        return None
    ids = _pick(env, actor_id="GITLAB_USER_ID", email="GITLAB_USER_EMAIL", pipeline_id="CI_PIPELINE_ID",
                job_id="CI_JOB_ID", job="CI_JOB_NAME", project="CI_PROJECT_PATH", ref="CI_COMMIT_REF_NAME",
                sha="CI_COMMIT_SHA", pipeline_url="CI_PIPELINE_URL", merge_request="CI_MERGE_REQUEST_IID")
    url = env.get("CI_JOB_URL", "").strip() or ids.get("pipeline_url")
    return Identity("ci", env["GITLAB_USER_LOGIN"].strip(), {"system": "gitlab-ci", **ids},
                    url, _number(ids.get("merge_request")))


def _buildkite(env: Mapping[str, str]) -> Identity | None:
    if not env.get("BUILDKITE_BUILD_CREATOR", "").strip():
        return None
    ids = _pick(env, email="BUILDKITE_BUILD_CREATOR_EMAIL", build_id="BUILDKITE_BUILD_ID",
                build_number="BUILDKITE_BUILD_NUMBER", job_id="BUILDKITE_JOB_ID",
                organization="BUILDKITE_ORGANIZATION_SLUG", pipeline="BUILDKITE_PIPELINE_SLUG",
                branch="BUILDKITE_BRANCH", sha="BUILDKITE_COMMIT", build_url="BUILDKITE_BUILD_URL",
                pull_request="BUILDKITE_PULL_REQUEST")
    if ids.get("pull_request") == "false":
        del ids["pull_request"]
    url = ids.get("build_url")
    if url and "job_id" in ids:
        url += f"#{ids['job_id']}"
    return Identity("ci", env["BUILDKITE_BUILD_CREATOR"].strip(),
                    {"system": "buildkite", **ids}, url, _number(ids.get("pull_request")))


def _actor_only(system: str, actor: str, **names: str) -> Callable[[Mapping[str, str]], Identity | None]:
    """A CI system read for its actor and a few identifiers only."""
    def read(env: Mapping[str, str]) -> Identity | None:
        if not env.get(actor, "").strip():
            return None
        ids = _pick(env, **names)
        return Identity("ci", env[actor].strip(), {"system": system, **ids}, ids.get("url"))
    return read


# In the order an applier is looked for (the first CI whose variables are set wins).
_SYSTEMS: tuple[Callable[[Mapping[str, str]], Identity | None], ...] = (
    _github, _gitlab, _buildkite,
    _actor_only("circleci", "CIRCLE_USERNAME", build_number="CIRCLE_BUILD_NUM", url="CIRCLE_BUILD_URL",
                repository="CIRCLE_PROJECT_REPONAME", sha="CIRCLE_SHA1"),
    _actor_only("azure-pipelines", "BUILD_REQUESTEDFOR", build_id="BUILD_BUILDID", email="BUILD_REQUESTEDFOREMAIL",
                sha="BUILD_SOURCEVERSION"),
)


def ci_identity(env: Mapping[str, str]) -> Identity | None:
    """The CI run applying, from the CI's own variables; None outside CI. A CI system is
    recognised by the variable naming its actor (``GITHUB_ACTOR``, ``GITLAB_USER_LOGIN``,
    ``BUILDKITE_BUILD_CREATOR``, ``CIRCLE_USERNAME``, ``BUILD_REQUESTEDFOR``, in that order)."""
    for read in _SYSTEMS:
        found = read(env)
        if found is not None:
            return found
    return None


def local_identity(os_user: str, git_name: str | None, git_email: str | None) -> Identity:
    """An apply outside CI: the OS user as the actor, with the local git identity beside it."""
    details = {key: value for key, value in (("os_user", os_user), ("git_name", git_name), ("git_email", git_email))
               if value and value != "unknown"}
    return Identity("local", os_user, details)
