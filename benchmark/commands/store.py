"""``rtb store``: list, export, rebuild and describe the results store."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from benchmark.core.errors import StoreError
from benchmark.store import (
    DEFAULT_STORE,
    EXPORT_FORMATS,
    SCHEMA_VERSION,
    STORE_ENV,
    TABLES,
    Store,
    launch_dir,
    open_store,
    rebuild,
    resolve_store_path,
)
from benchmark.store import export as export_table

STORE_HELP = """\
The results store: every run's record, measurements and per-sample outcomes in
one SQLite file (default ./rtb.sqlite, or $RTB_STORE, or --store PATH).

Examples:
  rtb store list                              # runs, newest last; then failed and
                                              # abandoned jobs (no run stored)
  rtb store list --model mnist_cnn --version v2
  rtb store export measurements m.csv         # csv or parquet, by suffix
  rtb store export outcomes o.parquet --run 20240101-120000-ab12cd34
  rtb store rebuild outputs multirun          # re-read run dirs into the store
  rtb store rebuild outputs --fresh           # store = exactly the runs found
  rtb store info                              # path, schema version, row counts
"""


def add_store_option(parser: argparse.ArgumentParser) -> None:
    """The ``--store PATH`` option every command reading the store shares."""
    parser.add_argument("--store", metavar="PATH", default=None,
                        help=f"results store file (default: ${STORE_ENV} or ./{DEFAULT_STORE})")


def store_main(args: Sequence[str]) -> int:
    """``rtb store``: list, export, rebuild, info."""
    parser = argparse.ArgumentParser(prog="rtb store", description=STORE_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p_list = sub.add_parser("list", help="list stored runs")
    add_store_option(p_list)
    p_list.add_argument("--model", help="only runs containing this model name")
    p_list.add_argument("--version", help="only runs containing this version")
    p_list.add_argument("--sweep", help="only runs of this sweep id")
    p_exp = sub.add_parser("export", help="export a table to CSV or Parquet")
    add_store_option(p_exp)
    p_exp.add_argument("table", choices=TABLES)
    p_exp.add_argument("path", help="output file; the suffix (.csv, .parquet) picks the format")
    p_exp.add_argument("--format", choices=sorted(EXPORT_FORMATS), default=None)
    p_exp.add_argument("--run", action="append", default=None, metavar="ID",
                       help="only this run (repeatable; a unique prefix is enough)")
    p_reb = sub.add_parser("rebuild", help="rebuild the store from run directories")
    add_store_option(p_reb)
    p_reb.add_argument("dirs", nargs="*", default=None,
                       help="run directories or roots to search (default: outputs multirun)")
    p_reb.add_argument("--fresh", action="store_true",
                       help="drop stored runs that are not found under the given directories")
    p_info = sub.add_parser("info", help="store path, schema version and row counts")
    add_store_option(p_info)
    ns = parser.parse_args(args)

    if ns.action == "rebuild":
        roots = ns.dirs or [d for d in ("outputs", "multirun") if (launch_dir() / d).exists()]
        if not roots:
            raise StoreError("No run directories given and none of ./outputs, ./multirun exist.")
        ids = rebuild(ns.store, [launch_dir() / r for r in roots], fresh=ns.fresh)
        print(f"rebuilt {len(ids)} run(s) into {resolve_store_path(ns.store)}")
        return 0
    with open_store(ns.store, readonly=True) as s:
        if ns.action == "list":
            list_runs(s, ns)
        elif ns.action == "export":
            chosen = [s.resolve_run(r) for r in ns.run] if ns.run else None
            n = export_table(s, ns.table, ns.path, ns.format, chosen)
            print(f"wrote {n} {ns.table} row(s) to {ns.path}")
        elif ns.action == "info":
            print(f"store: {s.path}\nschema version: {s.schema_version}")
            if s.schema_version < SCHEMA_VERSION:
                print(f"(older than this rtb's {SCHEMA_VERSION}; a write command such as "
                      f"`rtb run` or `rtb store rebuild` migrates it)")
            for t, count in s.row_counts().items():
                print(f"{t}: {count} rows")
    return 0


def _ids(values: list[int]) -> str:
    return ", ".join(map(str, values)) or "-"


def list_runs(s: Store, ns: argparse.Namespace) -> None:
    """The stored runs, then the jobs that hold no run: failed ones and
    running claims (``abandoned`` once their heartbeat is stale)."""
    from benchmark.console import format_table

    df = s.runs(model=ns.model, version=ns.version, sweep_id=ns.sweep)
    rows = [[r.run_id, r.name, str(r.data_name), str(r.data_fingerprint)[:12],
             str(r.models), str(r.sweep_id or ""), r.status] for r in df.itertuples()]
    print(format_table(["run", "name", "data", "fingerprint", "models", "sweep", "status"],
                       rows, align="lllllll"))
    pending = s.incomplete_shards()
    if not pending.empty:  # sharded runs not yet assembled, and what they wait for
        rows = [[str(p.run_key)[:12], str(p.name), str(p.data_name),
                 f"incomplete: {len(p.done)}/{p.shards} shards", _ids(p.missing), _ids(p.failed)]
                for p in pending.itertuples()]
        print()
        print(format_table(["run key", "name", "data", "status", "missing shards",
                            "failed shards"], rows, align="llllll"))
    jobs = s.jobs()
    jobs = jobs[jobs["status"] != "complete"]
    if ns.sweep is not None:
        jobs = jobs[jobs["sweep_id"] == ns.sweep]
    if jobs.empty:
        return
    rows = [[str(j.run_key)[:12], j.status, str(j.owner), str(j.started)[:19],
             str(j.sweep_id or ""), str(j.error or "")[:60]] for j in jobs.itertuples()]
    print()
    print(format_table(["job key", "state", "owner", "started", "sweep", "error"], rows,
                       align="llllll"))
