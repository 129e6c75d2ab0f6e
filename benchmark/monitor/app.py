"""``rtb monitor`` behind the argument parser: load, loop, print, write."""

from __future__ import annotations

import argparse
import logging
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from benchmark.core.errors import DataError, UserError
from benchmark.monitor.loop import Handled
from benchmark.monitor.reference import Reference
from benchmark.monitor.sources import SUFFIXES, TableColumns, Window

log = logging.getLogger(__name__)


def split_args(args: Sequence[str]) -> tuple[str | None, list[str]]:
    """The source (a path) and the Hydra overrides (``key=value``)."""
    sources = [a for a in args if "=" not in a or Path(a).exists()]
    overrides = [a for a in args if a not in sources]
    if len(sources) > 1:
        raise UserError(f"Expected one source (a directory of windows or a log file), but got "
                        f"{len(sources)}: {', '.join(sources)}.")
    return (sources[0] if sources else None), overrides


def load_models(overrides: list[str]) -> tuple[Any, list[Any]]:
    from benchmark.compose import compose_spec
    from benchmark.models import load_model, resolve_device

    spec, _ = compose_spec(overrides)
    device = resolve_device(spec.device)
    return spec, [load_model(m, device) for m in spec.models.values()]


def load_reference(ref: str, spec: Any, models: list[Any], store_path: str | None) -> Reference:
    """The reference named by ``--reference``."""
    from benchmark.data import load_evalset
    from benchmark.monitor.reference import build_reference, read_reference_npz

    if ref == "data":
        data = load_evalset(spec.data)
        source = f"data:{data.name}"
    elif ref.startswith("run:"):
        from benchmark.schema import parse_run
        from benchmark.store import Store, resolve_store_path

        with Store(resolve_store_path(store_path), readonly=True) as s:
            run_id = s.resolve_run(ref[4:])
            record = s.record(run_id)
        data = load_evalset(parse_run(record["config"], check_files=False).data)
        source = f"run:{run_id}"
    else:
        path = Path(ref).expanduser()
        if path.suffix.lower() == ".npz":
            data = read_reference_npz(path)
        elif path.suffix.lower() in (".csv", ".parquet", ".pq"):
            from benchmark.monitor.tabular import read_reference_table

            data = read_reference_table(path, spec)
        else:
            raise DataError(f"Expected --reference to be `data`, run:RUN_ID or a file ending in "
                            f"{', '.join(SUFFIXES)}, but got {ref!r}.")
        source = str(path)
    return build_reference(data, models, source, spec.batch_size)


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def window_line(h: Handled, versions: Sequence[str]) -> list[str]:
    """One console row of a handled window."""
    if h.result is None:
        fails = [a.rule for a in h.alerts if a.status == "fail"]
        return [str(h.seq), h.key, "stored", "", *([""] * len(versions)),
                ", ".join(fails)[:40] or "-"]
    r = h.result
    m = r.match or {}
    shifted = m.get("shift", True) and m.get("threat") not in (None, "clean")
    threat = m.get("label", "-") if shifted else "clean"
    if m and shifted:
        threat += f" ({m.get('confidence', 0):.2f})"
    accs = []
    for k in versions:
        est = r.value(k, "matched_accuracy")
        if est is None:
            est = r.value(k, "estimated_accuracy")
        real = r.value(k, "realised_accuracy")
        accs.append(_fmt(est) + (f"/{_fmt(real)}" if real is not None else ""))
    fails = [a.kind for a in r.alerts if a.status == "fail"]
    return [str(h.seq), h.key, str(len(r.drifted)), threat, *accs, ", ".join(fails) or "-"]


def headers(versions: Sequence[str]) -> list[str]:
    return ["#", "window", "drift", "matched threat (conf)",
            *[f"{k} est/real" for k in versions], "alerts"]


def junit_xml(monitor: str, handled: Sequence[Handled]) -> str:
    """One test case per window and rule; a failed rule is a failure."""
    cases = [(h.key, a) for h in handled for a in h.alerts]
    suite = ET.Element("testsuite", name=f"rtb monitor {monitor}", tests=str(len(cases)),
                       failures=str(sum(a.status == "fail" for _, a in cases)), errors="0",
                       skipped="0")
    for key, a in cases:
        case = ET.SubElement(suite, "testcase", classname=f"rtb.monitor.{a.kind}",
                             name=f"{key}: {a.rule}")
        if a.status == "fail":
            ET.SubElement(case, "failure", message=a.message).text = a.message
        else:
            ET.SubElement(case, "system-out").text = a.message
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def markdown_summary(monitor: str, handled: Sequence[Handled], versions: Sequence[str],
                     note: str) -> str:
    from benchmark.compare import markdown_table

    failed = [h for h in handled if h.failed]
    out = [f"## rtb monitor {monitor}: {'alerts raised' if failed else 'all rules hold'}", "",
           f"{len(handled)} window(s), {len(failed)} with alerts. {note}", "",
           markdown_table(headers(versions), [window_line(h, versions) for h in handled])]
    for h in failed:
        out += ["", f"**{h.key}**", ""]
        out += [f"- {a.rule}: {a.message}" for a in h.alerts if a.status == "fail"]
    return "\n".join(out) + "\n"


def _windows(source: str | None, ns: argparse.Namespace, cols: TableColumns
             ) -> Iterable[Window]:
    from benchmark.monitor.loop import watch_windows
    from benchmark.monitor.sources import WindowSize, directory_windows, log_windows

    if ns.watch is not None:
        if source is not None:
            raise UserError("Expected either a SOURCE or --watch DIR, but got both.")
        if not ns.watch.is_dir():
            raise DataError(f"Expected --watch to be a directory, but {str(ns.watch)!r} "
                            f"{'is a file' if ns.watch.exists() else 'does not exist'}.")
        return watch_windows(ns.watch, cols, poll_s=ns.poll, max_windows=ns.max_windows,
                             idle_s=ns.idle)
    if source is None:
        raise UserError("Expected a source: a directory of windows, a log file, --watch DIR "
                        "or --demo (rtb monitor --help).")
    path = Path(source).expanduser()
    if path.is_dir():
        if ns.window:
            raise UserError("--window cuts a log file; a directory holds one window per file.")
        return directory_windows(path, cols, ns.order)
    if not path.exists():
        raise DataError(f"Source {source!r} does not exist; expected a directory of windows or "
                        "a Parquet/CSV log.")
    if path.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise DataError(f"Expected a log ending in .parquet or .csv, but got {source!r}.")
    if not ns.window:
        raise UserError("Expected --window (1000rows, 1h, ...) to cut the log into windows.")
    return log_windows(path, WindowSize.parse(ns.window), cols)


def main(ns: argparse.Namespace) -> int:
    from benchmark.console import format_table
    from benchmark.monitor.bench_lookup import load_benchmark
    from benchmark.monitor.loop import run_windows
    from benchmark.monitor.rules import load_config
    from benchmark.store import Store, check_writable_store

    if ns.max_windows is not None and ns.max_windows < 1:
        raise UserError(f"Expected --max-windows to be a positive integer, but got "
                        f"{ns.max_windows}.")
    if ns.poll <= 0:
        raise UserError(f"Expected --poll to be a positive number of seconds, but got {ns.poll}.")
    if ns.trust_checkpoint:
        from benchmark.models import trust_checkpoints

        trust_checkpoints(ns.trust_checkpoint)
    cfg = load_config(ns.rules)
    source, overrides = split_args(ns.args)
    if ns.demo:
        from benchmark.monitor.demo import run_demo

        return run_demo(ns, cfg, overrides)
    cols = TableColumns(label=ns.label, timestamp=ns.timestamp, groups=tuple(ns.group),
                        served=ns.served)
    windows = _windows(source, ns, cols)  # argument mistakes before any model loads
    name = ns.name or (Path(source).stem if source else ns.watch.name)
    spec, models = load_models(overrides)
    store_path = check_writable_store(ns.store)
    ref = load_reference(ns.reference, spec, models, ns.store)
    versions = list(ref.versions)
    with Store(store_path) as store:
        bench = load_benchmark(store, versions, ns.benchmark_run)
        note = (f"benchmark run {bench.run_id}" if bench.available
                else f"no benchmark match accuracy: {bench.reason}")
        print(f"rtb monitor {name}: reference {ref.source} ({len(ref.data)} samples), "
              f"versions {', '.join(versions)}; {note}")
        rows: list[list[str]] = []

        def show(h: Handled) -> None:
            rows.append(window_line(h, versions))
            print(format_table(headers(versions), rows[-1:], align="rlrl" + "r" * len(versions)
                               + "l").splitlines()[-1], flush=True)

        print("  ".join(headers(versions)))
        handled = run_windows(windows, ref=ref, cfg=cfg, store=store, monitor=name, bench=bench,
                              max_windows=ns.max_windows, on_window=show)
    return finish(name, handled, versions, note, ns)


def finish(name: str, handled: Sequence[Handled], versions: Sequence[str], note: str,
           ns: argparse.Namespace) -> int:
    failed = [h for h in handled if h.failed]
    if ns.junit:
        ns.junit.write_text(junit_xml(name, handled))
    if ns.summary:
        ns.summary.write_text(markdown_summary(name, handled, versions, note))
    if not handled:
        print("no windows")
    print(f"\nmonitor {name}: {len(handled)} window(s), "
          f"{len(failed)} with alerts ({'FAIL' if failed else 'PASS'}); "
          f"`rtb report --monitor {name}` draws the timelines.")
    return 1 if failed else 0

