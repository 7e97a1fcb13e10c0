"""Valid values the platform's services store but cannot serve back, told as warnings at their place."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.core.kinds.record import Record
from reconciler.core.model import Document
from reconciler.core.service_rules import METASTORE_MAX_PATH_SEGMENT, utf16_length
from reconciler.manifests.messages import RawProblem
from reconciler.manifests.tree import Declared

# Why a long namespace or key is worth a warning, after what it is.
_WHY = (
    f"the metastore stores it, but its HTTP API takes at most {METASTORE_MAX_PATH_SEGMENT} in a path "
    "segment, so the record can never be read, updated or deleted by key through /records/<namespace>/<key>"
)


def unservable(value: Mapping[str, Any], declared: Sequence[Declared[Document]]) -> list[RawProblem]:
    """Warnings for one valid document (its parsed ``value`` and what it declares).

    A record whose namespace or key is longer than the metastore's HTTP router takes
    in one path segment (counted in UTF-16 code units, after URL decoding) is accepted
    by the metastore's request schema, and so by ``validate``, but the services' API
    can never serve it back by key. The key is warned about per record; a RecordSet's
    namespace once, naming its first record.
    """
    records = [item.model for item in declared if isinstance(item.model, Record)]
    if not records:
        return []
    warnings: list[RawProblem] = []
    length = utf16_length(records[0].namespace)
    if length > METASTORE_MAX_PATH_SEGMENT:
        others = len(records) - 1
        also = f" (and {others:,} other record{'' if others == 1 else 's'} of this document)" if others else ""
        message = f"{records[0].address}{also}: its namespace is {length} characters long (UTF-16 code units); {_WHY}"
        warnings.append((("namespace",), "node", message))
    in_set = value.get("kind") == "RecordSet"
    for index, record in enumerate(records):
        length = utf16_length(record.key)
        if length > METASTORE_MAX_PATH_SEGMENT:
            path: tuple[Any, ...] = ("records", index, "key") if in_set else ("key",)
            message = f"{record.address}: its key is {length} characters long (UTF-16 code units); {_WHY}"
            warnings.append((path, "node", message))
    return warnings
