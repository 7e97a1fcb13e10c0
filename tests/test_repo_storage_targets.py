"""Repository layer: storage targets, optimistic concurrency on updated_at, error translation."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

import psycopg
import pytest

from reconciler.services import datasets as ds
from reconciler.services import storage_targets as st
from reconciler.errors import ConflictError, DatabaseError, NotFoundError


def _ms(value: Any) -> Any:
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def test_create_get_list(db: psycopg.Connection[Any]) -> None:
    created = st.create_storage_target(
        db, name="warm", kind="s3", description="Warm tier", config={"bucket": "b", "nested": {"a": 1}}
    )
    assert created.id == "st-warm"
    assert created.kind == "s3"
    assert created.config == {"bucket": "b", "nested": {"a": 1}}
    st.create_storage_target(db, name="alpha", kind="local")
    assert st.get_storage_target(db, "warm") == created
    assert st.get_storage_target(db, "missing") is None
    assert [t.name for t in st.list_storage_targets(db)] == ["alpha", "warm"]
    assert st.get_storage_target(db, "alpha").config == {}  # type: ignore[union-attr]


def test_create_duplicate_is_a_conflict(db: psycopg.Connection[Any]) -> None:
    st.create_storage_target(db, name="warm", kind="s3")
    with pytest.raises(ConflictError) as caught:
        st.create_storage_target(db, name="warm", kind="local")
    assert "storage-target:warm already exists" in str(caught.value)
    assert caught.value.address == "storage-target:warm"
    assert st.get_storage_target(db, "warm").kind == "s3"  # type: ignore[union-attr]


def test_bad_kind_is_a_database_error(db: psycopg.Connection[Any]) -> None:
    with pytest.raises(DatabaseError) as caught:
        st.create_storage_target(db, name="odd", kind="floppy")
    assert "storage_targets_kind_check" in str(caught.value)
    assert st.list_storage_targets(db) == []


def test_update_moves_updated_at_and_checks_it(db: psycopg.Connection[Any]) -> None:
    created = st.create_storage_target(db, name="warm", kind="s3", description="old")
    updated = st.update_storage_target(
        db, "warm", expected_updated_at=created.updated_at,
        changes={"description": "new", "config": {"bucket": "x"}},
    )
    assert updated.description == "new"
    assert updated.config == {"bucket": "x"}
    assert updated.kind == "s3"
    assert _ms(updated.updated_at) > _ms(created.updated_at)
    with pytest.raises(ConflictError) as caught:
        st.update_storage_target(db, "warm", expected_updated_at=created.updated_at, changes={"kind": "gcs"})
    message = str(caught.value)
    assert "storage-target:warm changed since it was read" in message
    assert created.updated_at.isoformat(timespec="milliseconds") in message
    assert updated.updated_at.isoformat(timespec="milliseconds") in message
    assert st.get_storage_target(db, "warm").kind == "s3"  # type: ignore[union-attr]


def test_expected_updated_at_is_compared_to_the_millisecond(db: psycopg.Connection[Any]) -> None:
    created = st.create_storage_target(db, name="warm", kind="s3")
    # The services hand out updated_at with millisecond precision (an ISO etag).
    truncated = _ms(created.updated_at)
    updated = st.update_storage_target(db, "warm", expected_updated_at=truncated, changes={"kind": "gcs"})
    assert updated.kind == "gcs"
    # ... or as ISO 8601 text, in UTC with a Z, the way their etags read.
    etag = updated.updated_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    again = st.update_storage_target(db, "warm", expected_updated_at=etag, changes={"kind": "local"})
    assert again.kind == "local"
    with pytest.raises(ConflictError) as caught:
        st.update_storage_target(db, "warm", expected_updated_at=etag, changes={"kind": "s3"})
    assert f"expected updated_at {etag}" in str(caught.value)


def test_two_updates_in_one_millisecond_both_move_updated_at(db: psycopg.Connection[Any]) -> None:
    created = st.create_storage_target(db, name="warm", kind="s3")
    with db.transaction():  # now() is frozen here; the bump must not rely on it
        first = st.update_storage_target(db, "warm", expected_updated_at=created.updated_at, changes={"kind": "gcs"})
        second = st.update_storage_target(db, "warm", expected_updated_at=first.updated_at, changes={"kind": "local"})
    assert created.updated_at < first.updated_at < second.updated_at
    assert _ms(created.updated_at) < _ms(first.updated_at) < _ms(second.updated_at)
    with pytest.raises(ConflictError):
        st.update_storage_target(db, "warm", expected_updated_at=first.updated_at, changes={"kind": "s3"})


def test_update_to_equal_values_writes_nothing(db: psycopg.Connection[Any]) -> None:
    created = st.create_storage_target(db, name="warm", kind="s3", config={"a": 1})
    same = st.update_storage_target(
        db, "warm", expected_updated_at=created.updated_at, changes={"kind": "s3", "config": {"a": 1}}
    )
    assert same.updated_at == created.updated_at


def test_update_refuses_unknown_fields_and_missing_targets(db: psycopg.Connection[Any]) -> None:
    created = st.create_storage_target(db, name="warm", kind="s3")
    with pytest.raises(ValueError):
        st.update_storage_target(db, "warm", expected_updated_at=created.updated_at, changes={"name": "x"})
    with pytest.raises(NotFoundError) as caught:
        st.update_storage_target(db, "gone", expected_updated_at=created.updated_at, changes={"kind": "s3"})
    assert "storage-target:gone does not exist" in str(caught.value)


def test_delete(db: psycopg.Connection[Any]) -> None:
    created = st.create_storage_target(db, name="warm", kind="s3")
    with pytest.raises(ConflictError):
        st.delete_storage_target(db, "warm", expected_updated_at=created.updated_at - timedelta(seconds=1))
    st.delete_storage_target(db, "warm", expected_updated_at=created.updated_at)
    assert st.get_storage_target(db, "warm") is None
    with pytest.raises(NotFoundError):
        st.delete_storage_target(db, "warm", expected_updated_at=created.updated_at)
    with pytest.raises(NotFoundError):
        st.require_storage_target(db, "warm")


def test_delete_of_a_target_in_use_is_a_conflict(db: psycopg.Connection[Any]) -> None:
    target = st.create_storage_target(db, name="warm", kind="s3")
    ds.create_dataset(db, slug="readings", name="Readings", storage_target_id=target.id, actor="a@example.com")
    with pytest.raises(ConflictError) as caught:
        st.delete_storage_target(db, "warm", expected_updated_at=target.updated_at)
    assert "storage-target:warm is still in use" in str(caught.value)
    assert st.get_storage_target(db, "warm") is not None


def test_calls_compose_into_the_callers_transaction(db: psycopg.Connection[Any]) -> None:
    with db.transaction():
        st.create_storage_target(db, name="kept", kind="s3")
        with pytest.raises(ConflictError):
            st.create_storage_target(db, name="kept", kind="s3")  # its savepoint rolls back alone
        st.create_storage_target(db, name="also-kept", kind="local")
    assert [t.name for t in st.list_storage_targets(db)] == ["also-kept", "kept"]

    class Abort(Exception):
        pass

    with pytest.raises(Abort), db.transaction():
        st.create_storage_target(db, name="undone", kind="s3")
        raise Abort
    assert st.get_storage_target(db, "undone") is None


def test_non_autocommit_connection(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("SELECT 1")  # opens the implicit transaction: our call nests as a savepoint
        st.create_storage_target(conn, name="undone", kind="s3")
        conn.rollback()
        assert st.get_storage_target(conn, "undone") is None
        conn.rollback()
        # Outside any transaction, psycopg opens one for the call and commits it.
        st.create_storage_target(conn, name="warm", kind="s3")
        with psycopg.connect(db_url) as other:
            assert st.get_storage_target(other, "warm") is not None


def test_database_errors_are_translated(db_url: str) -> None:
    conn = psycopg.connect(db_url, autocommit=True)
    conn.close()
    with pytest.raises(DatabaseError) as caught:
        st.list_storage_targets(conn)
    assert "listing storage targets failed" in str(caught.value)
