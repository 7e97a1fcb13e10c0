"""reconciler import, where it could hurt: credentials in clear, writes through symbolic links,
half-written files, look-alike names the loader refuses, and catalog text that drives the terminal.

Black box through the CLI against a real catalog and a real git repository; every
import ends with the check that matters to its user: the tree still validates, and the
plan adopts what was written with no change.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from reconciler.cli import cli
from reconciler.core.model import ENV_NAME_PATTERN
from tests.helpers import TEST_AUTHOR, commit, invoke, plan_json

# Every credential below is a distinct marker, so a leak of any of them is found by name.
CONFIG = {
    "host": "pg.internal",
    "auth": {"user": "svc", "pass": "leak-auth-pass", "pwd": "leak-auth-pwd"},
    "dsn": "host=pg.internal port=5432 user=svc password=leak-dsn dbname=catalog",
    "jdbc": "jdbc:postgresql://pg.internal:5432/catalog?user=svc&password=leak-jdbc&ssl=true",
    "mirror": "https://svc:leak-url@mirror.example.com/repo",
    "headers": {"X-Trace": "on", "Auth-Header": "Bearer leak-bearer-0123456789"},
    "extraHeaders": ["Accept: application/json", "Authorization: Basic bGVhay1iYXNpYw=="],
    "odbc": "Driver={PostgreSQL};Server=pg;Uid=svc;Pwd=leak-odbc;",
    "cléPass": "leak-unicode-key",
    "region": "eu-west-1",
    "bypass": "compass",
    "port": 5432,
}
LEAKS = ["leak-auth-pass", "leak-auth-pwd", "leak-dsn", "leak-jdbc", "leak-url", "leak-bearer", "bGVhay1iYXNpYw",
         "leak-odbc", "leak-unicode-key"]
VARIABLE = re.compile(r"\$\{env:([^}]*)\}")




def validate(tree: Path) -> Result:
    return CliRunner().invoke(cli, ["validate", str(tree)], catch_exceptions=False)






def files_under(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file() or p.is_symlink())


def add_target(db: psycopg.Connection[Any], name: str, config: dict[str, Any]) -> None:
    db.execute("INSERT INTO timestore.storage_targets (id, name, kind, config) VALUES (%s, %s, 'local', %s)",
               (f"st-{name}", name, json.dumps(config)))


# --- 1. credentials -----------------------------------------------------------------------------


def test_credentials_by_key_name_and_by_shape_are_written_as_env_references_and_adopt_unchanged(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    add_target(db, "warehouse.pg", CONFIG)
    result = invoke(git_repo, db_url, "import")
    assert result.exit_code == 0, result.output
    text = (git_repo / "manifests" / "imported" / "storage-targets.yaml").read_text(encoding="utf-8")
    leaked = [leak for leak in LEAKS if leak in text or leak in result.output]
    assert leaked == []
    # What is not a credential is written as it is, for review.
    for plain in ("host: pg.internal", "user: svc", 'X-Trace: "on"', "region: eu-west-1", "bypass: compass",
                  "port: 5432", '- "Accept: application/json"'):
        assert plain in text

    variables = VARIABLE.findall(text)
    assert len(variables) == 9 and len(set(variables)) == 9
    assert all(re.match(ENV_NAME_PATTERN, name) for name in variables)
    # The file says, up front, what to set; the values themselves are nowhere.
    comment = [line for line in text.splitlines() if line.startswith("#")]
    assert "# Credentials are not written in this file. Before plan or apply, set each of these" in comment
    for name in variables:
        assert any(line.startswith(f"#   {name}: storage-target:warehouse.pg config.") for line in comment), name
    assert "#   RECONCILER_WAREHOUSE_PG_DSN: storage-target:warehouse.pg config.dsn (it holds a password or token " \
           "parameter)" in comment
    assert "#   RECONCILER_WAREHOUSE_PG_AUTH_PASS: storage-target:warehouse.pg config.auth.pass (its key names " \
           "a secret)" in comment
    assert "warning: storage-target:warehouse.pg: config.jdbc is written as ${env:RECONCILER_WAREHOUSE_PG_JDBC}; " \
           "set RECONCILER_WAREHOUSE_PG_JDBC to its value before plan or apply" in result.stderr

    assert validate(git_repo / "manifests").exit_code == 0
    commit(git_repo, TEST_AUTHOR, "import the warehouse target")
    by_variable = _values_by_variable(text)
    for name, value in by_variable.items():
        monkeypatch.setenv(name, value)
    plan = plan_json(git_repo, db_url)
    assert plan["changes"] == [] and [b["address"] for b in plan["bookkeeping"]] == ["storage-target:warehouse.pg"]
    assert [f for f in plan["findings"] if f["severity"] == "error"] == []
    before = db.execute("SELECT config, updated_at FROM timestore.storage_targets").fetchall()
    applied = invoke(git_repo, db_url, "apply", "--auto-approve")
    assert applied.exit_code == 0, applied.output
    assert db.execute("SELECT config, updated_at FROM timestore.storage_targets").fetchall() == before
    assert not any(leak in applied.output for leak in LEAKS)


def _values_by_variable(text: str) -> dict[str, str]:
    """Each variable with the catalog value at its path, read from the written documents."""
    import yaml

    (document,) = [d for d in yaml.safe_load_all(text) if d]
    found: dict[str, str] = {}

    def walk(written: Any, original: Any) -> None:
        if isinstance(written, dict):
            for key in written:
                walk(written[key], original[key])
        elif isinstance(written, list):
            for item, value in zip(written, original, strict=True):
                walk(item, value)
        elif isinstance(written, str) and written.startswith("${env:"):
            found[VARIABLE.fullmatch(written).group(1)] = original  # type: ignore[union-attr]

    walk(document["config"], CONFIG)
    return found


def test_what_counts_as_a_credential_and_what_does_not() -> None:
    from reconciler.core.credentials import credential_in, looks_secret

    for key in ("pass", "pwd", "db_pwd", "userPw", "DBPass", "apiKey", "secretAccessKey", "sasToken", "Cookie"):
        assert looks_secret(key), key
    for key in ("bypass", "passthrough", "compass", "host", "user", "region", "bucket", "path"):
        assert not looks_secret(key), key
    for text in ("https://u:p@h/x", "redis://:p@cache:6379", "jdbc:mysql://u:p@db/x", "host=db password=p",
                 "jdbc:postgresql://db/x?user=u&password=p", "Server=db;Uid=u;Pwd=p;", "https://x/y?sig=abc",
                 "Bearer abcdefgh1234", "Authorization: Basic Zm9vOmJhcg==", "-----BEGIN RSA PRIVATE KEY-----",
                 "token ghp_" + "a" * 36, "AKIAABCDEFGHIJKLMNOP"):
        assert credential_in(text), text
    for text in ("https://example.com/path?page=2", "host=db port=5432 dbname=x", "user@example.com",
                 "s3://bucket/key:with@sign", "Bearer", "a: b", "key=value", "http://host:8080/x@y"):
        assert credential_in(text) is None, text


def test_variable_names_never_reuse_one_the_tree_refers_to(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    (git_repo / "manifests" / "mine.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: StorageTarget\nname: other\ntype: local\n"
        "config: {password: \"${env:RECONCILER_WH_PASSWORD}\"}\n")
    add_target(db, "wh", {"password": "leak-one", "Password": "leak-two"})
    result = invoke(git_repo, db_url, "import")
    assert result.exit_code == 0, result.output
    text = (git_repo / "manifests" / "imported" / "storage-targets.yaml").read_text(encoding="utf-8")
    assert sorted(VARIABLE.findall(text)) == ["RECONCILER_WH_PASSWORD_2", "RECONCILER_WH_PASSWORD_3"]


def test_credentials_where_no_reference_can_stand_skip_the_object(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    db.execute("""INSERT INTO timestore.datasets (id, slug, name, description, metadata) VALUES
        ('ds-1', 'leaky', 'Leaky', NULL, '{"source": "postgresql://loader:leak-meta@db/raw"}'),
        ('ds-2', 'clean', 'Clean', 'Readings, every minute', '{"unit": "C"}')""")
    db.execute("""INSERT INTO metastore.metastore_records (namespace, record_key, metadata) VALUES
        ('obs', 'hook', '{"call": {"headers": ["Authorization: Bearer leak-record-token"]}}')""")
    result = invoke(git_repo, db_url, "import")
    assert result.exit_code == 0, result.output
    assert ("warning: skipped dataset:leaky: metadata.source looks like a URL with a password, and only a storage "
            "target's config can take a value from the environment; import never writes a credential in clear "
            "(take it out of the catalog object, or declare the object by hand)") in result.stderr
    assert "warning: skipped record:obs/hook: metadata.call.headers[0] looks like a header carrying a credential" \
        in result.stderr
    out = git_repo / "manifests" / "imported"
    assert files_under(out) == ["datasets/clean.yaml"]
    assert "leak-" not in result.output


# --- 2. symbolic links and atomic files ------------------------------------------------------------


@pytest.fixture
def catalog(db: psycopg.Connection[Any]) -> None:
    """One object of each kind, unmanaged."""
    add_target(db, "cold", {"root": "/data"})
    db.execute("INSERT INTO timestore.datasets (id, slug, name) VALUES ('ds-1', 'readings', 'Readings')")
    db.execute("INSERT INTO metastore.metastore_records (namespace, record_key, owner) VALUES ('obs', 's1', 'me')")


def test_a_dangling_symlink_in_the_output_directory_is_refused_and_nothing_is_written(
        git_repo: Path, db_url: str, tmp_path: Path, catalog: None) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "storage-targets.yaml").symlink_to(elsewhere / "evil.yaml")
    for force in ((), ("--force",)):
        result = invoke(git_repo, db_url, "import", "--out", str(out), *force)
        assert result.exit_code == 1
        assert "refusing to write through symbolic links or over directories, even with --force" in result.stderr
        assert (f"{out / 'storage-targets.yaml'} (a symbolic link to {elsewhere / 'evil.yaml'}, outside {out})"
                in result.stderr)
        assert "wrote" not in result.stdout
        assert files_under(out) == ["storage-targets.yaml"] and files_under(elsewhere) == []


def test_a_directory_symlink_in_the_output_directory_is_refused_and_nothing_is_written(
        git_repo: Path, db_url: str, tmp_path: Path, catalog: None) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "datasets").symlink_to(elsewhere, target_is_directory=True)
    result = invoke(git_repo, db_url, "import", "--out", str(out))
    assert result.exit_code == 1
    assert f"{out / 'datasets'} (a symbolic link to {elsewhere}, outside {out})" in result.stderr
    assert files_under(out) == ["datasets"] and files_under(elsewhere) == []


def test_force_never_overwrites_a_file_outside_through_a_symlink(
        git_repo: Path, db_url: str, tmp_path: Path, catalog: None) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    (out / "records").mkdir(parents=True)
    elsewhere.mkdir()
    (elsewhere / "precious.yaml").write_text("precious: true\n")
    (out / "records" / "obs.yaml").symlink_to(elsewhere / "precious.yaml")
    result = invoke(git_repo, db_url, "import", "--out", str(out), "--force")
    assert result.exit_code == 1
    assert f"{out / 'records' / 'obs.yaml'} (a symbolic link to {elsewhere / 'precious.yaml'}" in result.stderr
    assert (elsewhere / "precious.yaml").read_text() == "precious: true\n"
    assert files_under(out) == ["records/obs.yaml"]


def test_a_symlink_that_stays_inside_the_output_directory_is_refused_too(
        git_repo: Path, db_url: str, tmp_path: Path, catalog: None) -> None:
    out = tmp_path / "out"
    (out / "real").mkdir(parents=True)
    (out / "datasets").symlink_to(out / "real", target_is_directory=True)
    result = invoke(git_repo, db_url, "import", "--out", str(out))
    assert result.exit_code == 1
    assert f"{out / 'datasets'} (a symbolic link to {out / 'real'}, inside {out})" in result.stderr
    assert files_under(out) == ["datasets"]


def test_an_output_directory_that_leads_out_of_the_repository_is_refused(
        git_repo: Path, db_url: str, tmp_path: Path, catalog: None) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (git_repo / "vendor").symlink_to(elsewhere, target_is_directory=True)  # beside the tree, in the repository
    result = invoke(git_repo, db_url, "import", "--out", str(git_repo / "vendor" / "imported"))
    assert result.exit_code == 1
    assert (f"refusing to import into {git_repo / 'vendor' / 'imported'}: {git_repo / 'vendor'} is a symbolic "
            f"link leading outside the repository (to {elsewhere}); nothing was written") in result.stderr
    assert files_under(elsewhere) == []
    # Inside the tree, the loader refuses such a link first, for every command.
    (git_repo / "manifests" / "imported").symlink_to(elsewhere, target_is_directory=True)
    result = invoke(git_repo, db_url, "import")
    assert result.exit_code == 1 and "symbolic link leads outside the manifest tree" in result.stderr
    assert files_under(elsewhere) == []


def test_a_link_inside_the_repository_above_the_output_directory_is_followed_once(
        git_repo: Path, db_url: str, catalog: None) -> None:
    (git_repo / "manifests" / "staging").mkdir()
    (git_repo / "manifests" / "imported").symlink_to(git_repo / "manifests" / "staging", target_is_directory=True)
    result = invoke(git_repo, db_url, "import")
    assert result.exit_code == 0, result.output
    assert files_under(git_repo / "manifests" / "staging") == ["datasets/readings.yaml", "records/obs.yaml",
                                                               "storage-targets.yaml"]
    assert validate(git_repo / "manifests").stdout == (
        "Valid: 1 storage target, 1 dataset, 1 record in 3 files.\n")


def test_files_are_written_whole_and_no_temporary_file_is_left(
        git_repo: Path, db_url: str, tmp_path: Path, catalog: None) -> None:
    out = tmp_path / "out"
    assert invoke(git_repo, db_url, "import", "--out", str(out)).exit_code == 0
    first = {name: (out / name).read_bytes() for name in files_under(out)}
    forced = invoke(git_repo, db_url, "import", "--out", str(out), "--force")
    assert forced.exit_code == 0, forced.output
    assert sorted(first) == ["datasets/readings.yaml", "records/obs.yaml", "storage-targets.yaml"]
    assert {name: (out / name).read_bytes() for name in files_under(out)} == first  # no hidden leftovers


KILLER = """\
import os, signal, sys
from pathlib import Path

real_write = os.write


def write(fd, data):
    # Half of the first manifest's bytes reach the disk, then the process dies at once.
    if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
        real_write(fd, bytes(data[: len(data) // 2]))
        os.kill(os.getpid(), signal.SIGKILL)
    return real_write(fd, data)


os.write = write
from reconciler.cli import main

sys.argv = ["reconciler", *sys.argv[1:]]
main()
"""


def test_an_import_killed_while_writing_leaves_no_half_written_manifest(
        git_repo: Path, db_url: str, tmp_path: Path, catalog: None) -> None:
    script = tmp_path / "killed_import.py"
    script.write_text(KILLER)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(script), "import", str(git_repo / "manifests"), "--database-url",
                           db_url, "--out", str(out)], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == -9, done.stderr
    # Whatever is there is hidden from the loader (a temporary file), never a visible half manifest.
    assert [name for name in files_under(out) if not Path(name).name.startswith(".")] == []
    assert validate(out).exit_code == 0
    again = invoke(git_repo, db_url, "import", "--out", str(out))
    assert again.exit_code == 0, again.output
    assert len([n for n in files_under(out) if not Path(n).name.startswith(".")]) == 3


# --- 3. look-alikes ---------------------------------------------------------------------------------


def test_look_alikes_are_skipped_naming_both_and_the_tree_still_validates(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    (git_repo / "manifests" / "mine.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Dataset\nslug: obs-one\nname: One\n")
    commit(git_repo, TEST_AUTHOR, "one dataset of our own")
    composed, decomposed = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    db.execute("""INSERT INTO timestore.datasets (id, slug, name) VALUES ('ds-1', 'Readings', 'R'),
        ('ds-2', 'readings', 'r'), ('ds-3', 'OBS-one', 'Shouting'), ('ds-4', 'distinct', 'Fine')""")
    db.execute("INSERT INTO metastore.metastore_records (namespace, record_key) VALUES ('obs', 'Sensor-1'), "
               "('obs', 'sensor-1'), ('obs', %s), ('obs', %s), ('obs', 'sensor-2')", (composed, decomposed))
    result = invoke(git_repo, db_url, "import")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: skipped")]
    suffix = ("only by letter case or Unicode normalisation, and the loader refuses such a pair in one tree; "
              "rename one of them in the catalog (or delete the stray copy) and import again")
    assert warnings == [
        "warning: skipped dataset:OBS-one: it differs from dataset:obs-one, which the tree declares "
        f"({git_repo / 'manifests' / 'mine.yaml'}:1), only by letter case or Unicode normalisation, and the loader refuses such a "
        "pair in one tree; rename it in the catalog, or delete it there if it is a stray copy",
        f"warning: skipped dataset:Readings: it differs from dataset:readings {suffix}",
        f"warning: skipped dataset:readings: it differs from dataset:Readings {suffix}",
        f"warning: skipped record:obs/Sensor-1: it differs from record:obs/sensor-1 {suffix}",
        f"warning: skipped record:obs/{decomposed}: it (spelled record:obs/cafe\\u0301) differs from "
        f"record:obs/{composed} (spelled record:obs/caf\\xe9) {suffix}",
        f"warning: skipped record:obs/{composed}: it (spelled record:obs/caf\\xe9) differs from "
        f"record:obs/{decomposed} (spelled record:obs/cafe\\u0301) {suffix}",
        f"warning: skipped record:obs/sensor-1: it differs from record:obs/Sensor-1 {suffix}",
    ]
    out = git_repo / "manifests" / "imported"
    assert files_under(out) == ["datasets/distinct.yaml", "records/obs.yaml"]
    validated = validate(git_repo / "manifests")
    assert validated.exit_code == 0, validated.output
    commit(git_repo, TEST_AUTHOR, "import")
    plan = plan_json(git_repo, db_url)
    assert sorted(b["address"] for b in plan["bookkeeping"]) == ["dataset:distinct", "record:obs/sensor-2"]
    assert [f for f in plan["findings"] if f["severity"] == "error"] == []


# --- 4. catalog text that would drive the terminal ------------------------------------------------


def test_import_prints_catalog_text_with_control_characters_escaped(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    db.execute("INSERT INTO timestore.datasets (id, slug, name) VALUES ('ds-1', %s, 'Red')",
               ("bad\x1b[31mred",))
    db.execute("INSERT INTO metastore.metastore_records (namespace, record_key, tags) VALUES "
               "('obs', %s, %s)", ("k\r\nwarning: forged line\u2028\x9b2J", ["x" * 65]))
    add_target(db, "cold", {"pass\u202eword": "leak-control", "note": "fine"})
    result = invoke(git_repo, db_url, "import")
    assert result.exit_code == 0, result.output
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202e]", result.output)
    lines = result.stderr.splitlines()
    assert ("warning: skipped dataset:bad\\x1b[31mred: it cannot be written as a valid manifest: slug: must "
            "contain only letters, digits, '.', '_' and '-', got 'bad\\x1b[31mred'") in lines
    assert any(line.startswith("warning: skipped record:obs/k\\x0d\\x0awarning: forged line\\u2028\\x9b2J: ")
               for line in lines)
    assert ("warning: storage-target:cold: config.pass\\u202eword is written as "
            "${env:RECONCILER_COLD_PASS_WORD}; set RECONCILER_COLD_PASS_WORD to its value before plan or "
            "apply") in lines
    assert not any(line.startswith("warning: forged line") for line in lines)
    written = (git_repo / "manifests" / "imported" / "storage-targets.yaml").read_text(encoding="utf-8")
    assert "#   RECONCILER_COLD_PASS_WORD: storage-target:cold config.pass\\u202eword (its key names a secret)" \
        in written.splitlines()
    assert validate(git_repo / "manifests").exit_code == 0


def test_no_file_written_by_import_is_executable_or_hidden(
        git_repo: Path, db_url: str, tmp_path: Path, catalog: None) -> None:
    out = tmp_path / "out"
    assert invoke(git_repo, db_url, "import", "--out", str(out)).exit_code == 0
    for name in files_under(out):
        mode = os.stat(out / name).st_mode
        assert not mode & 0o111 and not Path(name).name.startswith("."), name


# --- appending to a file the tree declares objects in ----------------------------------------

DATASET_DOC = "apiVersion: reconciler/v1\nkind: Dataset\nslug: {slug}\nname: {name}\n"


def test_an_append_reads_back_as_the_old_objects_unchanged_plus_the_new_ones() -> None:
    from reconciler.app.importing import appended

    old = ("# kept\n" + DATASET_DOC.format(slug="old-one", name="Old")).encode()
    new = DATASET_DOC.format(slug="new-one", name="New")
    text = appended(old, new, "m/d.yaml", ["dataset:new-one"])
    assert text == old.decode() + "---\n" + new
    assert appended(old.rstrip(b"\n"), new, "m/d.yaml", ["dataset:new-one"]) == old.decode() + "---\n" + new
    assert appended(b"", new, "m/d.yaml", ["dataset:new-one"]) == "---\n" + new
    # Nothing that could lose or change a declaration, or add what was not asked for:
    assert appended(old, new, "m/d.yaml", ["dataset:old-one"]) is None  # already declared there
    assert appended(old, new, "m/d.yaml", []) is None  # adds an object nobody asked to add
    assert appended(b"slug: [unclosed\n", new, "m/d.yaml", ["dataset:new-one"]) is None  # not valid now
    assert appended(b"\xff\xfe", new, "m/d.yaml", ["dataset:new-one"]) is None  # not UTF-8
    assert appended(None, new, "m/d.yaml", ["dataset:new-one"]) is None  # over the size limit


def test_an_append_is_not_written_over_a_file_that_changed_since_it_was_read(tmp_path: Path) -> None:
    from reconciler.errors import ConfigurationError
    from reconciler.manifests import output

    target = tmp_path / "out" / "datasets.yaml"
    target.parent.mkdir()
    target.write_text("# as read\n", encoding="utf-8")
    target.chmod(0o640)
    checked = output.check(tmp_path / "out", {"datasets.yaml": "# as read\n---\n# more\n"}, boundary=None,
                           expected={"datasets.yaml": b"# as read\n"})
    target.write_text("# edited meanwhile\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="it changed since import read it; run import again"):
        output.write(checked, replace=False)
    assert target.read_text(encoding="utf-8") == "# edited meanwhile\n"
    assert [p.name for p in target.parent.iterdir()] == ["datasets.yaml"]  # no temporary file left
    target.write_text("# as read\n", encoding="utf-8")
    assert output.write(checked, replace=False) == [target]
    assert target.read_text(encoding="utf-8") == "# as read\n---\n# more\n"
    assert target.stat().st_mode & 0o777 == 0o640  # the file keeps its permissions
