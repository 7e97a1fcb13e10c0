"""The auditor's questions, answered from the CLI alone, over a week of history.

Seven commits by three people (one merged pull request, direct pushes, a retention change,
an archive, a purge), seven applies by different CI actors (GitHub Actions, GitLab CI,
Buildkite, each with its own run identifiers), three edits made in the catalog outside git
by the services' own code and reverted later, and one hand edit in SQL that a later commit
happens to match. Then each question an auditor asks is one command whose output is
checked; a forged entry and a truncated log are caught.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
from click.testing import CliRunner, Result

from reconciler.app import auditing as audit
from reconciler.catalog.postgres import audit_log
from reconciler.services.datasets import get_dataset, update_dataset
from reconciler.services.records import get_record, update_record
from reconciler.services.retention import upsert_retention_policy
from reconciler.cli import cli
from reconciler.core.runs import RunDraft
from reconciler.core.runs import seal as seal_run

from .conftest import run_git
from .helpers import ALICE, BOB, CAROL, commit, write
from .test_roles import ROLES_SQL, as_role

KEY = "k3y-for-the-audit-chain-0123456789abcdef"
CI_VARIABLES = (
    "GITHUB_ACTOR", "GITHUB_ACTOR_ID", "GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT", "GITHUB_RUN_NUMBER", "GITHUB_REPOSITORY",
    "GITHUB_SERVER_URL", "GITHUB_WORKFLOW", "GITHUB_JOB", "GITHUB_EVENT_NAME", "GITHUB_REF", "GITHUB_SHA",
    "GITHUB_TRIGGERING_ACTOR", "GITLAB_USER_LOGIN", "GITLAB_USER_ID", "GITLAB_USER_EMAIL", "CI_PIPELINE_ID",
    "CI_PIPELINE_URL", "CI_JOB_ID", "CI_JOB_URL", "CI_JOB_NAME", "CI_PROJECT_PATH", "CI_COMMIT_REF_NAME",
    "CI_COMMIT_SHA", "CI_MERGE_REQUEST_IID", "BUILDKITE_BUILD_CREATOR", "BUILDKITE_BUILD_CREATOR_EMAIL",
    "BUILDKITE_BUILD_ID", "BUILDKITE_BUILD_NUMBER", "BUILDKITE_JOB_ID", "BUILDKITE_BUILD_URL",
    "BUILDKITE_ORGANIZATION_SLUG", "BUILDKITE_PIPELINE_SLUG", "BUILDKITE_BRANCH", "BUILDKITE_COMMIT",
    "BUILDKITE_PULL_REQUEST", "CIRCLE_USERNAME", "BUILD_REQUESTEDFOR", "RECONCILER_AUDIT_KEY",
)

STORAGE = """\
apiVersion: reconciler/v1
kind: StorageTarget
name: lake
type: s3
config: {bucket: observatory}
"""

READINGS = """\
apiVersion: reconciler/v1
kind: Dataset
slug: obs-readings
name: Observatory readings
storageTarget: lake
retention:
  mode: time
  rules: {maxAgeHours: 720}
"""

EVENTS = """\
apiVersion: reconciler/v1
kind: Dataset
slug: obs-events
name: Observatory events
storageTarget: lake
"""

SENSORS = """\
apiVersion: reconciler/v1
kind: RecordSet
namespace: obs
defaults: {owner: team-obs, tags: [iot]}
records:
  - key: sensor-1
    metadata: {unit: celsius}
  - key: sensor-2
    metadata: {unit: kelvin}
  - key: sensor-3
"""


def day(n: int, hour: int = 10) -> str:
    """A moment of the audited week (2026-03-02 is a Monday), as git takes it."""
    return f"2026-03-{1 + n:02d}T{hour:02d}:00:00+00:00"


@dataclass
class History:
    """What the week left: the repository, the catalog, the commits and runs by name."""

    repo: Path
    db_url: str
    commits: dict[str, str] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)  # run ids, in apply order
    plan_file: Path | None = None


def ci(monkeypatch: pytest.MonkeyPatch, **variables: str) -> None:
    """The CI variables of one apply, and nothing left from the previous one (the key stays set)."""
    for name in CI_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RECONCILER_AUDIT_KEY", KEY)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


def github(monkeypatch: pytest.MonkeyPatch, actor: str, run_id: str, ref: str = "refs/heads/main") -> None:
    ci(monkeypatch, GITHUB_ACTOR=actor, GITHUB_ACTOR_ID=str(abs(hash(actor)) % 10**6), GITHUB_RUN_ID=run_id,
       GITHUB_RUN_ATTEMPT="1", GITHUB_REPOSITORY="acme/catalog", GITHUB_SERVER_URL="https://github.com",
       GITHUB_WORKFLOW="reconciler-apply", GITHUB_EVENT_NAME="push", GITHUB_REF=ref)


def cli_run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def audit_cmd(db_url: str, *args: str) -> Result:
    return cli_run("audit", *args, "--database-url", db_url)


def apply_tree(history: History, *args: str) -> str:
    """``apply --auto-approve``; returns the run id it printed."""
    result = cli_run("apply", str(history.repo / "manifests"), "--database-url", history.db_url, "--auto-approve",
                     *args)
    assert result.exit_code == 0, result.output
    run_id = next(line.split()[1] for line in result.output.splitlines() if line.startswith("Run run-"))
    history.runs.append(run_id)
    return run_id


def entries(db_url: str, *args: str) -> list[dict[str, Any]]:
    result = audit_cmd(db_url, "log", "--format", "json", *args)
    assert result.exit_code == 0, result.output
    found: list[dict[str, Any]] = json.loads(result.stdout)
    return found


@pytest.fixture
def week(git_repo: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> History:
    """The audited week: seven commits, seven applies, three services' edits reverted, one hand edit adopted."""
    history = History(git_repo, db_url)
    repo, c = git_repo, history.commits
    write(repo, "manifests/storage.yaml", STORAGE)
    write(repo, "manifests/datasets.yaml", READINGS + "---\n" + EVENTS)
    write(repo, "manifests/records/obs.yaml", SENSORS)
    c["catalog"] = commit(repo, ALICE, "The observatory catalog", date=day(1, 9))
    github(monkeypatch, "alice-gh", "1001")
    apply_tree(history)

    write(repo, "manifests/datasets.yaml", READINGS + "description: Minute readings\n---\n" + EVENTS)
    c["describe"] = commit(repo, ALICE, "Describe the readings", date=day(2, 11))
    ci(monkeypatch, GITLAB_USER_LOGIN="ops-runner", GITLAB_USER_ID="42", GITLAB_USER_EMAIL="ops@example.com",
       CI_PIPELINE_ID="7001", CI_JOB_ID="88001", CI_JOB_URL="https://gitlab.example.com/acme/catalog/-/jobs/88001",
       CI_PROJECT_PATH="acme/catalog")
    apply_tree(history)

    # Outside git: the metastore API (as Mallory) changes a sensor's owner.
    with psycopg.connect(db_url) as conn:
        row = get_record(conn, "obs", "sensor-1")
        assert row is not None
        update_record(conn, "obs", "sensor-1", expected_version=row.version, changes={"owner": "mallory-team"},
                      actor="mallory@example.com")

    # Bob shortens retention on a branch; Carol merges the pull request.
    run_git(repo, "checkout", "-q", "-b", "bob/retention")
    write(repo, "manifests/datasets.yaml", READINGS.replace("maxAgeHours: 720", "maxAgeHours: 168")
          + "description: Minute readings\n---\n" + EVENTS)
    c["retention"] = commit(repo, BOB, "Keep readings for a week", date=day(3, 14))
    run_git(repo, "checkout", "-q", "main")
    run_git(repo, "merge", "-q", "--no-ff", "-m", "Merge pull request #12 from bob/retention", "bob/retention",
            author=CAROL, extra_env={"GIT_AUTHOR_DATE": day(4, 9), "GIT_COMMITTER_DATE": day(4, 9)})
    c["merge"] = run_git(repo, "rev-parse", "HEAD").strip()
    github(monkeypatch, "carol-gh", "1003")
    apply_tree(history)

    # Outside git again: the timestore API renames the events dataset (as ops) and a DBA
    # lengthens the readings' retention through the retention endpoint.
    with psycopg.connect(db_url) as conn:
        events = get_dataset(conn, "obs-events")
        assert events is not None
        update_dataset(conn, "obs-events", expected_updated_at=events.updated_at,
                       changes={"name": "Events (renamed)"}, actor="ops@example.com")
    with psycopg.connect(db_url) as conn:
        readings = get_dataset(conn, "obs-readings")
        assert readings is not None
        upsert_retention_policy(conn, readings.id, {"mode": "time", "rules": {"maxAgeHours": 2160}},
                                actor="dba@example.com")
    ci(monkeypatch, BUILDKITE_BUILD_CREATOR="nightly-drift", BUILDKITE_BUILD_ID="b-5001",
       BUILDKITE_BUILD_NUMBER="5001", BUILDKITE_JOB_ID="j-1",
       BUILDKITE_BUILD_URL="https://buildkite.com/acme/drift/builds/5001")
    apply_tree(history)  # the nightly drift run: reverts both, no new commit

    write(repo, "manifests/records/obs.yaml", SENSORS.replace("  - key: sensor-2\n    metadata: {unit: kelvin}\n", ""))
    c["archive"] = commit(repo, CAROL, "Retire sensor-2", date=day(5, 10))
    github(monkeypatch, "carol-gh", "1005")
    apply_tree(history)

    # A hand edit in SQL (no service, no audit row) that Bob's next commit happens to match.
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE metastore.metastore_records SET tags = '{iot,calibrated}', version = version + 1, "
                     "updated_at = now(), updated_by = 'eve@example.com' WHERE record_key = 'sensor-3'")
    write(repo, "manifests/records/obs.yaml", SENSORS.replace("  - key: sensor-2\n    metadata: {unit: kelvin}\n", "")
          .replace("  - key: sensor-3\n", "  - key: sensor-3\n    tags: [iot, calibrated]\n")
          .replace("metadata: {unit: celsius}", "metadata: {unit: celsius, site: north}"))
    c["calibrate"] = commit(repo, BOB, "Calibrated sensor-3; sensor-1 is at the north site", date=day(6, 16))
    github(monkeypatch, "bob-gh", "1006")
    apply_tree(history)

    write(repo, "manifests/records/gone.yaml",
          "apiVersion: reconciler/v1\nkind: Record\nnamespace: obs\nkey: sensor-2\nowner: team-obs\npurge: true\n")
    c["purge"] = commit(repo, CAROL, "Purge sensor-2", date=day(7, 8))
    # Reviewed as a saved plan, applied exactly.
    history.plan_file = tmp_path / "plan.json"
    github(monkeypatch, "release-bot", "1007")
    planned = cli_run("plan", str(repo / "manifests"), "--database-url", db_url, "--out", str(history.plan_file))
    assert planned.exit_code == 0, planned.output
    result = cli_run("apply", str(repo / "manifests"), "--database-url", db_url, "--plan", str(history.plan_file),
                     "--allow-purge", "--auto-approve")
    assert result.exit_code == 0, result.output
    history.runs.append(next(line.split()[1] for line in result.output.splitlines() if line.startswith("Run ")))
    return history


# --- who asked, through which review ---------------------------------------------------------------------


def test_who_changed_retention_to_168_and_through_which_pull_request(week: History) -> None:
    found = [e for e in entries(week.db_url, "--address", "dataset:obs-readings", "--reason", "manifest")
             if e["after"]["retention"] == {"mode": "time", "rules": {"maxAgeHours": 168}}]
    assert len(found) == 1
    (entry,) = found
    assert (entry["author_name"], entry["author_email"]) == BOB
    assert entry["commit_sha"] == week.commits["retention"] and entry["commit_date"] == "2026-03-04T14:00:00.000000Z"
    assert (entry["merge_commit"], entry["pull_request"]) == (week.commits["merge"], 12)
    assert entry["applier"] == "carol-gh"
    assert entry["ci_url"] == "https://github.com/acme/catalog/actions/runs/1003/attempts/1"
    assert entry["applied_by"]["run_id"] == "1003" and entry["applied_by"]["system"] == "github-actions"
    text = audit_cmd(week.db_url, "log", "--address", "dataset:obs-readings", "--reason", "manifest").output
    block = next(b for b in text.split("\n\n") if "maxAgeHours\":168" in b)
    assert f"  author    Bob Berg <bob@example.com>, {week.commits['retention'][:12]} of 2026-03-04 14:00 UTC" in block
    assert f"  review    merged in {week.commits['merge'][:12]}, pull request #12" in block
    assert "  applier   carol-gh (github-actions run_id 1003, run_attempt 1), run-" in block
    # The run that applied it: who, which CI run, which plan.
    run = next(r for r in json.loads(audit_cmd(week.db_url, "runs", "--format", "json").stdout)
               if r["run_id"] == entry["run_id"])
    assert (run["applier"], run["ci_url"], run["plan_digest"]) == ("carol-gh", entry["ci_url"], entry["plan_digest"])
    assert run["command"] == f"reconciler apply {week.repo / 'manifests'} --auto-approve"


def test_every_change_a_person_asked_for_between_two_commit_dates(week: History) -> None:
    asked = entries(week.db_url, "--author", "bob@example.com", "--committed-since", "2026-03-03",
                    "--committed-until", "2026-03-08")
    assert sorted((e["address"], e["reason"], e["commit_sha"]) for e in asked) == [
        ("dataset:obs-readings", "manifest", week.commits["retention"]),
        ("record:obs/sensor-1", "manifest", week.commits["calibrate"]),
        ("record:obs/sensor-3", "adoption", week.commits["calibrate"]),
    ]
    assert entries(week.db_url, "--author", "bob@example.com", "--committed-until", "2026-03-04") == []
    # The same question by day, on the export, with DuckDB.
    out = week.repo.parent / "audit.parquet"
    assert audit_cmd(week.db_url, "export", str(out), "--runs", str(week.repo.parent / "runs.parquet")).exit_code == 0
    per_day = duckdb.sql(f"""SELECT strftime(commit_date, '%Y-%m-%d') AS day, author_email, count(*) AS changes
                             FROM '{out}' WHERE reason = 'manifest' GROUP BY ALL ORDER BY 1, 2""").fetchall()
    assert per_day == [("2026-03-02", "alice@example.com", 6), ("2026-03-03", "alice@example.com", 1),
                       ("2026-03-04", "bob@example.com", 1), ("2026-03-06", "carol@example.com", 1),
                       ("2026-03-07", "bob@example.com", 1), ("2026-03-08", "carol@example.com", 1)]
    joined = duckdb.sql(f"""SELECT r.applier, count(*) FROM '{out}' e
                            JOIN '{week.repo.parent / "runs.parquet"}' r USING (run_id)
                            GROUP BY ALL ORDER BY 1""").fetchall()
    assert [name for name, _ in joined] == ["alice-gh", "bob-gh", "carol-gh", "nightly-drift", "ops-runner",
                                            "release-bot"]


def test_every_out_of_band_edit_with_who_when_and_the_apply_that_reverted_it(week: History) -> None:
    with psycopg.connect(week.db_url) as conn:
        times = dict(conn.execute(
            """SELECT 'record:obs/sensor-1', max(created_at) FROM metastore.metastore_record_audits
                 WHERE actor = 'mallory@example.com'
               UNION ALL SELECT 'dataset:obs-events', max(created_at) FROM timestore.dataset_access_audit
                 WHERE actor_id = 'ops@example.com'
               UNION ALL SELECT 'dataset:obs-readings', max(created_at) FROM timestore.lifecycle_audit_log
                 WHERE payload->>'actor' = 'dba@example.com'
               UNION ALL SELECT 'record:obs/sensor-3', max(updated_at) FROM metastore.metastore_records
                 WHERE record_key = 'sensor-3' AND version = 2""").fetchall())
    found = sorted(entries(week.db_url, "--reason", "out-of-band"), key=lambda e: e["seq"])
    assert [(e["address"], e["author_email"], e["fields"], e["before"], e["after"]) for e in found] == [
        ("record:obs/sensor-1", "mallory@example.com", ["owner"], {"owner": "team-obs"}, {"owner": "mallory-team"}),
        ("dataset:obs-events", "ops@example.com", ["name"], {"name": "Observatory events"},
         {"name": "Events (renamed)"}),
        ("dataset:obs-readings", "dba@example.com", ["retention"],
         {"retention": {"mode": "time", "rules": {"maxAgeHours": 168}}},
         {"retention": {"mode": "time", "rules": {"maxAgeHours": 2160}}}),
        ("record:obs/sensor-3", "eve@example.com", ["tags"], {"tags": ["iot"]}, {"tags": ["iot", "calibrated"]}),
    ]
    for entry in found:  # when: the change's own time, to the millisecond, and where that was read
        assert entry["changed_at"][:23] == audit.utc_text(times[entry["address"]])[:23]
    assert [e["evidence"].split(" id ")[0] for e in found] == [
        "metastore.metastore_record_audits", "timestore.dataset_access_audit", "timestore.lifecycle_audit_log",
        "metastore.metastore_records updated_by, updated_at"]
    # Which apply reverted (or adopted) each: the next entry of the object, in the same run.
    resolved = []
    for entry in found:
        same_run = entries(week.db_url, "--run", entry["run_id"], "--address", entry["address"])
        after = min((e for e in same_run if e["seq"] > entry["seq"]), key=lambda e: e["seq"])
        assert after["seq"] == entry["seq"] + 1
        resolved.append((entry["address"], after["reason"], after["applier"]))
    assert resolved == [("record:obs/sensor-1", "drift", "carol-gh"), ("dataset:obs-events", "drift", "nightly-drift"),
                        ("dataset:obs-readings", "drift", "nightly-drift"),
                        ("record:obs/sensor-3", "adoption", "bob-gh")]
    adoption = entries(week.db_url, "--address", "record:obs/sensor-3", "--reason", "adoption")[0]
    assert (adoption["author_email"], adoption["commit_sha"]) == (BOB[1], week.commits["calibrate"])
    text = audit_cmd(week.db_url, "log", "--reason", "out-of-band", "--address", "record:obs/sensor-1").output
    assert "update record:obs/sensor-1 (out-of-band)" in text
    assert "  by        mallory@example.com at " in text
    assert ", outside git (metastore.metastore_record_audits id " in text
    # The nightly run that reverted two of them, as the runs list shows it.
    runs = audit_cmd(week.db_url, "runs").output
    nightly = next(b for b in runs.split("\n\n") if "nightly-drift" in b)
    assert "  applier   nightly-drift (buildkite build_number 5001, build_id b-5001, job_id j-1)" in nightly
    assert "  ci        https://buildkite.com/acme/drift/builds/5001#j-1" in nightly
    assert "0 create" not in nightly and "2 update; 4 audit entries" in nightly


def test_the_services_audit_rows_carry_the_run_id(week: History) -> None:
    with psycopg.connect(week.db_url) as conn:
        tagged = conn.execute("SELECT DISTINCT metadata->>'reconcilerRunId' FROM timestore.dataset_access_audit "
                              "WHERE metadata ? 'reconcilerRunId'").fetchall()
        retention = conn.execute("SELECT payload->>'reconcilerRunId' FROM timestore.lifecycle_audit_log "
                                 "WHERE payload->>'actor' = 'bob@example.com'").fetchall()
    # Dataset rows: the creates, the description, the renamed events' revert (retention-only changes write none);
    # the rows the services wrote outside git carry none.
    assert {run for (run,) in tagged} == {week.runs[0], week.runs[1], week.runs[3]}
    assert retention == [(week.runs[2],)]


# --- the plan that was reviewed ------------------------------------------------------------------------------


def test_the_saved_plan_keeps_its_digest_in_the_log(week: History) -> None:
    assert week.plan_file is not None
    saved = json.loads(week.plan_file.read_text())
    logged = entries(week.db_url, "--run", week.runs[-1])
    assert [e["address"] for e in logged] == ["record:obs/sensor-2"] and logged[0]["action"] == "purge"
    assert {e["plan_digest"] for e in logged} == {saved["digest"]}
    run = json.loads(audit_cmd(week.db_url, "runs", "--limit", "1", "--format", "json").stdout)[0]
    assert run["plan_digest"] == saved["digest"] and run["command"] == (
        f"reconciler apply {week.repo / 'manifests'} --plan {week.plan_file} --auto-approve --allow-purge")


def test_two_plans_of_the_same_state_have_one_digest_shown_in_every_rendering(
        git_repo: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    write(git_repo, "manifests/storage.yaml", STORAGE)
    commit(git_repo, ALICE, "lake", date=day(1))
    ci(monkeypatch, GITHUB_ACTOR="one")
    first = json.loads(cli_run("plan", str(git_repo / "manifests"), "--database-url", db_url, "--format",
                               "json").stdout)
    ci(monkeypatch, GITHUB_ACTOR="another")
    again = cli_run("plan", str(git_repo / "manifests"), "--database-url", db_url, "--format", "json")
    assert json.loads(again.stdout)["digest"] == first["digest"]
    text = cli_run("plan", str(git_repo / "manifests"), "--database-url", db_url).output
    assert f"Plan digest: {first['digest']}" in text.splitlines()[1]
    markdown = cli_run("plan", str(git_repo / "manifests"), "--database-url", db_url, "--format", "markdown").output
    assert f"plan digest `{first['digest']}`" in markdown


# --- forgery and truncation ----------------------------------------------------------------------------------


def forge(apply_url: str, commit_sha: str) -> int:
    """As the apply role, without the key: append a correctly chained entry blaming Alice's commit for a
    retention she never declared, and a correctly chained run that claims it; returns its seq."""
    with psycopg.connect(apply_url) as conn, conn.transaction():
        head = audit_log.lock_head(conn)
        draft = audit.Draft("run-forged", "default", "dataset:obs-readings", "dataset", "update",
                            {"retention": {"mode": "time", "rules": {"maxAgeHours": 168}}},
                            {"retention": {"mode": "time", "rules": {"maxAgeHours": 24}}}, ("retention",),
                            commit_sha, ALICE[0], ALICE[1], False, "manifests/datasets.yaml", 1, "alice-gh",
                            "0" * 64, reason="manifest")
        (entry,) = audit.seal([draft], after_seq=head.seq, after_hash=head.hash or audit.GENESIS,
                              recorded_at=head.now)
        entry = replace(entry, mac="f" * 64)  # looks keyed
        audit_log.append(conn, [entry.row()])
        run = seal_run(RunDraft("run-forged", "default", "alice-gh", commit_sha, "0" * 64, "applied",
                                {"update": 1}), head, entries=1, first_entry=entry.seq, key=None)
        audit_log.insert_run(conn, replace(run, mac="f" * 64).values())
        return entry.seq


@pytest.fixture
def apply_role(db: psycopg.Connection[Any], db_url: str) -> str:
    db.execute(ROLES_SQL.read_text().encode())
    return as_role(db_url, "reconciler_apply")


def test_a_forged_entry_is_caught_by_replay_and_by_the_keyed_chain(
        week: History, apply_role: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ci(monkeypatch)
    head = audit_cmd(week.db_url, "verify").output.splitlines()[0].split()[-1]
    seq = forge(apply_role, week.commits["describe"])
    monkeypatch.delenv("RECONCILER_AUDIT_KEY")
    # The chains hold, the runs account for it, the commit exists and was merged: only replay and the key see it.
    passed = audit_cmd(week.db_url, "verify", "--git", str(week.repo), "--expect-head", head)
    assert passed.exit_code == 0, passed.output
    assert "set RECONCILER_AUDIT_KEY to check them (not checked)" in passed.output
    replayed = audit_cmd(week.db_url, "verify", "--git", str(week.repo), "--replay")
    assert replayed.exit_code == 1
    assert replayed.output.strip() == (
        f"error: audit log verification failed: entry {seq} (dataset:obs-readings, run run-forged): "
        f"manifests/datasets.yaml at commit {week.commits['describe'][:12]} declares dataset:obs-readings with "
        'retention.rules {"maxAgeHours": 720}, not {"maxAgeHours": 24}')
    keyed = cli_run("audit", "verify", "--database-url", week.db_url, env={"RECONCILER_AUDIT_KEY": KEY})
    assert keyed.exit_code == 1
    assert keyed.output.strip() == (
        f"error: audit log verification failed: entry {seq} (dataset:obs-readings, run run-forged): its MAC does "
        "not match RECONCILER_AUDIT_KEY: it was not written with this key")


def test_without_the_forgery_everything_verifies_replays_and_is_keyed(week: History,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ci(monkeypatch)
    result = audit_cmd(week.db_url, "verify", "--git", str(week.repo), "--replay")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("Audit log verified: 19 entries, head ")
    assert lines[1].startswith("Runs verified: 7 runs, head ") and lines[1].endswith(
        "each holds exactly the entries it appended")
    assert lines[2] == "Keyed from entry 1: every entry since carries a MAC; each matches RECONCILER_AUDIT_KEY."
    assert lines[3] == f"All 6 commit(s) are in {week.repo} and reachable from HEAD."
    assert lines[4] == "5 commit(s) reached HEAD without a merge or a pull request (pushed directly):"
    pushed = [line.split()[0] for line in lines[5:10]]
    assert pushed == [week.commits[name][:12] for name in ("catalog", "describe", "archive", "calibrate", "purge")]
    assert week.commits["retention"][:12] not in result.output.split("pushed directly")[1]
    assert lines[10].startswith("Replayed 11 entries against git: each named commit declares the values recorded")
    # An apply without the key is refused once the log is keyed.
    monkeypatch.delenv("RECONCILER_AUDIT_KEY")
    write(week.repo, "manifests/storage.yaml", STORAGE.replace("observatory", "observatory-2"))
    commit(week.repo, ALICE, "another bucket", date=day(7, 12))
    refused = cli_run("apply", str(week.repo / "manifests"), "--database-url", week.db_url, "--auto-approve")
    assert refused.exit_code == 1
    assert "the audit log is keyed (entry 19 carries a MAC) and RECONCILER_AUDIT_KEY is not set" in refused.output


def test_an_anchor_taken_before_a_truncation_detects_it(week: History, db: psycopg.Connection[Any],
                                                      tmp_path: Path) -> None:
    anchor = tmp_path / "anchor.json"
    taken = audit_cmd(week.db_url, "anchor", "--file", str(anchor), "--git", str(week.repo))
    assert taken.exit_code == 0, taken.output
    assert taken.output.splitlines()[0].startswith("Anchor: entry 19 (head ")
    assert f"the git note of commit {week.commits['purge'][:12]}" in taken.output
    assert "git notes" not in taken.output and run_git(week.repo, "notes", "--ref", "reconciler-audit", "show",
                                                       week.commits["purge"]).startswith('{"reconciler_audit_anchor"')
    checked = audit_cmd(week.db_url, "verify", "--anchor", str(anchor), "--notes", str(week.repo))
    assert checked.exit_code == 0 and "2 anchor(s) checked" in checked.output
    # The owner of the tables cuts the last apply from both chains: each is still a chain...
    db.execute("ALTER TABLE reconciler.audit_log DISABLE TRIGGER USER")
    db.execute("DELETE FROM reconciler.audit_log WHERE seq = 19")
    db.execute("ALTER TABLE reconciler.audit_log ENABLE TRIGGER USER")
    db.execute("DELETE FROM reconciler.runs WHERE seq = 7")
    assert audit_cmd(week.db_url, "verify").exit_code == 0
    # ...but not the one the anchors name.
    for option, value in (("--anchor", str(anchor)), ("--notes", str(week.repo))):
        cut = audit_cmd(week.db_url, "verify", option, value)
        assert cut.exit_code == 1
        assert "names entry 19 (hash " in cut.output and "but the log holds only 18 entries" in cut.output
        assert "the tail was truncated" in cut.output
