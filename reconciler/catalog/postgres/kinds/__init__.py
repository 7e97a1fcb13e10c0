"""One PostgreSQL writer per kind (its module here) and their registry, in the order apply writes them.

Adding a kind: its module here with a ``WRITER``, and one line in ``WRITERS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from reconciler.catalog.postgres.kinds import dataset, record, storage_target
from reconciler.catalog.postgres.kinds.base import KindWriter, WriteContext

# In the kinds' registry order (core/kinds/): what others need is written first.
WRITERS: Final[tuple[KindWriter, ...]] = (
    storage_target.WRITER,
    dataset.WRITER,
    record.WRITER,
)

BY_KIND: Final[Mapping[str, KindWriter]] = {w.kind.name: w for w in WRITERS}

__all__ = ["BY_KIND", "WRITERS", "KindWriter", "WriteContext"]
