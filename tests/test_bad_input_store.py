"""Bad-input corpus: results stores that cannot be written or are not rtb
stores (see ``badinput.py``). Each is refused with one line before any
compute, and a foreign file is left exactly as it was."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest
from badinput import Case, World, cli, run_case


def _parent_is_file(tmp: Path, world: World) -> None:
    (tmp / "afile").write_text("not a directory\n")


def _directory(tmp: Path, world: World) -> None:
    (tmp / "dir.sqlite").mkdir()


def _junk(tmp: Path, world: World) -> None:
    (tmp / "junk.sqlite").write_bytes(b"these are not the bytes of a database\n" * 50)


def _foreign(tmp: Path, world: World) -> None:
    conn = sqlite3.connect(tmp / "foreign.sqlite")
    conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, who TEXT)")
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO runs (who) VALUES ('someone else')")
    conn.commit()
    conn.close()


def _read_only_file(tmp: Path, world: World) -> None:
    shutil.copy(world.store, tmp / "ro.sqlite")
    (tmp / "ro.sqlite").chmod(0o444)


def _read_only_dir(tmp: Path, world: World) -> None:
    (tmp / "rodir").mkdir()
    shutil.copy(world.store, tmp / "rodir" / "store.sqlite")
    (tmp / "rodir").chmod(0o555)


CASES = [
    Case("parent is a file (run)", "store", ("store={tmp}/afile/s.sqlite",),
         "to be a directory, but it is a file", run_overrides=True, setup=_parent_is_file),
    Case("parent is a file (rebuild)", "store",
         ("store", "rebuild", "--store", "{tmp}/afile/s.sqlite", "{run_dir}"),
         "to be a directory, but it is a file", setup=_parent_is_file),
    Case("store is a directory", "store", ("store={tmp}/dir.sqlite",), "is a directory",
         run_overrides=True, setup=_directory),
    Case("junk file", "store", ("store={tmp}/junk.sqlite",), "not an SQLite database",
         run_overrides=True, setup=_junk),
    Case("junk file (rebuild)", "store",
         ("store", "rebuild", "--store", "{tmp}/junk.sqlite", "{run_dir}"),
         "not an SQLite database", setup=_junk),
    Case("foreign SQLite (run)", "store", ("store={tmp}/foreign.sqlite",),
         "foreign SQLite database", run_overrides=True, setup=_foreign),
    Case("foreign SQLite (list)", "store", ("store", "list", "--store", "{tmp}/foreign.sqlite"),
         "foreign SQLite database", setup=_foreign),
    Case("read-only store file (run)", "store", ("store={tmp}/ro.sqlite",), "is read-only",
         run_overrides=True, setup=_read_only_file),
    Case("read-only store directory (run)", "store", ("store={tmp}/rodir/store.sqlite",),
         "is read-only", run_overrides=True, setup=_read_only_dir),
    Case("newer schema", "store", ("store", "list", "--store", "{tmp}/newer.sqlite"),
         "newer than this rtb",
         setup=lambda tmp, w: sqlite3.connect(tmp / "newer.sqlite").execute(
             "PRAGMA user_version = 99").connection.close()),
]


def _restore_permissions(tmp: Path) -> None:
    for p in tmp.rglob("*"):
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.klass}:{c.name}")
def test_bad_input(case: Case, world: World, tmp_path: Path) -> None:
    try:
        run_case(case, world, tmp_path)
        # refused before any compute: no run directory holds a record
        assert not list(tmp_path.rglob("record.json")), case.name
    finally:
        _restore_permissions(tmp_path)


def test_foreign_sqlite_is_left_unchanged(world: World, tmp_path: Path) -> None:
    _foreign(tmp_path, world)
    path = tmp_path / "foreign.sqlite"
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    for args in (["run", *world.overrides, f"store={path}"], ["store", "info", "--store", str(path)],
                 ["store", "rebuild", "--store", str(path), str(world.run_dir)]):
        proc = cli(args, cwd=tmp_path)
        assert proc.returncode == 2 and "foreign SQLite database" in proc.stderr, proc.stderr
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        tables = sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master"))
        assert tables == ["notes", "runs"]
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    finally:
        conn.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("foreign")) == [
        "foreign.sqlite"]


def test_read_only_store_can_be_listed(world: World, tmp_path: Path) -> None:
    """A store file with mode 444 in a directory with mode 555 is read by
    `rtb store list` / `info` without a byte changing."""
    ro = tmp_path / "ro"
    ro.mkdir()
    store = ro / "store.sqlite"
    shutil.copy(world.store, store)
    before = hashlib.sha256(store.read_bytes()).hexdigest()
    store.chmod(0o444)
    ro.chmod(0o555)
    try:
        listed = cli(["store", "list", "--store", str(store)], cwd=tmp_path)
        info = cli(["store", "info", "--store", str(store)], cwd=tmp_path)
    finally:
        ro.chmod(0o755)
        store.chmod(0o644)
    assert listed.returncode == 0, listed.stderr
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
        run_id = conn.execute("SELECT run_id FROM runs").fetchone()[0]
    assert run_id in listed.stdout
    assert info.returncode == 0 and "runs: 1 rows" in info.stdout, info.stderr
    assert hashlib.sha256(store.read_bytes()).hexdigest() == before
