"""``reconciler validate``: what a user and a CI job see, and the exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from reconciler.cli import cli

REPO = Path(__file__).resolve().parent.parent
HEAD = "apiVersion: reconciler/v1\n"
DATASET = HEAD + "kind: Dataset\nslug: {slug}\nname: Readings\n"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def write(files: dict[str, str], root: Path) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_the_example_tree_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    result = run("validate")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Valid: 1 storage target, 4 datasets, 10 records in 4 files.\n"
    assert result.stderr == ""


def test_path_defaults_to_manifests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write({"manifests/a.yaml": DATASET.format(slug="abc")}, tmp_path)
    monkeypatch.chdir(tmp_path)
    result = run("validate")
    assert (result.exit_code, result.stdout) == (
        0,
        "Valid: 0 storage targets, 1 dataset, 0 records in 1 file.\n",
    )


def test_unresolved_links_are_listed_for_the_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        {
            "m/a.yaml": DATASET.format(slug="abc") + "storageTarget: shared-clickhouse\n",
            "m/b.yaml": HEAD
            + "kind: RecordSet\nnamespace: obs\ndefaults:\n  metadata: {datasetSlug: ingested}\n"
            "records:\n  - key: s1\n  - key: s2\n  - key: s3\n    metadata: {datasetSlug: abc}\n",
        },
        tmp_path,
    )
    monkeypatch.chdir(tmp_path)
    result = run("validate", "m")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "Valid: 0 storage targets, 1 dataset, 3 records in 2 files.",
        "m/b.yaml:7: dataset:ingested (linked from record:obs/s1 and 1 other object) is not declared in "
        "the tree; plan will check it against the catalog.",
        "m/a.yaml:1: storage-target:shared-clickhouse (linked from dataset:abc) is not declared in the tree; "
        "plan will check it against the catalog.",
    ]


def test_problems_are_listed_one_per_line_with_a_closing_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        {
            "m/a.yaml": DATASET.format(slug="abc") + 'protect: "yes"\ncolour: blue\n',
            "m/b.yaml": DATASET.format(slug="abc"),
            "m/c.yaml": "slug: [unclosed\n",
        },
        tmp_path,
    )
    monkeypatch.chdir(tmp_path)
    result = run("validate", "m")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "m/a.yaml:5:10: protect: must be true or false, got 'yes'",
        "m/a.yaml:6:1: unknown field 'colour'",
        "m/b.yaml:1:1: dataset:abc is declared twice; first at m/a.yaml:1",
        "m/c.yaml:2:1: YAML syntax error: did not find expected ',' or ']' (while parsing a flow sequence "
        "at line 1, column 7)",
        "error: 4 problems in the manifest tree",
    ]
    assert "Traceback" not in result.output


def test_one_problem_reads_in_the_singular(tmp_path: Path) -> None:
    write({"a.yaml": DATASET.format(slug="ab")}, tmp_path)
    result = run("validate", str(tmp_path / "a.yaml"))
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == "error: 1 problem in the manifest tree"


def test_a_missing_path_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("validate", "nope")
    assert (result.exit_code, result.stderr) == (1, "error: nope: no such file or directory\n")
    result = run("validate")
    assert (result.exit_code, result.stderr) == (1, "error: manifests: no such file or directory\n")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    write({"a.yaml": DATASET.format(slug="ab")}, tmp_path)
    result = run("--debug", "validate", str(tmp_path))
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and "ManifestError" in result.stderr


def test_validate_needs_no_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write({"a.yaml": DATASET.format(slug="abc")}, tmp_path)
    monkeypatch.setenv("RECONCILER_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    assert run("validate", str(tmp_path)).exit_code == 0


def test_help_explains_the_command() -> None:
    result = run("validate", "--help")
    assert result.exit_code == 0
    assert "Usage: reconciler validate [OPTIONS] [PATH]" in result.stdout.replace(
        "cli validate", "reconciler validate"
    )
    text = " ".join(result.stdout.split())
    assert "(default: manifests)" in text
    assert "path:line:column: message" in text
    assert "Needs no database" in text


def test_a_broken_reconciler_yaml_fails_validate_as_it_would_fail_plan(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """CI runs validate on every pull request: a policy mistake must not wait for apply to show."""
    import subprocess

    write({"manifests/a.yaml": DATASET.format(slug="abc"),
           "reconciler.yaml": "source: team\npolicy:\n  grants:\n    - authors: [x]\n      scopes: [bogus]\n"},
          tmp_path)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.chdir(tmp_path)
    result = run("validate")
    assert result.exit_code == 1
    assert result.stderr == (f"error: {tmp_path / 'reconciler.yaml'}: policy.grants[0].scopes: unknown scope(s) bogus "
                             "(known: metastore:admin, metastore:delete, metastore:write, timestore:admin)\n")
    (tmp_path / "reconciler.yaml").write_text("source: team\n", encoding="utf-8")
    assert run("validate").exit_code == 0
