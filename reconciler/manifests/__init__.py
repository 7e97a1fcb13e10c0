"""Manifest files to validated models with their locations; every problem in the tree reported at once."""

from __future__ import annotations

from ..model import JsonPath
from .emit import dump_documents, to_document
from .layout import DocLayout, Span
from .loader import discover, load_tree
from .tree import Declared, Location, ManifestTree, Reference
from .yamlread import MAX_ALIAS_NODES, MAX_DEPTH, MAX_FILE_BYTES

__all__ = [
    "MAX_ALIAS_NODES",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "Declared",
    "DocLayout",
    "JsonPath",
    "Location",
    "ManifestTree",
    "Reference",
    "Span",
    "discover",
    "dump_documents",
    "load_tree",
    "to_document",
]
