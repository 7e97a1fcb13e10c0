"""Canonical JSON text: the one serialisation that digests, checksums and the audit chain hash."""

from __future__ import annotations

import json
from typing import Any


def canonical_json(value: Any, *, allow_nan: bool = True) -> str:
    """``value`` as canonical JSON text: keys sorted, no whitespace, text beyond ASCII unescaped.

    Plan digests, the services' checksums and the audit chain's hashed text are all this
    serialisation, so they stay byte for byte what they were. ``allow_nan=False`` refuses
    NaN and the infinities (the audit chain: JSON has no such numbers, and a hash over a
    text no JSON reader can read back could never be verified); values from manifests and
    the catalog never hold them, so for those both settings give the same text.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=allow_nan)
