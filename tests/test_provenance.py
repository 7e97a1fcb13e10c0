"""Attribution from real git repositories: blame per span, dirty trees, removals, identities."""

from __future__ import annotations

import shutil
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from reconciler import provenance
from reconciler.errors import ConfigurationError
from reconciler.provenance import Author, GitRepository, Removal, Span, _follow, _Hunk

from .conftest import run_git

ALICE = ("Alice Anders", "alice@example.com")
BOB = ("Bob Berg", "bob@example.com")
CAROL = ("Carol Chen", "carol@example.com")
DAVE = ("Dave Dunn", "dave@example.com")
LOCAL = ("Dora Local", "dora@example.com")

A_LINES = [f"a{n}" for n in range(1, 6)]
B_LINES = [f"b{n}" for n in range(1, 6)]


def write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def commit(repo: Path, author: tuple[str, str], date: str, message: str = "change") -> str:
    """Stage everything and commit it as ``author`` with the given author date; return the sha."""
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-q", "--no-verify", "-m", message, f"--date={date}", author=author)
    return run_git(repo, "rev-parse", "HEAD").strip()


@pytest.fixture
def repo(git_repo: Path) -> Path:
    """The shared empty repository, with a local identity for uncommitted work."""
    run_git(git_repo, "config", "user.name", LOCAL[0])
    run_git(git_repo, "config", "user.email", LOCAL[1])
    run_git(git_repo, "config", "commit.gpgsign", "false")
    return git_repo


@pytest.fixture
def two_authors(repo: Path) -> tuple[Path, str, str]:
    """Alice writes objects A (lines 1-5) and B (6-10); Bob then changes line 8 (in B)."""
    manifest = repo / "manifests" / "datasets.yaml"
    write(manifest, A_LINES + B_LINES)
    alice = commit(repo, ALICE, "2024-01-01T10:00:00+01:00", "add A and B")
    write(manifest, [*A_LINES, "b1", "b2", "b3 changed", "b4", "b5"])
    bob = commit(repo, BOB, "2024-02-01T10:00:00-05:00", "change B")
    return repo, alice, bob


def committed(author: tuple[str, str], sha: str) -> tuple[str, str, str | None, bool]:
    return (author[0], author[1], sha, False)


def key(author: Author | None) -> tuple[str, str, str | None, bool] | None:
    return None if author is None else (author.name, author.email, author.commit, author.uncommitted)


UNCOMMITTED = (LOCAL[0], LOCAL[1], None, True)


# --- discover, head, identity -----------------------------------------------------------


def test_discover_finds_the_root_from_a_file_a_directory_or_a_missing_path(repo: Path) -> None:
    write(repo / "manifests" / "x.yaml", ["x"])
    for start in (
        repo,
        repo / "manifests",
        repo / "manifests" / "x.yaml",
        repo / "manifests" / "new" / "y.yaml",
    ):
        found = GitRepository.discover(start)
        assert found is not None
        assert found.root == repo.resolve()


def test_discover_outside_git_is_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    (tmp_path / "plain").mkdir()
    assert GitRepository.discover(tmp_path / "plain") is None
    assert GitRepository.discover(tmp_path / "plain" / "file.yaml") is None


def test_empty_repository_has_no_head_and_everything_is_uncommitted(repo: Path) -> None:
    write(repo / "manifests" / "a.yaml", A_LINES)
    git = GitRepository.discover(repo)
    assert git is not None
    assert git.head() is None
    span = Span(Path("manifests/a.yaml"), 1, 5)
    assert key(git.attribute([span])[span]) == UNCOMMITTED
    assert key(git.removal_author(Path("manifests/a.yaml"), None)) == UNCOMMITTED


def test_head_and_commit_exists(two_authors: tuple[Path, str, str]) -> None:
    repo, alice, bob = two_authors
    git = GitRepository(repo)
    assert git.head() == bob
    assert git.commit_exists(alice) and git.commit_exists(bob[:12])
    assert not git.commit_exists("0" * 40)
    assert not git.commit_exists("deadbeef" * 5)
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


# --- attribute ------------------------------------------------------------------------


def test_each_span_goes_to_the_latest_commit_among_its_lines(two_authors: tuple[Path, str, str]) -> None:
    repo, alice, bob = two_authors
    git = GitRepository(repo)
    path = Path("manifests/datasets.yaml")
    a, b, both = Span(path, 1, 5), Span(path, 6, 10), Span(repo / path, 4, 8)
    authors = git.attribute([a, b, both])
    assert key(authors[a]) == committed(ALICE, alice)
    assert key(authors[b]) == committed(BOB, bob)
    assert key(authors[both]) == committed(BOB, bob)
    assert authors[a].committed_at == datetime(2024, 1, 1, 10, tzinfo=timezone(timedelta(hours=1)))
    bob_date = authors[b].committed_at
    assert bob_date is not None and bob_date.utcoffset() == timedelta(hours=-5)


def test_a_span_of_old_lines_only_is_not_given_to_the_later_commit(
    two_authors: tuple[Path, str, str],
) -> None:
    repo, alice, _ = two_authors
    span = Span(Path("manifests/datasets.yaml"), 6, 7)  # b1, b2: untouched by Bob
    assert key(GitRepository(repo).attribute([span])[span]) == committed(ALICE, alice)


def test_equal_author_dates_are_decided_by_committer_date(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = repo / "manifests" / "a.yaml"
    write(manifest, ["one", "two"])
    monkeypatch.setenv("GIT_COMMITTER_DATE", "2024-03-01T00:00:00+00:00")
    commit(repo, ALICE, "2024-01-01T00:00:00+00:00")
    write(manifest, ["one", "two changed"])
    monkeypatch.setenv("GIT_COMMITTER_DATE", "2024-03-02T00:00:00+00:00")
    bob = commit(repo, BOB, "2024-01-01T00:00:00+00:00")
    span = Span(Path("manifests/a.yaml"), 1, 2)
    assert key(GitRepository(repo).attribute([span])[span]) == committed(BOB, bob)


def test_commits_in_the_same_second_go_to_the_descendant(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Same author and committer second: only ancestry can tell which is newer. Repeat with
    # different contents so the shas fall in both orders.
    monkeypatch.setenv("GIT_COMMITTER_DATE", "2024-03-01T00:00:00+00:00")
    git = GitRepository(repo)
    for n in range(8):
        name = f"manifests/same-second-{n}.yaml"
        write(repo / name, [f"one {n}", "two"])
        alice = commit(repo, ALICE, "2024-03-01T00:00:00+00:00")
        write(repo / name, [f"one {n}", f"two changed {n}"])
        bob = commit(repo, BOB, "2024-03-01T00:00:00+00:00")
        span = Span(Path(name), 1, 2)
        assert key(git.attribute([span])[span]) == committed(BOB, bob), n
        first, second = Span(Path(name), 1, 1), Span(Path(name), 2, 2)
        found = git.attribute([first, second])
        assert key(found[first]) == committed(ALICE, alice)
        assert key(git.latest([found[first], found[second]])) == committed(BOB, bob)
        assert key(git.latest([found[second], found[first]])) == committed(BOB, bob)


def test_an_uncommitted_edit_marks_only_its_own_span(two_authors: tuple[Path, str, str]) -> None:
    repo, _, bob = two_authors
    write(
        repo / "manifests" / "datasets.yaml",
        ["a1", "a2 edited", "a3", "a4", "a5", "b1", "b2", "b3 changed", "b4", "b5"],
    )
    path = Path("manifests/datasets.yaml")
    a, b = Span(path, 1, 5), Span(path, 6, 10)
    authors = GitRepository(repo).attribute([a, b])
    assert key(authors[a]) == UNCOMMITTED
    assert authors[a].committed_at is None
    assert key(authors[b]) == committed(BOB, bob)


def test_a_staged_but_uncommitted_edit_is_uncommitted(two_authors: tuple[Path, str, str]) -> None:
    repo, _, _ = two_authors
    write(repo / "manifests" / "datasets.yaml", ["a1 staged", *A_LINES[1:], *B_LINES])
    run_git(repo, "add", "-A")
    span = Span(Path("manifests/datasets.yaml"), 1, 5)
    assert key(GitRepository(repo).attribute([span])[span]) == UNCOMMITTED


def test_untracked_and_newly_staged_files_are_uncommitted(two_authors: tuple[Path, str, str]) -> None:
    repo, _, bob = two_authors
    write(repo / "manifests" / "untracked.yaml", A_LINES)
    write(repo / "manifests" / "staged.yaml", B_LINES)
    run_git(repo, "add", "manifests/staged.yaml")
    spans = [
        Span(Path("manifests/untracked.yaml"), 1, 5),
        Span(repo / "manifests" / "staged.yaml", 2, 3),
        Span(Path("manifests/datasets.yaml"), 6, 10),
    ]
    authors = GitRepository(repo).attribute(spans)
    assert [key(authors[s]) for s in spans] == [UNCOMMITTED, UNCOMMITTED, committed(BOB, bob)]


def test_one_blame_per_file_however_many_spans(repo: Path) -> None:
    for name, author, date in (("one", ALICE, "2024-01-01T00:00:00Z"), ("two", BOB, "2024-01-02T00:00:00Z")):
        write(repo / "manifests" / f"{name}.yaml", [f"{name}-{n}" for n in range(1, 101)])
        commit(repo, author, date)
    spans = [
        Span(Path(f"manifests/{name}.yaml"), 4 * n + 1, 4 * n + 4)
        for name in ("one", "two")
        for n in range(25)
    ]
    before = provenance.GIT_CALLS["blame"]
    authors = GitRepository(repo).attribute(spans)
    assert provenance.GIT_CALLS["blame"] - before == 2
    assert len(authors) == 50
    assert {authors[s].name for s in spans[:25]} == {ALICE[0]}
    assert {authors[s].name for s in spans[25:]} == {BOB[0]}


def test_many_files_are_blamed_in_parallel_and_each_gets_its_own_answer(repo: Path) -> None:
    people = [(f"Person {n}", f"p{n}@example.com") for n in range(7)]
    shas = []
    for n, person in enumerate(people):
        write(repo / "manifests" / f"f{n}.yaml", [f"line {n}"] * 3)
        shas.append(commit(repo, person, f"2024-01-0{n + 1}T00:00:00Z"))
    spans = [Span(Path(f"manifests/f{n}.yaml"), 1, 3) for n in range(7)]
    authors = GitRepository(repo).attribute(spans)
    assert [key(authors[s]) for s in spans] == [
        committed(p, sha) for p, sha in zip(people, shas, strict=True)
    ]


def test_non_ascii_names_and_paths_round_trip(repo: Path) -> None:
    zoe = ("Zoë Ångström", "zoë@example.com")
    write(repo / "manifests" / "données.yaml", ["clé: valeur ünïcödé", "x"])
    sha = commit(repo, zoe, "2024-01-01T00:00:00Z")
    span = Span(Path("manifests/données.yaml"), 1, 2)
    assert key(GitRepository(repo).attribute([span])[span]) == committed(zoe, sha)
    run_git(repo, "rm", "-q", "manifests/données.yaml")
    carol = commit(repo, zoe, "2024-01-02T00:00:00Z")
    removed = GitRepository(repo).removal_author(Path("manifests/données.yaml"), sha, 1, 2)
    assert key(removed) == committed(zoe, carol)


def test_blame_parsing_survives_awkward_line_content(repo: Path) -> None:
    lines = [
        f"{'ab' * 20} 1 1 1",
        "author Mallory",
        "carriage\rreturn",
        "form\x0cfeed",
        "\tsummary x",
        "last",
    ]
    write(repo / "manifests" / "odd.yaml", lines)
    sha = commit(repo, ALICE, "2024-01-01T00:00:00Z")
    path = Path("manifests/odd.yaml")
    spans = [Span(path, n, n) for n in range(1, 7)]
    authors = GitRepository(repo).attribute(spans)
    assert {key(a) for a in authors.values()} == {committed(ALICE, sha)}
    # The last line is still line 6: "\r" and "\f" did not split lines.
    write(repo / "manifests" / "odd.yaml", [*lines[:5], "last edited"])
    after = GitRepository(repo).attribute([Span(path, 5, 5), Span(path, 6, 6)])
    assert key(after[Span(path, 5, 5)]) == committed(ALICE, sha)
    assert key(after[Span(path, 6, 6)]) == UNCOMMITTED


def test_span_end_past_the_last_line_is_clamped_but_a_start_past_it_is_an_error(
    two_authors: tuple[Path, str, str],
) -> None:
    repo, _, bob = two_authors
    git = GitRepository(repo)
    past_end = Span(Path("manifests/datasets.yaml"), 6, 11)
    assert key(git.attribute([past_end])[past_end]) == committed(BOB, bob)
    with pytest.raises(ConfigurationError, match="beyond the end of the file"):
        git.attribute([Span(Path("manifests/datasets.yaml"), 11, 12)])


def test_spans_must_be_well_formed() -> None:
    with pytest.raises(ValueError):
        Span(Path("a.yaml"), 0, 3)
    with pytest.raises(ValueError):
        Span(Path("a.yaml"), 5, 4)


def test_blame_of_a_long_history_works(repo: Path) -> None:
    """A file of 1,000 objects changed by 3,000 commits (made with fast-import) blames correctly and fast."""
    objects, commits = 1000, 3000
    values = ["initial"] * objects
    stream = []
    for n in range(commits):
        values[n % objects] = f"changed by commit {n}"  # commit n touches object n % 1000 only
        data = "".join(f"object-{i}: {value}\n" for i, value in enumerate(values)).encode()
        who = BOB if n == commits - 1 else ALICE
        ident = f"{who[0]} <{who[1]}> {1_700_000_000 + n} +0000"
        stream.append(
            f"commit refs/heads/main\nauthor {ident}\ncommitter {ident}\ndata 1\nc\n"
            f"M 100644 inline manifests/big.yaml\ndata {len(data)}\n".encode()
            + data
            + b"\n"
        )
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, input=b"".join(stream), check=True)
    run_git(repo, "reset", "-q", "--hard", "main")
    git = GitRepository(repo)
    shas = run_git(repo, "rev-list", "--reverse", "HEAD").split()
    spans = [Span(Path("manifests/big.yaml"), i + 1, i + 1) for i in range(objects)]
    started = time.monotonic()
    authors = git.attribute(spans)
    elapsed = time.monotonic() - started
    assert elapsed < 60, f"blame took {elapsed:.1f} s"
    assert [authors[s].commit for s in spans] == shas[commits - objects :]
    assert authors[spans[-1]].name == BOB[0]
    assert {authors[s].name for s in spans[:-1]} == {ALICE[0]}
    whole = Span(Path("manifests/big.yaml"), 1, objects)
    assert git.attribute([whole])[whole].commit == shas[-1]


# --- is_dirty -------------------------------------------------------------------------


def test_is_dirty_sees_staged_unstaged_and_untracked_changes_under_the_paths(
    two_authors: tuple[Path, str, str],
) -> None:
    repo, _, _ = two_authors
    git = GitRepository(repo)
    manifests = [repo / "manifests"]
    (repo / "elsewhere").mkdir()
    assert not git.is_dirty(manifests)
    assert not git.is_dirty([])

    (repo / ".gitignore").write_text("*.tmp\n")
    (repo / "manifests" / "scratch.tmp").write_text("ignored\n")
    commit(repo, ALICE, "2024-03-01T00:00:00Z")
    assert not git.is_dirty(manifests)  # ignored files do not count

    (repo / "elsewhere" / "notes.txt").write_text("not a manifest\n")
    assert not git.is_dirty(manifests)
    assert git.is_dirty([repo])

    write(repo / "manifests" / "datasets.yaml", ["unstaged"])
    assert git.is_dirty(manifests)
    assert git.is_dirty([Path("manifests/datasets.yaml")])
    run_git(repo, "add", "manifests/datasets.yaml")
    assert git.is_dirty(manifests)  # staged
    commit(repo, ALICE, "2024-03-02T00:00:00Z")
    assert not git.is_dirty(manifests)

    write(repo / "manifests" / "deep" / "new.yaml", ["untracked"])
    assert git.is_dirty(manifests)


# --- removal_author ---------------------------------------------------------------------


def test_removal_goes_to_the_commit_that_removed_the_lines_not_a_later_one(
    two_authors: tuple[Path, str, str],
) -> None:
    repo, _, bob = two_authors
    manifest = repo / "manifests" / "datasets.yaml"
    write(manifest, ["b1", "b2", "b3 changed", "b4", "b5"])
    carol = commit(repo, CAROL, "2024-03-01T00:00:00Z", "remove A")
    write(manifest, ["b1", "b2", "b3 changed again", "b4", "b5"])
    dave = commit(repo, DAVE, "2024-04-01T00:00:00Z", "change B")
    git = GitRepository(repo)
    path = Path("manifests/datasets.yaml")
    assert key(git.removal_author(path, bob, 1, 5)) == committed(CAROL, carol)
    # Without the lines, only the file is known: the latest commit that touched it.
    assert key(git.removal_author(path, bob)) == committed(DAVE, dave)


def test_removal_after_an_edit_and_lines_moved_by_an_insertion_above(repo: Path) -> None:
    manifest = repo / "manifests" / "datasets.yaml"
    write(manifest, A_LINES + B_LINES)
    alice = commit(repo, ALICE, "2024-01-01T00:00:00Z")
    write(manifest, ["new1", "new2", "new3", *A_LINES, "b1", "b2 edited", "b3", "b4", "b5"])
    commit(repo, BOB, "2024-02-01T00:00:00Z", "insert above, edit B")
    write(manifest, ["new1", "new2", "new3", *A_LINES])
    carol = commit(repo, CAROL, "2024-03-01T00:00:00Z", "remove B")
    write(manifest, ["new1 edited", "new2", "new3", *A_LINES])
    commit(repo, DAVE, "2024-04-01T00:00:00Z", "edit above")
    removed = GitRepository(repo).removal_author(Path("manifests/datasets.yaml"), alice, 6, 10)
    assert key(removed) == committed(CAROL, carol)


def test_removal_by_deleting_the_file(two_authors: tuple[Path, str, str]) -> None:
    repo, _, bob = two_authors
    run_git(repo, "rm", "-q", "manifests/datasets.yaml")
    carol = commit(repo, CAROL, "2024-03-01T00:00:00Z", "delete file")
    write(repo / "manifests" / "other.yaml", ["later"])
    commit(repo, DAVE, "2024-04-01T00:00:00Z", "unrelated")
    git = GitRepository(repo)
    assert key(git.removal_author(repo / "manifests" / "datasets.yaml", bob, 6, 10)) == committed(
        CAROL, carol
    )
    assert key(git.removal_author(Path("manifests/datasets.yaml"), bob)) == committed(CAROL, carol)
    assert key(git.removal_author(Path("manifests/datasets.yaml"), None)) == committed(CAROL, carol)


def test_removal_by_renaming_the_file_away(two_authors: tuple[Path, str, str]) -> None:
    repo, _, bob = two_authors
    run_git(repo, "mv", "manifests/datasets.yaml", "manifests/renamed.yaml")
    carol = commit(repo, CAROL, "2024-03-01T00:00:00Z", "rename")
    assert key(GitRepository(repo).removal_author(Path("manifests/datasets.yaml"), bob, 1, 5)) == committed(
        CAROL, carol
    )


def test_removal_only_in_the_working_tree_is_uncommitted(two_authors: tuple[Path, str, str]) -> None:
    repo, alice, bob = two_authors
    write(repo / "manifests" / "datasets.yaml", ["b1", "b2", "b3 changed", "b4", "b5"])
    git = GitRepository(repo)
    path = Path("manifests/datasets.yaml")
    assert key(git.removal_author(path, bob, 1, 5)) == UNCOMMITTED  # HEAD is since_commit
    assert key(git.removal_author(path, alice, 1, 5)) == UNCOMMITTED  # Bob's commit did not touch A
    assert key(git.removal_author(path, bob)) == UNCOMMITTED
    assert key(git.removal_author(path, None)) == UNCOMMITTED
    (repo / "manifests" / "datasets.yaml").unlink()
    assert key(git.removal_author(path, bob, 6, 10)) == UNCOMMITTED


def test_committed_removal_stays_committed_despite_other_uncommitted_edits(
    two_authors: tuple[Path, str, str],
) -> None:
    repo, _, bob = two_authors
    manifest = repo / "manifests" / "datasets.yaml"
    write(manifest, ["b1", "b2", "b3 changed", "b4", "b5"])
    carol = commit(repo, CAROL, "2024-03-01T00:00:00Z", "remove A")
    write(manifest, ["b1", "b2", "b3 changed", "b4", "b5 uncommitted"])
    assert key(GitRepository(repo).removal_author(Path("manifests/datasets.yaml"), bob, 1, 5)) == committed(
        CAROL, carol
    )


def test_removal_after_a_committed_edit_but_itself_uncommitted(two_authors: tuple[Path, str, str]) -> None:
    repo, alice, _ = two_authors
    write(repo / "manifests" / "datasets.yaml", A_LINES)  # B (edited by Bob) removed, not committed
    assert (
        key(GitRepository(repo).removal_author(Path("manifests/datasets.yaml"), alice, 6, 10)) == UNCOMMITTED
    )


def test_removal_merged_from_a_branch_goes_to_the_branch_author(two_authors: tuple[Path, str, str]) -> None:
    repo, _, bob = two_authors
    run_git(repo, "checkout", "-q", "-b", "remove-a")
    write(repo / "manifests" / "datasets.yaml", ["b1", "b2", "b3 changed", "b4", "b5"])
    carol = commit(repo, CAROL, "2024-03-01T00:00:00Z", "remove A")
    run_git(repo, "checkout", "-q", "main")
    write(repo / "manifests" / "other.yaml", ["meanwhile"])
    commit(repo, DAVE, "2024-03-02T00:00:00Z", "meanwhile")
    run_git(repo, "merge", "-q", "--no-ff", "-m", "merge", "remove-a", author=BOB)
    assert run_git(repo, "rev-parse", "HEAD^2").strip() == carol
    assert key(GitRepository(repo).removal_author(Path("manifests/datasets.yaml"), bob, 1, 5)) == committed(
        CAROL, carol
    )


def test_removal_with_an_unknown_or_missing_since_uses_the_latest_commit_on_the_file(
    two_authors: tuple[Path, str, str],
) -> None:
    repo, _, _ = two_authors
    write(repo / "manifests" / "datasets.yaml", B_LINES)
    carol = commit(repo, CAROL, "2024-03-01T00:00:00Z")
    git = GitRepository(repo)
    path = Path("manifests/datasets.yaml")
    assert key(git.removal_author(path, None)) == committed(CAROL, carol)
    assert key(git.removal_author(path, "1234567" * 5 + "12345", 1, 5)) == committed(CAROL, carol)


def test_removal_with_nothing_to_say_is_none(two_authors: tuple[Path, str, str]) -> None:
    repo, _, bob = two_authors
    git = GitRepository(repo)
    assert git.removal_author(Path("manifests/datasets.yaml"), bob, 1, 5) is None
    assert git.removal_author(Path("manifests/never.yaml"), None) is None
    with pytest.raises(ValueError):
        git.removal_author(Path("manifests/datasets.yaml"), bob, 5, None)


def test_removal_runs_one_git_log(two_authors: tuple[Path, str, str]) -> None:
    repo, _, bob = two_authors
    write(repo / "manifests" / "datasets.yaml", B_LINES)
    commit(repo, CAROL, "2024-03-01T00:00:00Z")
    before = provenance.GIT_CALLS["log"]
    GitRepository(repo).removal_author(Path("manifests/datasets.yaml"), bob, 1, 5)
    assert provenance.GIT_CALLS["log"] - before == 1


def test_removals_from_one_file_share_one_log_and_one_diff(repo: Path) -> None:
    manifest = repo / "manifests" / "many.yaml"
    write(manifest, [f"object-{n}" for n in range(200)])
    alice = commit(repo, ALICE, "2024-01-01T00:00:00Z")
    write(manifest, [f"object-{n}" for n in range(200) if n % 2])  # Carol removes the even ones
    carol = commit(repo, CAROL, "2024-02-01T00:00:00Z")
    write(manifest, [f"object-{n}" for n in range(200) if n % 4 == 1])  # half the odd ones, uncommitted
    removals = [Removal(manifest, alice, n + 1, n + 1) for n in range(200) if n % 4 != 1]
    before = dict(provenance.GIT_CALLS)
    authors = GitRepository(repo).removal_authors(removals)
    calls = {name: count - before.get(name, 0) for name, count in provenance.GIT_CALLS.items()}
    assert calls["log"] == 1 and calls["diff"] == 1 and calls["config"] == 1
    for removal in removals:
        assert removal.start_line is not None
        expected = committed(CAROL, carol) if (removal.start_line - 1) % 2 == 0 else UNCOMMITTED
        assert key(authors[removal]) == expected, removal


def test_is_shallow(two_authors: tuple[Path, str, str], tmp_path: Path) -> None:
    repo, _, _ = two_authors
    assert not GitRepository(repo).is_shallow()
    clone = tmp_path / "shallow"
    run_git(tmp_path, "clone", "-q", "--depth=1", f"file://{repo}", str(clone))
    assert GitRepository(clone).is_shallow()


def test_a_slow_git_times_out_as_a_configuration_error(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "slow-bin" / "git"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\nexec {shutil.which('sleep')} 10\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    monkeypatch.setattr(provenance, "GIT_TIMEOUT_SECONDS", 0.5)
    with pytest.raises(ConfigurationError, match=r"did not finish within 0\.5 s"):
        GitRepository(repo).head()


# --- carrying a line range through a diff ---------------------------------------------


@pytest.mark.parametrize(
    ("hunks", "expected"),
    [
        ([_Hunk(1, 0, 1, 2)], (False, (12, 15))),  # two lines inserted above
        ([_Hunk(20, 3, 20, 0)], (False, (10, 13))),  # deletion below
        ([_Hunk(13, 0, 14, 1)], (False, (10, 13))),  # insertion right after the range
        ([_Hunk(10, 4, 9, 0)], (True, None)),  # the whole range deleted
        ([_Hunk(2, 2, 1, 0), _Hunk(10, 4, 7, 0)], (True, None)),  # ... together with lines above
        ([_Hunk(11, 1, 11, 1)], (True, (10, 13))),  # one line edited
        ([_Hunk(1, 1, 0, 0), _Hunk(12, 2, 10, 0)], (True, (9, 10))),  # tail deleted, range shifted up
        ([_Hunk(11, 0, 12, 3)], (True, (10, 16))),  # lines inserted inside
    ],
)
def test_follow_carries_a_range_through_a_zero_context_diff(
    hunks: list[_Hunk], expected: tuple[bool, tuple[int, int] | None]
) -> None:
    assert _follow(10, 13, hunks) == expected


# --- failures -------------------------------------------------------------------------


def test_a_failing_git_command_is_one_configuration_error_line(two_authors: tuple[Path, str, str]) -> None:
    repo, _, _ = two_authors
    (repo / "manifests" / "datasets.yaml").unlink()  # tracked, but gone from the work tree
    with pytest.raises(ConfigurationError) as raised:
        GitRepository(repo).attribute([Span(Path("manifests/datasets.yaml"), 1, 5)])
    message = raised.value.render()
    assert "\n" not in message
    assert message.startswith("git blame failed in ") and "datasets.yaml" in message


def test_missing_git_is_a_configuration_error(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(ConfigurationError, match="git is not installed"):
        GitRepository.discover(repo)


def test_paths_outside_the_repository_are_refused(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="outside the git repository"):
        GitRepository(repo).is_dirty([tmp_path / "elsewhere.yaml"])
