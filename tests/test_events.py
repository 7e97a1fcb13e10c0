"""Platform events (SPEC section 7) on a real PostgreSQL, a real HTTP event proxy and a real
redis-server: what each applied record change announces, in order, with the metastore's
payloads; the outbox that keeps them through a crash or a bus that is down; and
deliverers that never reorder or send an event under a new id."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

from reconciler.app import events as delivering
from reconciler.catalog.postgres.catalog import PostgresCatalog
from tests.event_bus import event_proxy, free_port, queued_jobs, redis_server
from click.testing import CliRunner, Result

from reconciler.cli import cli
from tests.helpers import ALICE, BOB, commit, invoke, js_iso, write
from tests.test_roles import roles  # noqa: F401  (the fixture)

STORAGE = """\
apiVersion: reconciler/v1
kind: StorageTarget
name: yard
type: clickhouse
---
apiVersion: reconciler/v1
kind: Dataset
slug: fleet-positions
name: Fleet positions
storageTarget: yard
"""

STEP1 = """\
apiVersion: reconciler/v1
kind: RecordSet
namespace: fleet
defaults: {owner: team-fleet, tags: [iot]}
records:
  - key: truck-a
    metadata: {unit: km}
  - key: truck-b
  - key: truck-c
    deleted: true
  - key: truck-d
  - key: truck-e
    tags: [iot, old]
"""

# truck-a updated, truck-b's manifest removed (archived), truck-c restored, truck-d archived
# with a new owner (an update, then a delete), truck-e purged.
STEP2 = """\
apiVersion: reconciler/v1
kind: RecordSet
namespace: fleet
defaults: {owner: team-fleet, tags: [iot]}
records:
  - key: truck-a
    metadata: {unit: mi}
  - key: truck-c
  - key: truck-d
    owner: team-yard
    deleted: true
  - key: truck-e
    purge: true
"""

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def record_row(db: psycopg.Connection[Any], key: str) -> dict[str, Any]:
    """The record fleet/<key> as the metastore's serializeRecord writes it, from its row."""
    row = db.execute("""SELECT namespace, record_key, metadata, tags, owner, schema_hash, version, created_at,
                               updated_at, deleted_at, created_by, updated_by
                        FROM metastore.metastore_records WHERE namespace = 'fleet' AND record_key = %s""",
                     (key,)).fetchone()
    assert row is not None
    return {"namespace": row[0], "key": row[1], "metadata": row[2], "tags": list(row[3]), "owner": row[4],
            "schemaHash": row[5], "version": row[6], "createdAt": js_iso(row[7]), "updatedAt": js_iso(row[8]),
            "deletedAt": js_iso(row[9]) if row[9] else None, "createdBy": row[10], "updatedBy": row[11]}


def outbox(db: psycopg.Connection[Any]) -> list[tuple[str, str | None]]:
    """Every event in the outbox, in order: (id, delivered?)."""
    return [(str(i), d) for i, d in db.execute(
        "SELECT id, delivered_at IS NOT NULL FROM reconciler.event_outbox ORDER BY seq").fetchall()]


def check_envelope(envelope: dict[str, Any], run_id: str) -> None:
    """What every envelope holds besides its type and payload: exactly the platform's keys."""
    assert set(envelope) == {"id", "type", "source", "occurredAt", "payload", "correlationId"}
    assert uuid.UUID(envelope["id"]).version == 4
    assert envelope["source"] == "reconciler" and envelope["correlationId"] == run_id
    assert ISO.fullmatch(envelope["occurredAt"]), envelope["occurredAt"]


def summary(envelopes: list[dict[str, Any]]) -> list[tuple[str, str, str | None, int]]:
    """Each event as (type, key, mode, the record's version)."""
    return [(e["type"], e["payload"]["key"], e["payload"].get("mode"), e["payload"]["record"]["version"])
            for e in envelopes]


def events(db_url: str, *args: str) -> Result:
    """``reconciler events ARGS`` on the catalog at ``db_url``, in-process."""
    return CliRunner().invoke(cli, ["events", "--database-url", db_url, *args], catch_exceptions=False)


def applied(repo: Path, db_url: str, *args: str) -> tuple[dict[str, Any], str]:
    """``apply --auto-approve --format json``: the result and what it said on stderr."""
    result = invoke(repo, db_url, "apply", "--auto-approve", "--format", "json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


def test_each_applied_record_change_is_announced_as_the_metastore_announces_it(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    with event_proxy() as proxy:
        monkeypatch.setenv("APPHUB_EVENT_PROXY_URL", proxy.url)
        monkeypatch.setenv("APPHUB_EVENT_PROXY_TOKEN", " proxy-secret ")
        write(git_repo, "manifests/storage.yaml", STORAGE)
        write(git_repo, "manifests/records.yaml", STEP1)
        commit(git_repo, ALICE, "fleet")
        first, said = applied(git_repo, db_url)
        assert "Platform events: 6 events delivered to the event proxy at " in said
        assert first["events"]["delivered"] == 6 and first["events"]["pending"] == 0

        # The HTTP request is the publisher's: POST, JSON, the bearer token, the URL as given.
        assert {(r.method, r.path, r.headers["content-type"], r.headers["authorization"])
                for r in proxy.received} == {("POST", "/internal/events/publish", "application/json",
                                              "Bearer proxy-secret")}
        sent = proxy.envelopes
        for envelope in sent:
            check_envelope(envelope, first["run_id"])
        # No event for the storage target or the dataset; a record created deleted is a create, then a delete.
        assert summary(sent) == [
            ("metastore.record.created", "truck-a", None, 1), ("metastore.record.created", "truck-b", None, 1),
            ("metastore.record.created", "truck-c", None, 1), ("metastore.record.deleted", "truck-c", "soft", 2),
            ("metastore.record.created", "truck-d", None, 1), ("metastore.record.created", "truck-e", None, 1)]
        truck_a = record_row(db, "truck-a")
        assert sent[0]["payload"] == {"namespace": "fleet", "key": "truck-a", "actor": "alice@example.com",
                                      "record": truck_a}
        assert truck_a["metadata"] == {"unit": "km"} and truck_a["deletedAt"] is None
        truck_c = record_row(db, "truck-c")
        assert sent[2]["payload"]["record"] == {**truck_c, "version": 1, "deletedAt": None}
        assert sent[3]["payload"] == {"namespace": "fleet", "key": "truck-c", "actor": "alice@example.com",
                                      "record": truck_c, "mode": "soft"}
        assert [i for i, _ in outbox(db)] == [e["id"] for e in sent] and all(d for _, d in outbox(db))

        gone = record_row(db, "truck-e")
        c_deleted = db.execute("SELECT id, version FROM metastore.metastore_record_audits WHERE record_key = "
                               "'truck-c' AND action = 'delete'").fetchone()
        write(git_repo, "manifests/records.yaml", STEP2)
        write(git_repo, "manifests/storage.yaml", STORAGE.replace("name: Fleet positions", "name: Fleet"))
        commit(git_repo, BOB, "step 2")
        second, _ = applied(git_repo, db_url, "--allow-purge")
        sent = proxy.envelopes[6:]
        for envelope in sent:
            check_envelope(envelope, second["run_id"])
        by_key = {e["payload"]["key"]: e for e in sent}
        # In the apply's order of changes, each record's operations in version order.
        order = [o["address"].rsplit("/", 1)[1] for o in second["objects"] if o["address"].startswith("record:")]
        assert list(dict.fromkeys(e["payload"]["key"] for e in sent)) == order
        assert sorted(summary(sent)) == sorted([
            ("metastore.record.updated", "truck-a", None, 2), ("metastore.record.deleted", "truck-b", "soft", 2),
            ("metastore.record.updated", "truck-c", None, 3), ("metastore.record.updated", "truck-d", None, 2),
            ("metastore.record.deleted", "truck-d", "soft", 3), ("metastore.record.deleted", "truck-e", "hard", 1)])
        assert by_key["truck-a"]["payload"] == {"namespace": "fleet", "key": "truck-a", "actor": "bob@example.com",
                                                "record": record_row(db, "truck-a")}
        assert by_key["truck-b"]["payload"] == {"namespace": "fleet", "key": "truck-b", "actor": "bob@example.com",
                                                "record": record_row(db, "truck-b"), "mode": "soft"}
        # A restore is the metastore's restore: an update naming the audit row of the delete it undoes.
        assert c_deleted is not None
        assert by_key["truck-c"]["payload"] == {"namespace": "fleet", "key": "truck-c", "actor": "bob@example.com",
                                                "record": record_row(db, "truck-c"),
                                                "restoredFrom": {"auditId": c_deleted[0], "version": c_deleted[1]}}
        truck_d = [e for e in sent if e["payload"]["key"] == "truck-d"]
        assert truck_d[0]["payload"]["record"] == {**record_row(db, "truck-d"), "version": 2, "deletedAt": None}
        assert truck_d[1]["payload"]["record"] == record_row(db, "truck-d")
        assert truck_d[1]["payload"]["record"]["owner"] == "team-yard"
        # A purge announces the record as it was, as the metastore's hard delete does.
        assert by_key["truck-e"]["payload"] == {"namespace": "fleet", "key": "truck-e", "actor": "bob@example.com",
                                                "record": gone, "mode": "hard"}
        # Applying the same tree again announces nothing.
        again, said = applied(git_repo, db_url, "--allow-purge")
        assert again["events"] == {"bus": again["events"]["bus"], "delivered": 0, "pending": 0, "error": None}
        assert len(proxy.envelopes) == 12 and "Platform events" not in said


def test_events_are_jobs_of_the_bullmq_ingress_queue_as_the_event_bus_adds_them(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    with redis_server(tmp_path / "redis") as redis:
        monkeypatch.setenv("REDIS_URL", f"127.0.0.1:{redis.port}")  # host:port, as the services accept it
        monkeypatch.setenv("APPHUB_EVENT_QUEUE_NAME", "fleet_ingress")
        write(git_repo, "manifests/records.yaml", STEP1)
        commit(git_repo, ALICE, "fleet")
        result, said = applied(git_repo, db_url)
        assert f"6 events delivered to the BullMQ queue 'fleet_ingress' on redis://127.0.0.1:{redis.port}" in said
        jobs = queued_jobs(redis.url, "fleet_ingress")
        assert [name for name, _, _ in jobs] == ["apphub.event"] * 6
        assert [job_id for _, job_id, _ in jobs] == [i for i, _ in outbox(db)]
        assert all(set(data) == {"envelope"} and data["envelope"]["id"] == job_id for _, job_id, data in jobs)
        first = jobs[0][2]["envelope"]
        check_envelope(first, result["run_id"])
        assert first["type"] == "metastore.record.created"
        assert first["payload"] == {"namespace": "fleet", "key": "truck-a", "actor": "alice@example.com",
                                    "record": record_row(db, "truck-a")}
        assert queued_jobs(redis.url) == []  # nothing on the default queue


def test_with_the_bus_down_apply_succeeds_and_the_events_wait_for_the_next_apply(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    with redis_server(tmp_path / "redis", started=False) as redis:
        monkeypatch.setenv("REDIS_URL", redis.url)
        write(git_repo, "manifests/records.yaml", STEP1)
        commit(git_repo, ALICE, "fleet")
        down, said = applied(git_repo, db_url)
        assert down["outcome"] == "applied" and down["events"]["delivered"] == 0 and down["events"]["pending"] == 6
        assert re.search(r"Platform events: 0 events delivered to .*; 6 events pending \(the BullMQ queue could "
                         r"not take the events: .*\): the next apply or `reconciler events --deliver` sends them\.",
                         said), said
        assert db.execute("SELECT count(*) FROM metastore.metastore_records").fetchone() == (5,)
        listed = events(db_url)
        assert listed.exit_code == 0, listed.output
        assert listed.stdout.splitlines()[-1] == "6 events pending; `reconciler events --deliver` sends them."
        assert "metastore.record.deleted (soft) record:fleet/truck-c" in listed.stdout
        as_json = json.loads(events(db_url, "--format", "json", "--limit", "2").stdout)
        assert as_json["pending"] == 6 and len(as_json["events"]) == 2
        assert as_json["events"][0]["attempts"] == 1 and as_json["events"][0]["last_error"]
        first_ids = [i for i, _ in outbox(db)]

        redis.start()
        write(git_repo, "manifests/records.yaml", STEP1.replace("unit: km", "unit: mi"))
        commit(git_repo, BOB, "miles")
        up, said = applied(git_repo, db_url)
        assert up["events"] == {"bus": up["events"]["bus"], "delivered": 7, "pending": 0, "error": None}
        jobs = queued_jobs(redis.url)
        # The earlier apply's events first, then this one's: apply order, each under its id.
        assert [job_id for _, job_id, _ in jobs] == [i for i, _ in outbox(db)] and len(jobs) == 7
        assert [job_id for _, job_id, _ in jobs][:6] == first_ids
        assert jobs[6][2]["envelope"]["correlationId"] == up["run_id"]
        assert {data["envelope"]["correlationId"] for _, _, data in jobs[:6]} == {down["run_id"]}
        # Nothing is left, and delivering again sends nothing twice.
        again = events(db_url, "--deliver")
        assert again.exit_code == 0 and again.stdout.startswith("Platform events: 0 events delivered")
        assert len(queued_jobs(redis.url)) == 7
        assert events(db_url).stdout == "No platform events are pending.\n"


DRIVER = '''
"""Apply the tree at argv[1] to the catalog at argv[2], printing its progress (test_events kills it)."""

import sys
from pathlib import Path

from reconciler.app.applying import apply_plan
from reconciler.app.planning import make_plan
from reconciler.app.workspace import open_workspace
from reconciler.core.checks import ApplyOptions

workspace = open_workspace(Path(sys.argv[1]), sys.argv[2])
apply_plan(workspace, make_plan(workspace), ApplyOptions(), progress=lambda line: print(line, flush=True))
print("done", flush=True)
'''


def test_an_apply_killed_after_its_commit_loses_no_event(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    write(git_repo, "manifests/records.yaml", STEP1)
    commit(git_repo, ALICE, "fleet")
    script = tmp_path / "driver.py"
    script.write_text(DRIVER, encoding="utf-8")
    with event_proxy() as proxy:
        proxy.hold = threading.Event()  # the proxy takes the first event and does not answer
        env = {**os.environ, "APPHUB_EVENT_PROXY_URL": proxy.url}
        proc = subprocess.Popen([sys.executable, str(script), str(git_repo / "manifests"), db_url], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proxy.seen.wait(120), proc.stderr.read() if proc.stderr else ""
            os.kill(proc.pid, signal.SIGKILL)  # committed, delivering: the first event is on the wire
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            progress = proc.stdout.read() if proc.stdout else ""
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()
        assert "queueing the platform events of the record changes" in progress and "done" not in progress
        assert db.execute("SELECT count(*) FROM metastore.metastore_records").fetchone() == (5,)
        queued = outbox(db)
        assert len(queued) == 6 and not any(delivered for _, delivered in queued)
        on_the_wire = proxy.envelopes[0]["id"]
        assert on_the_wire == queued[0][0]
        proxy.hold.set()
        proxy.hold = None

        monkeypatch.setenv("APPHUB_EVENT_PROXY_URL", proxy.url)
        delivered = events(db_url, "--deliver")
        assert delivered.exit_code == 0, delivered.output
        assert delivered.stdout.startswith("Platform events: 6 events delivered to the event proxy")
        ids = [e["id"] for e in proxy.envelopes]
        # At least once, under the same ids, in apply order: only the event on the wire came twice.
        assert ids == [on_the_wire] + [i for i, _ in queued]
        assert all(d for _, d in outbox(db))


def test_two_deliverers_at_once_send_each_event_once_and_in_order(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    with event_proxy() as proxy:
        monkeypatch.setenv("APPHUB_EVENT_PROXY_URL", proxy.url)
        proxy.down = True
        records = "".join(f"  - key: truck-{i:02}\n" for i in range(30))
        write(git_repo, "manifests/records.yaml", STEP1.split("records:\n")[0] + "records:\n" + records)
        commit(git_repo, ALICE, "thirty trucks")
        down, _ = applied(git_repo, db_url)
        assert down["events"]["pending"] == 30 and down["events"]["error"] == (
            "the event proxy answered 503: Failed to enqueue workflow event.")
        proxy.received.clear()
        proxy.down = False
        monkeypatch.setattr(delivering, "BATCH", 3)  # the two take turns, batch by batch
        catalog = PostgresCatalog(db_url)
        start = threading.Barrier(2)
        results: list[delivering.Delivery] = []

        def deliver() -> None:
            start.wait()
            results.append(delivering.deliver_pending(catalog, os.environ, 30))

        threads = [threading.Thread(target=deliver) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(r.delivered for r in results)[1] > 0 and sum(r.delivered for r in results) == 30
        ids = [e["id"] for e in proxy.envelopes]
        assert ids == [i for i, _ in outbox(db)] and Counter(ids).most_common(1)[0][1] == 1


def test_without_a_bus_plan_and_apply_say_so_once_and_queue_nothing(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    write(git_repo, "manifests/records.yaml", STEP1)
    commit(git_repo, ALICE, "fleet")
    note = ("note: no event bus is configured (APPHUB_EVENT_PROXY_URL or REDIS_URL): record changes are applied "
            "without announcing them as platform events")
    planned = invoke(git_repo, db_url, "plan")
    assert planned.exit_code == 0 and planned.stderr.splitlines().count(note) == 1, planned.stderr
    done, said = applied(git_repo, db_url)
    assert said.splitlines().count(note) == 1 and "events" not in done
    assert outbox(db) == []
    refused = events(db_url, "--deliver")
    assert refused.exit_code == 1 and "error: no event bus is configured" in refused.stderr


def test_the_apply_role_queues_and_delivers_the_read_only_role_only_lists(
        git_repo: Path, db: psycopg.Connection[Any], roles: tuple[str, str],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    plan_url, apply_url = roles
    with event_proxy() as proxy:
        monkeypatch.setenv("APPHUB_EVENT_PROXY_URL", proxy.url)
        proxy.down = True
        write(git_repo, "manifests/records.yaml", STEP1)
        commit(git_repo, ALICE, "fleet")
        down, _ = applied(git_repo, apply_url)
        assert down["events"]["pending"] == 6
        listed = events(plan_url)
        assert listed.exit_code == 0 and "6 events pending" in listed.stdout, listed.output
        proxy.down = False
        refused = events(plan_url, "--deliver")
        assert refused.exit_code == 1 and "permission denied" in refused.stderr, refused.output
        delivered = events(apply_url, "--deliver")
        assert delivered.exit_code == 0, delivered.output
        assert [e["id"] for e in proxy.envelopes] == [i for i, _ in outbox(db)]
