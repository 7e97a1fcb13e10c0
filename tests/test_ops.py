"""The operations: one class each, named as the plan JSON names them, each with a look and an executor (pure)."""

from __future__ import annotations

import pytest

from reconciler.catalog import memory
from reconciler.core import ops
from reconciler.core.diff import ACTIONS, Change
from reconciler.render import plan as render_plan


def test_operations_keep_the_plan_json_words_in_order() -> None:
    assert ops.NAMES == ACTIONS == ("create", "update", "rename", "archive", "restore", "purge")
    assert [op.done for op in ops.OPERATIONS] == ["created", "updated", "renamed", "archived", "restored", "purged"]
    assert [op.name for op in ops.OPERATIONS if op.removes] == ["archive", "purge"]
    assert [op.name for op in ops.OPERATIONS if op.deletes] == ["purge"]
    assert ops.of("archive") is ops.Archive and ops.named("adopt") is None
    with pytest.raises(KeyError):
        ops.of("adopt")


def test_a_change_dispatches_on_its_operation() -> None:
    change = Change("dataset:d", "dataset", "restore", {}, {}, (), None, None, None)
    assert change.op is ops.Restore


def test_every_operation_has_a_look_a_body_and_an_in_memory_executor() -> None:
    for registry in (render_plan._LOOKS, render_plan._BODIES, memory._EXECUTE):
        assert set(registry) == set(ops.OPERATIONS)
