"""The Team kind: a team in metastore.teams, with no archived state. Not part of the package:
tests/test_new_kind.py adds it to a copy of the package, as a new kind would be added."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, StrictBool

from reconciler.core.kinds.base import KindSpec
from reconciler.core.model import API_VERSION, Address, Description, Document, Owner, StorageTargetName


class Team(Document):
    """A team: a row of metastore.teams."""

    kind: Literal["Team"] = "Team"
    name: StorageTargetName = Field(description="Identity.")
    description: Description | None = None
    contact: Owner | None = None
    protect: StrictBool = False
    purge: StrictBool = False

    @property
    def address(self) -> Address:
        """``team:<name>``."""
        return Address("team", self.name)


def _draft(name: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    document: dict[str, Any] = {"apiVersion": API_VERSION, "kind": "Team", "name": name}
    for key in ("description", "contact"):
        if fields[key] is not None:
            document[key] = fields[key]
    return document


SPEC = KindSpec(
    name="team",
    manifest_kind="Team",
    model=Team,
    identity=("name",),
    fields=("description", "contact"),
    attributes={"description": "description", "contact": "contact"},
    noun="team",
    plural="teams",
    title="Teams",
    grant_filter="teams",
    grant_noun="team",
    scope="metastore:write",
    draft=_draft,
)
