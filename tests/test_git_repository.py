"""The read-only git layer against real repositories: discovery, identities, history, blobs, failures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from reconciler.errors import ConfigurationError
from reconciler.git import command
from reconciler.git.history import manifest_filter
from reconciler.git.repository import GitRepository

from .conftest import run_git
from .helpers import ALICE, BOB, LOCAL, commit, write

KEEP = manifest_filter("manifests", (".yaml", ".yml"))


@pytest.fixture
def repo(git_repo: Path) -> Path:
    """The shared empty repository, with a local identity for uncommitted work."""
    run_git(git_repo, "config", "user.name", LOCAL[0])
    run_git(git_repo, "config", "user.email", LOCAL[1])
    run_git(git_repo, "config", "commit.gpgsign", "false")
    return git_repo


def test_discover_finds_the_root_from_a_file_a_directory_or_a_missing_path(repo: Path) -> None:
    write(repo, "manifests/x.yaml", "x: 1\n")
    for start in (repo, repo / "manifests", repo / "manifests" / "x.yaml", repo / "manifests" / "new" / "y.yaml"):
        found = GitRepository.discover(start)
        assert found is not None
        assert found.root == repo.resolve()


def test_discover_outside_git_is_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    (tmp_path / "plain").mkdir()
    assert GitRepository.discover(tmp_path / "plain") is None
    assert GitRepository.discover(tmp_path / "plain" / "file.yaml") is None


def test_head_and_commit_exists(repo: Path) -> None:
    git = GitRepository(repo)
    assert git.head() is None  # no commit yet
    write(repo, "manifests/a.yaml", "a: 1\n")
    alice = commit(repo, ALICE, "one")
    write(repo, "manifests/a.yaml", "a: 2\n")
    bob = commit(repo, BOB, "two")
    assert git.head() == bob
    assert git.commit_exists(alice) and git.commit_exists(bob[:12])
    assert not git.commit_exists("0" * 40)
    assert not git.commit_exists("--help")
    assert not git.commit_exists("HEAD")  # only hex object names are accepted


def test_user_identity_reads_config_and_falls_back_to_unknown(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-global-config"))
    assert GitRepository(repo).user_identity() == LOCAL
    run_git(repo, "config", "--unset", "user.name")
    run_git(repo, "config", "--unset", "user.email")
    assert GitRepository(repo).user_identity() == ("unknown", "unknown")


def test_relative_resolves_dot_dot_from_the_working_directory(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (repo / "manifests" / "sub").mkdir()
    monkeypatch.chdir(repo / "manifests" / "sub")
    git = GitRepository(repo)
    assert git.relative(Path("../../manifests")) == "manifests"
    assert git.relative(Path("..")) == "manifests"
    assert git.relative(repo) == "."
    with pytest.raises(ConfigurationError, match="outside the git repository"):
        git.relative(Path("../../.."))


def test_changed_paths_sees_staged_unstaged_deleted_untracked_and_ignored(repo: Path) -> None:
    for name in ("kept", "edited", "staged", "deleted"):
        write(repo, f"manifests/{name}.yaml", f"{name}: 1\n")
    commit(repo, ALICE, "base")
    write(repo, "manifests/edited.yaml", "edited: 2\n")
    write(repo, "manifests/staged.yaml", "staged: 2\n")
    run_git(repo, "add", "manifests/staged.yaml")
    (repo / "manifests" / "deleted.yaml").unlink()
    write(repo, "manifests/new/untracked.yaml", "new: 1\n")
    write(repo, ".gitignore", "manifests/ignored.yaml\n")
    write(repo, "manifests/ignored.yaml", "ignored: 1\n")
    changed = GitRepository(repo).changed_paths("manifests")
    assert {p for p in changed if KEEP(p)} == {
        "manifests/edited.yaml", "manifests/staged.yaml", "manifests/deleted.yaml",
        "manifests/new/untracked.yaml", "manifests/ignored.yaml"}


def test_history_lists_commits_newest_first_with_their_file_changes(repo: Path) -> None:
    write(repo, "manifests/a.yaml", "a: 1\n")
    first = commit(repo, ALICE, "add a")
    write(repo, "README", "not a manifest\n")
    commit(repo, BOB, "outside the tree")
    write(repo, "manifests/b.yaml", "b: 1\n")
    (repo / "manifests" / "a.yaml").unlink()
    second = commit(repo, BOB, "b instead of a")
    git = GitRepository(repo)
    history = git.history(second, [], "manifests", KEEP)
    assert history.order == [second, first]  # the commit outside the tree is left out
    assert history.commits[second].parents == (first,)  # and its child points past it
    assert history.commits[second].author_email == BOB[1]
    changes = history.changes(second, first)
    assert set(changes) == {"manifests/a.yaml", "manifests/b.yaml"}
    assert changes["manifests/a.yaml"].after is None and changes["manifests/b.yaml"].before is None
    with git.blobs() as blobs:
        assert blobs.read(changes["manifests/a.yaml"].before or "") == b"a: 1\n"
        assert blobs.read("0" * 40) is None
    # Excluding a commit leaves it and its ancestors out.
    assert git.history(second, [first], "manifests", KEEP).order == [second]


def test_history_of_a_merge_reads_its_changes_against_each_parent(repo: Path) -> None:
    write(repo, "manifests/a.yaml", "a: 1\n")
    write(repo, "manifests/b.yaml", "b: 1\n")
    commit(repo, ALICE, "base")
    run_git(repo, "checkout", "-q", "-b", "topic")
    write(repo, "manifests/a.yaml", "a: 2\n")
    topic = commit(repo, BOB, "topic edits a")
    run_git(repo, "checkout", "-q", "main")
    write(repo, "manifests/b.yaml", "b: 2\n")
    main = commit(repo, ALICE, "main edits b")
    run_git(repo, "merge", "-q", "--no-ff", "topic", "-m", "merge topic", author=ALICE)
    git = GitRepository(repo)
    head = git.head()
    assert head is not None
    history = git.history(head, [], "manifests", KEEP)
    assert history.commits[head].parents == (main, topic)
    assert set(history.changes(head, main)) == {"manifests/a.yaml"}
    assert set(history.changes(head, topic)) == {"manifests/b.yaml"}


def test_shallow_clone_is_detected_with_its_boundary(repo: Path, tmp_path: Path) -> None:
    write(repo, "manifests/a.yaml", "a: 1\n")
    commit(repo, ALICE, "one")
    write(repo, "manifests/a.yaml", "a: 2\n")
    tip = commit(repo, BOB, "two")
    assert not GitRepository(repo).is_shallow() and GitRepository(repo).shallow_commits() == frozenset()
    clone = tmp_path / "shallow"
    run_git(tmp_path, "clone", "-q", "--depth=1", f"file://{repo}", str(clone))
    assert GitRepository(clone).is_shallow()
    assert GitRepository(clone).shallow_commits() == frozenset({tip})


def test_manifest_filter_follows_the_loaders_rules() -> None:
    assert KEEP("manifests/a.yaml") and KEEP("manifests/x/b.yml")
    assert not KEEP("manifests/a.json") and not KEEP("other/a.yaml") and not KEEP("manifests-old/a.yaml")
    assert not KEEP("manifests/.hidden/a.yaml") and not KEEP("manifests/.a.yaml")
    assert manifest_filter(".", (".yaml",))("a.yaml") and manifest_filter("m/one.yaml", (".yaml",))("m/one.yaml")


def test_a_slow_git_times_out_as_a_configuration_error(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "slow-bin" / "git"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\nexec {shutil.which('sleep')} 10\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    monkeypatch.setattr(command, "GIT_TIMEOUT_SECONDS", 0.5)
    with pytest.raises(ConfigurationError, match=r"did not finish within 0\.5 s"):
        GitRepository(repo).head()


def test_a_failing_git_command_is_one_configuration_error_line(repo: Path) -> None:
    write(repo, "manifests/a.yaml", "a: 1\n")
    head = commit(repo, ALICE, "one")
    with pytest.raises(ConfigurationError) as raised:
        GitRepository(repo).history("f" * 40, [head], "manifests", KEEP)  # no such commit
    message = raised.value.render()
    assert "\n" not in message and message.startswith("git log failed in ")


def test_missing_git_is_a_configuration_error(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(ConfigurationError, match="git is not installed"):
        GitRepository.discover(repo)
    with pytest.raises(ConfigurationError, match="git is not installed"):
        GitRepository(repo).blobs().read("0" * 40)
