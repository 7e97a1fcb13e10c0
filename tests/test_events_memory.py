"""Platform events without PostgreSQL: the in-memory catalog queues an apply's events and
they are delivered from it to a real HTTP event proxy; and which bus the environment names."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.app import events as delivering
from reconciler.app.applying import apply_plan
from reconciler.app.planning import make_plan
from reconciler.app.workspace import Workspace
from reconciler.bus import Bus, configured, not_configured
from reconciler.catalog.memory import MemoryCatalog
from reconciler.core.checks import ApplyOptions
from reconciler.errors import ConfigurationError, LockTimeout
from reconciler.git.repository import GitRepository
from tests.event_bus import event_proxy
from tests.helpers import ALICE, BOB, commit, write

RECORDS = """\
apiVersion: reconciler/v1
kind: RecordSet
namespace: obs
defaults: {owner: team-obs}
records:
  - key: sensor-1
  - key: sensor-2
    deleted: true
  - key: sensor-3
"""


def apply_tree(repo: Path, catalog: MemoryCatalog, environ: dict[str, str]) -> delivering.Delivery | None:
    workspace = Workspace(repo / "manifests", GitRepository.discover(repo / "manifests"), "default", catalog)
    return apply_plan(workspace, make_plan(workspace), ApplyOptions(), environ=environ).events


def test_the_memory_catalog_queues_an_applys_events_and_delivers_them_later(git_repo: Path) -> None:
    catalog = MemoryCatalog()
    write(git_repo, "manifests/records.yaml", RECORDS)
    commit(git_repo, ALICE, "sensors")
    with event_proxy() as proxy:
        environ = {"APPHUB_EVENT_PROXY_URL": proxy.url}
        proxy.down = True
        down = apply_tree(git_repo, catalog, environ)
        assert down is not None and (down.delivered, down.pending) == (0, 3)
        assert down.error == "the event proxy answered 503: Failed to enqueue workflow event."
        with catalog.outbox(None) as box:
            queued = box.pending()
        assert [(e.type, e.payload["key"], e.payload.get("mode")) for e in queued] == [
            ("metastore.record.created", "sensor-1", None), ("metastore.record.created", "sensor-2", None),
            ("metastore.record.created", "sensor-3", None)]
        assert queued[0].attempts == 1 and queued[0].last_error == down.error

        proxy.down = False
        write(git_repo, "manifests/records.yaml", RECORDS.replace("  - key: sensor-3\n", ""))
        commit(git_repo, BOB, "sensor-3 retired")
        up = apply_tree(git_repo, catalog, environ)
        assert up is not None and (up.delivered, up.pending, up.error) == (4, 0, None)
        sent = proxy.envelopes
        assert [e["id"] for e in sent] == [e.id for e in queued] + [sent[-1]["id"]]
        assert sent[-1]["type"] == "metastore.record.deleted" and sent[-1]["payload"]["mode"] == "soft"
        assert sent[-1]["payload"]["actor"] == "bob@example.com" and sent[-1]["source"] == "reconciler"
        assert {e["correlationId"] for e in sent[:3]} != {sent[-1]["correlationId"]}
        # Delivered once: delivering again sends nothing.
        again = delivering.deliver_pending(catalog, environ, 5)
        assert (again.delivered, again.pending) == (0, 0) and len(proxy.envelopes) == 4
    with catalog.outbox(None) as box:
        assert box.count_pending() == 0


def test_a_second_deliverer_waits_for_the_first_and_gives_up_after_its_lock_timeout() -> None:
    catalog = MemoryCatalog()
    with catalog.outbox(5):
        with pytest.raises(LockTimeout, match="another process is delivering platform events"):
            with catalog.outbox(0.05):
                pass


def test_the_bus_is_the_one_the_services_environment_names() -> None:
    assert configured({}) is None
    assert configured({"REDIS_URL": " inline "}) is None  # the event bus's inline mode sends nothing
    assert configured({"REDIS_URL": "redis://r:6379", "APPHUB_EVENTS_MODE": "inline"}) is None
    proxy = configured({"APPHUB_EVENT_PROXY_URL": " https://core:4000/internal/events/publish ",
                        "APPHUB_EVENT_PROXY_TOKEN": " t0ken ", "REDIS_URL": "redis://r:6379"})
    assert proxy == Bus("proxy", "https://core:4000/internal/events/publish", "t0ken")  # the proxy wins
    assert configured({"REDIS_URL": "cache:6380"}) == Bus("queue", "redis://cache:6380")
    assert configured({"REDIS_URL": "rediss://u:pw@cache/2", "APPHUB_EVENT_QUEUE_NAME": "q"}) == Bus(
        "queue", "rediss://u:pw@cache/2", queue="q")
    # Descriptions never carry a password or a token.
    assert Bus("queue", "rediss://u:pw@cache:6380/2").description == \
        "the BullMQ queue 'apphub_event_ingress_queue' on rediss://cache:6380/2"
    assert "t0ken" not in proxy.description and "secret" not in Bus(
        "proxy", "http://user:secret@core/publish").description
    for environ, message in [({"APPHUB_EVENT_PROXY_URL": "ftp://core/x"}, "APPHUB_EVENT_PROXY_URL must be"),
                             ({"APPHUB_EVENT_PROXY_URL": "http://core:port/x"}, "APPHUB_EVENT_PROXY_URL must be"),
                             ({"REDIS_URL": "memcached://pw@cache"}, "REDIS_URL must be")]:
        with pytest.raises(ConfigurationError, match=message) as caught:
            configured(environ)
        assert "pw" not in caught.value.message and "ftp" not in caught.value.message
    assert not_configured({"REDIS_URL": "cache"}) is None
    assert not_configured({}) == ("note: no event bus is configured (APPHUB_EVENT_PROXY_URL or REDIS_URL): record "
                                  "changes are applied without announcing them as platform events")
