"""Manifest files to validated models with their locations; every problem in the tree reported at once."""

from __future__ import annotations

from reconciler.core.model import JsonPath
from reconciler.manifests.emit import dump_documents, to_document
from reconciler.manifests.layout import DocLayout, Span
from reconciler.manifests.loader import discover, load_tree
from reconciler.manifests.tree import Declared, Location, ManifestTree, Reference
from reconciler.manifests.yamlread import MAX_ALIAS_NODES, MAX_DEPTH, MAX_FILE_BYTES

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
