"""The JSON Schema of manifest documents, generated from the models.

Regenerate the committed file with
``python -m reconciler.manifests.schema > schemas/manifest.schema.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from functools import reduce
from operator import or_
from typing import Annotated, Any, Final

from pydantic import Field, TypeAdapter

import reconciler

from reconciler.core import kinds
from reconciler.core.kinds.record import RecordDefaults
from reconciler.core.model import API_VERSION
from reconciler.core.text import either

SCHEMA_FILE: Final = "manifest.schema.json"
SCHEMA_ID: Final = "https://reconciler.invalid/schemas/manifest.schema.json"

# Every document kind the registry knows, told apart by ``kind``.
_Document: Any = Annotated[reduce(or_, kinds.DOCUMENTS.values()), Field(discriminator="kind")]


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) one manifest document must satisfy."""
    schema = TypeAdapter(_Document).json_schema(by_alias=True, mode="validation")
    for definition in schema["$defs"].values():
        for field in definition.get("properties", {}).values():
            field.pop("title", None)  # "Storagetarget" and the like help nobody
    for name in kinds.DOCUMENTS:
        definition = schema["$defs"][name]
        # The models default these two for Python callers; a document must state them.
        definition["required"] = ["apiVersion", "kind", *definition.get("required", [])]
        for key in ("apiVersion", "kind"):
            definition["properties"][key].pop("default", None)
    record_set = schema["$defs"]["RecordSet"]
    # The records are given in the document or in a data file, never both (the model says so too).
    record_set["oneOf"] = [{"required": ["records"]}, {"required": ["recordsFile"]}]
    for key in ("records", "recordsFile"):
        record_set["properties"][key].pop("default", None)
    files = record_set["properties"]["recordsFile"]
    files.update(next(o for o in files.pop("anyOf", [files]) if o != {"type": "null"}))
    files["pattern"] = r"^[^/\\].*\.(jsonl|csv)$"
    for name in ("RecordDefaults", "RecordItem"):
        # Optional in a RecordSet, but never null (the loader says "leave the field out").
        properties = schema["$defs"][name]["properties"]
        for field_name in RecordDefaults._NOT_NULL:
            prop = properties[field_name]
            options = [option for option in prop.pop("anyOf", []) if option != {"type": "null"}]
            prop.pop("default", None)
            if len(options) == 1:
                prop.update(options[0])
            elif options:
                prop["anyOf"] = options
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": f"reconciler manifest document ({API_VERSION})",
        "description": (
            f"One YAML document of a reconciler manifest tree: a {either(list(kinds.DOCUMENTS))}. "
            "Generated from the models in reconciler.core.kinds; "
            "see docs/manifests.md."
        ),
        **schema,
    }


def render() -> str:
    """The schema as the committed file holds it."""
    return json.dumps(manifest_schema(), indent=2, ensure_ascii=False) + "\n"


def schema_dirs() -> list[Path]:
    """Where the schema files are: inside the installed wheel, then the repository's."""
    package = Path(reconciler.__file__).parent
    return [package / "_data" / "schemas", package.parent / "schemas"]


def main() -> None:
    """Print the manifest schema (``python -m reconciler.manifests.schema``)."""
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
