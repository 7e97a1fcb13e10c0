"""The repository's ``reconciler.yaml``: which source (tree) this repository is."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reconciler.errors import ConfigurationError
from reconciler.core.policy import Policy, parse_policy

CONFIG_FILE = "reconciler.yaml"
DEFAULT_SOURCE = "default"
_SOURCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_KNOWN_KEYS = frozenset({"source", "policy", "ui"})


@dataclass(frozen=True)
class RepositoryConfig:
    """Settings read from ``reconciler.yaml`` at the root of the manifests' git repository."""

    source: str = DEFAULT_SOURCE
    path: Path | None = None
    policy: Policy | None = None  # None: no restriction
    ui_base_url: str | None = None  # the platform UI, for links in markdown plans


def load_config(root: Path | None) -> RepositoryConfig:
    """Read ``reconciler.yaml`` from ``root``; defaults when there is none."""
    if root is None:
        return RepositoryConfig()
    path = root / CONFIG_FILE
    if not path.is_file():
        return RepositoryConfig()
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConfigurationError(f"{path}: cannot be read as YAML: {error}") from None
    if data is None:
        return RepositoryConfig(path=path)
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: expected a mapping with a `source:` key")
    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown:
        raise ConfigurationError(
            f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_KNOWN_KEYS))})"
        )
    source = data.get("source", DEFAULT_SOURCE)
    if not isinstance(source, str) or not _SOURCE.fullmatch(source):
        raise ConfigurationError(
            f"{path}: source must be 1-64 characters of letters, digits, '.', '_' or '-', got {source!r}"
        )
    policy = parse_policy(data["policy"], str(path)) if "policy" in data else None
    return RepositoryConfig(source=source, path=path, policy=policy, ui_base_url=_ui(data.get("ui"), path))


def _ui(data: Any, path: Path) -> str | None:
    if data is None:
        return None
    if not isinstance(data, dict) or set(data) - {"baseUrl"} or not isinstance(data.get("baseUrl"), str):
        raise ConfigurationError(f"{path}: ui must be a mapping with a `baseUrl:` string")
    base = str(data["baseUrl"])
    if not base.startswith(("https://", "http://")):
        raise ConfigurationError(f"{path}: ui.baseUrl must start with https:// or http://")
    return base.rstrip("/")
