"""Where a command works: the manifest tree, its repository, its source and its catalog; and
who is applying, as the audit log and the services' rows name them."""

from __future__ import annotations

import getpass
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from reconciler.app.ci import Identity, ci_identity, local_identity
from reconciler.catalog.port import Catalog
from reconciler.core.plan import Author, FileDigest
from reconciler.core.policy import Policy
from reconciler.errors import ConfigurationError
from reconciler.git.repository import GitRepository
from reconciler.manifests.config import load_config

# The CI systems whose actor names the person who ran an apply.
CI_ACTOR_VARIABLES = ("GITHUB_ACTOR", "GITLAB_USER_LOGIN", "BUILDKITE_BUILD_CREATOR",
                      "CIRCLE_USERNAME", "BUILD_REQUESTEDFOR")


@dataclass(frozen=True)
class Workspace:
    """Where a command works: the manifest tree, its repository, its source and its catalog."""

    tree: Path
    repo: GitRepository | None
    source: str
    catalog: Catalog
    policy: Policy | None = None  # who may change what (reconciler.yaml); None: no restriction
    ui_base_url: str | None = None  # the platform UI, for links in markdown plans

    @property
    def database(self) -> str:
        """The catalog, described without its password."""
        return self.catalog.description


def open_workspace(tree: Path, database_url: str | None,
                   announce: Callable[[str], None] | None = None) -> Workspace:
    """Resolve the tree, its git repository, its source name and the catalog URL (``announce``
    is told when the embedded catalog is being created)."""
    if not tree.exists():
        raise ConfigurationError(f"manifest tree {tree} does not exist")
    if not tree.is_dir():
        raise ConfigurationError(f"manifest tree {tree} is not a directory")
    from reconciler.catalog.postgres.catalog import PostgresCatalog
    from reconciler.catalog.postgres.connection import git_root, resolve_database

    repo = GitRepository.discover(tree)
    config = load_config(repo.root if repo else git_root(tree))
    url, embedded = resolve_database(database_url, tree, announce)
    return Workspace(tree, repo, config.source, PostgresCatalog(url, embedded), config.policy, config.ui_base_url)


def who_applies(repo: GitRepository | None, environ: Mapping[str, str]) -> Identity:
    """Whoever applies, as the audit log records it: the CI run's actor and identifiers, or
    (marked local) the OS user with the local git identity."""
    found = ci_identity(environ)
    if found is not None:
        return found
    name, email = repo.user_identity() if repo is not None else (None, None)
    return local_identity(os_user(), name, email)


def os_user() -> str:
    """The operating-system user running this process (``unknown`` where there is none)."""
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "unknown"


def applier_identity(repo: GitRepository | None) -> Author:
    """Whoever applies, as changes no commit asked for name them: the CI actor where there is
    one, else the local git identity (else the OS user); the email is git's ``user.email``
    outside CI, empty in CI."""
    for variable in CI_ACTOR_VARIABLES:
        if os.environ.get(variable):
            return Author(os.environ[variable], "", None, applier=True)
    name, email = repo.user_identity() if repo is not None else ("unknown", "unknown")
    if name == "unknown":
        name = os_user()
    return Author(name, "" if email == "unknown" else email, None, applier=True)


def actor_of(author: Author, applying: Author) -> str:
    """The actor the services' audit rows and ``created_by``/``updated_by`` name for a change:
    the commit author's email, or for a change whoever applies made, their email (else name)."""
    if author.applier:
        return applying.email or applying.name
    return author.email


def changed_files(ws: Workspace) -> set[str] | None:
    """Files of the tree whose working-tree content differs from HEAD (repository-relative);
    None outside git."""
    if ws.repo is None:
        return None
    return ws.repo.changed_paths(ws.repo.relative(ws.tree))


def tree_files(ws: Workspace) -> dict[str, FileDigest]:
    """Every manifest file of the workspace's tree (by the name the loader shows), with
    the path objects' locations give it and the digest of its bytes."""
    return tree_units(ws)[0]


def tree_units(ws: Workspace) -> tuple[dict[str, FileDigest], dict[str, tuple[str, ...]]]:
    """``tree_files``, with the data files RecordSets name (``recordsFile``) among them, and each
    manifest that names data files with those files (all by the name the loader shows).

    A manifest and its data files are one unit: each one's digest covers the others' bytes
    (a change to either changes what the data file's records are), and a plan passes over
    all of them or none (``settled_units``). A manifest whose data files cannot be read
    gets no digest: it is always read, and the loader says what is wrong."""
    from reconciler.errors import DataFileError
    from reconciler.manifests.datapaths import DiskFiles, references
    from reconciler.manifests.desired import repo_relative
    from reconciler.manifests.loader import digest_of, discover

    found, _ = discover(ws.tree)  # what the walk refuses, the loader reports
    data_files = DiskFiles(ws.tree)
    out: dict[str, FileDigest] = {}
    units: dict[str, tuple[str, ...]] = {}

    def shown(display: str) -> str:
        return repo_relative(display, ws.repo.root) if ws.repo is not None else display

    for file, display in found:
        digest = digest_of(file)
        if digest is None:
            continue
        try:
            named = references(file.read_bytes()) if digest is not None else None
            read = [data_files.read(display, reference) for reference in named or ()]
        except (OSError, DataFileError):
            named = None
        if named is None:
            continue
        if not read:
            out[display] = FileDigest(shown(display), digest)
            continue
        parts = [digest] + [f"{path}\0{hashlib.sha256(data).hexdigest()}" for path, data in read]
        whole = hashlib.sha256("\0".join(parts).encode()).hexdigest()
        out[display] = FileDigest(shown(display), whole)
        for path, _ in read:
            out[path] = FileDigest(shown(path), whole)
        units[display] = tuple(path for path, _ in read)
    return out, units


def settled_units(settled: Mapping[str, int], files: Mapping[str, FileDigest],
                  units: Mapping[str, tuple[str, ...]]) -> dict[str, int]:
    """``settled`` (path → objects) less every manifest-and-data-files unit not settled whole."""
    out = dict(settled)
    for manifest, data in units.items():
        paths = [files[name].path for name in (manifest, *data) if name in files]
        if not all(path in out for path in paths):
            for path in paths:
                out.pop(path, None)
    return out


def migrate_catalog(database_url: str | None, anchor: Path, announce: Callable[[str], None] | None,
                    on_applied: Callable[[str], None]) -> tuple[str, list[str]]:
    """Bring the catalog's schema up to date (``on_applied`` is told each migration file applied);
    returns the catalog as messages name it, and the files applied."""
    from reconciler.catalog.postgres.connection import describe, resolve_database_url
    from reconciler.catalog.postgres.migrations import migrate

    url = resolve_database_url(database_url, anchor, announce)
    applied = migrate(url, on_applied=lambda migration: on_applied(migration.filename))
    return describe(url), [migration.filename for migration in applied]


def pending_migrations(database_url: str | None, anchor: Path, announce: Callable[[str], None] | None) -> str:
    """The SQL of the migrations the catalog has not had yet (changes nothing)."""
    from reconciler.catalog.postgres.connection import resolve_database_url
    from reconciler.catalog.postgres.migrations import pending_sql

    return pending_sql(resolve_database_url(database_url, anchor, announce))


def repository_at(path: Path, option: str) -> GitRepository:
    """The git repository holding ``path``, given with ``option``; refused when there is none."""
    repo = GitRepository.discover(path)
    if repo is None:
        raise ConfigurationError(f"{option} {path} is not inside a git repository")
    return repo
