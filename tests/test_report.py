"""``rtb report``: self-contained HTML, the Markdown variant, the numbers it
shows, and its error paths.

The runs are written with the real record writer from seeded per-sample
outcomes; every number the report shows is checked against a recomputation
from those outcomes.
"""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from benchmark import store as store_mod
from benchmark.cli import main
from benchmark.core.types import CheckResult, Measurement, Outcome, Threat
from benchmark.record import RunRecord, write_record
from benchmark.report_html import build_report, load_runs, render_html
from metrics.robustness import accuracy_measurements

N = 60
CLASSES = 3


def _outcomes(version: str, skill: float, rng: np.random.Generator, corruption: bool
              ) -> list[Outcome]:
    """Seeded per-sample outcomes: accuracy falls with eps / severity, more for low skill."""
    y = np.arange(N) % CLASSES
    threats = [Threat("clean", "clean")]
    threats += [Threat("attack", a, eps) for a in ("fgsm", "pgd_linf") for eps in (0.1, 0.2, 0.3)]
    if corruption:
        threats += [Threat("corruption", c, float(s)) for c in ("gaussian_noise", "brightness")
                    for s in (1, 2, 3)]
    out = []
    for t in threats:
        p_correct = skill * (1 - (t.param or 0) * (1.5 if t.family == "attack" else 0.15))
        correct = rng.random(N) < max(p_correct, 0.02)
        pred = np.where(correct, y, (y + 1) % CLASSES)
        out.append(Outcome(model="tiny", version=version, threat=t, pred=pred, correct=correct))
    return out


def group_measurements(outcomes: list[Outcome], feature: str, groups: np.ndarray
                       ) -> list[Measurement]:
    """Per-group accuracy rows, computed here from the per-sample outcomes."""
    rows = []
    for o in outcomes:
        for g in sorted(set(groups)):
            m = groups == g
            rows.append(Measurement(model=o.model, version=o.version, family=o.threat.family,
                                    threat=o.threat.name, param=o.threat.param, metric="accuracy",
                                    value=float(o.correct[m].mean()), n=int(m.sum()),
                                    group_feature=feature, group_value=str(g)))
    return rows


def write_run(root: Path, *, versions: tuple[str, ...] = ("v1", "v2"), seed: int = 0,
              corruption: bool = True, groups: bool = True, checks: bool = True,
              fingerprint: str = "f" * 64, run_id: str | None = None,
              extra: dict | None = None, root_dir: Path | None = None,
              more: list[Measurement] | None = None, ce: bool = False
              ) -> tuple[Path, list[Outcome]]:
    """A run directory written by the real record writer; ``ce`` adds the
    corruption CE/mCE rows (baseline tiny@v1), ``more`` any other rows."""
    rng = np.random.default_rng(seed)
    outcomes = [o for i, v in enumerate(versions)
                for o in _outcomes(v, 0.6 + 0.3 * i, rng, corruption)]
    measurements = accuracy_measurements(outcomes) + list(more or [])
    if ce:
        from metrics.corruption import corruption_measurements

        measurements += corruption_measurements(outcomes, f"tiny@{versions[0]}")
    if groups:
        measurements += group_measurements(outcomes, "class", np.arange(N) % CLASSES)
        measurements += group_measurements(outcomes, "brightness", np.where(np.arange(N) < 20,
                                                                            "dark", "normal"))
    check_rows = [
        CheckResult("nan_inf", "pass", "no NaN or Inf in 60 samples", subject="data"),
        CheckResult("input_range", "warn", "3 samples above 1.0", {"samples": [1, 2, 3]},
                    subject="data"),
        CheckResult("eval_mode", "fail", "BatchNorm in training mode", subject="tiny@v1"),
    ] if checks else []
    run_id = run_id or f"20240101-000000-{seed:08x}"
    record = RunRecord(
        run_id=run_id, name="default", started="2024-01-01T00:00:00", finished="2024-01-01T00:01:00",
        config={"seed": seed, "data": {"name": "blobs"}, "note": "<b>not markup</b>"},
        overrides=["data.n_samples=60", "seed=0"], config_hash="c" * 64, run_key="k" * 64,
        models={f"tiny@{v}": {"name": "tiny", "version": v, "sha256": f"{i}" * 64,
                              "checkpoint": f"/ckpt/{v}.pt"} for i, v in enumerate(versions)},
        data={"name": "blobs", "fingerprint": fingerprint, "n": N, "classes": ["0", "1", "2"],
              "shape": [1, 8, 8]},
        seed=seed, device="cpu", env={"platform": "test-platform", "torch_threads": 1},
        git={"commit": "abc123", "dirty": False}, measurements=measurements, checks=check_rows,
        extra=extra or {},
    )
    run_dir = root_dir or root / run_id
    write_record(run_dir, record, outcomes)
    return run_dir, outcomes


class _Html(HTMLParser):
    """Collects every tag's attributes and the text of <style>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.style = ""
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.style += data


def parse_html(text: str) -> _Html:
    p = _Html()
    p.feed(text)
    return p


def png_size(data: bytes) -> tuple[int, int]:
    """Decode a PNG with matplotlib (an independent reader) and return (width, height)."""
    import matplotlib.image as mpimg

    arr = mpimg.imread(io.BytesIO(data), format="png")
    return arr.shape[1], arr.shape[0]


EXPECTED_PLOTS = {"robustness", "corruption-heatmap", "groups-class", "groups-brightness"}


def test_html_is_self_contained_and_has_every_plot(tmp_path: Path, capsys) -> None:
    run_dir, _ = write_run(tmp_path)
    out = tmp_path / "r.html"
    assert main(["report", str(run_dir), "-o", str(out)]) == 0
    assert "4 plot(s)" in capsys.readouterr().out
    text = out.read_text()
    doc = parse_html(text)
    plots = {}
    for tag, attrs in doc.tags:
        for key in ("src", "href", "srcset", "action", "data", "poster"):
            value = attrs.get(key, "")
            assert not re.match(r"\s*(https?:|//|file:)", value, re.I), (tag, key, value[:80])
            if tag != "a" and key in ("src", "href") and value:
                assert value.startswith("data:"), (tag, key, value[:80])
        assert not (tag == "link" and "stylesheet" in attrs.get("rel", "")), attrs
        assert tag != "script", "the report needs no script"
        if tag == "img":
            prefix = "data:image/png;base64,"
            assert attrs["src"].startswith(prefix)
            png = base64.b64decode(attrs["src"][len(prefix):], validate=True)
            assert png_size(png) == (int(attrs["width"]), int(attrs["height"]))
            plots[attrs["data-plot"]] = png
    assert set(plots) == EXPECTED_PLOTS
    assert "Paired comparison: tiny@v2 vs tiny@v1" in text
    assert "url(" not in doc.style and "@import" not in doc.style
    # every in-page link points at an anchor of the page
    ids = {a.get("id") for _, a in doc.tags}
    for tag, attrs in doc.tags:
        if tag == "a":
            assert attrs["href"].startswith("#") and attrs["href"][1:] in ids


def test_summary_table_recomputes_from_outcomes(tmp_path: Path) -> None:
    run_dir, outcomes = write_run(tmp_path, corruption=False, groups=False)
    report = build_report(load_runs([str(run_dir)]))
    assert report.summary.headers[1:3] == ["tiny@v1", "tiny@v2"]
    rows = {r[0]: r for r in report.summary.rows}
    assert len(rows) == 1 + 6
    for o in outcomes:
        label = "clean" if o.threat.param is None else f"{o.threat.name} eps={o.threat.param:g}"
        col = 1 if o.version == "v1" else 2
        assert rows[label][col].startswith(f"{o.correct.mean():.3f} [")
    by = {(o.version, o.threat.label): o.correct.mean() for o in outcomes}
    delta = by[("v2", "pgd_linf@0.3")] - by[("v1", "pgd_linf@0.3")]
    assert rows["pgd_linf eps=0.3"][3] == f"{delta:+.3f}"
    assert [p.key for p in report.plots] == ["robustness"]
    assert report.groups is None


def test_paired_comparison_p_values_match_scipy(tmp_path: Path) -> None:
    """The report's paired table: raw McNemar p-values equal scipy's exact
    binomial test on the discordant counts of the per-sample outcomes."""
    from scipy.stats import binomtest

    run_dir, outcomes = write_run(tmp_path, corruption=False, groups=False)
    report = build_report(load_runs([str(run_dir)]))
    assert len(report.paired) == 1
    table = report.paired[0]
    assert table.title == "Paired comparison: tiny@v2 vs tiny@v1"
    rows = {r[0]: r for r in table.rows}
    by = {(o.version, o.threat.label): o.correct for o in outcomes}
    checked = 0
    for label, threat in (("clean", "clean"), ("fgsm eps=0.2", "fgsm@0.2"),
                          ("pgd_linf eps=0.3", "pgd_linf@0.3")):
        a, b = by[("v1", threat)], by[("v2", threat)]
        only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
        expected = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
        assert rows[label][6] == "mcnemar"
        assert float(rows[label][7]) == pytest.approx(expected, rel=1e-2, abs=1e-4), label
        assert rows[label][4] == f"{b.mean() - a.mean():+.3f}"
        checked += 1
    assert checked == 3
    one = build_report(load_runs([str(run_dir)]), compare=["v1"])
    assert one.paired == []


def test_group_table_names_worst_group(tmp_path: Path) -> None:
    run_dir, outcomes = write_run(tmp_path, corruption=False)
    report = build_report(load_runs([str(run_dir)]))
    assert report.groups is not None
    row = next(r for r in report.groups.rows
               if r[0] == "class" and r[1] == "clean" and r[2] == "tiny@v1")
    clean = next(o for o in outcomes if o.version == "v1" and o.threat.family == "clean")
    acc = {str(g): clean.correct[np.arange(N) % CLASSES == g].mean() for g in range(CLASSES)}
    worst = min(acc, key=lambda g: acc[g])
    assert row[3] == f"{worst} ({acc[worst]:.3f})"
    assert row[5] == f"{max(acc.values()) - acc[worst]:.3f}"


def test_checks_and_provenance_in_html(tmp_path: Path) -> None:
    run_dir, _ = write_run(tmp_path)
    out = tmp_path / "r.html"
    assert main(["report", str(run_dir), "-o", str(out)]) == 0
    text = out.read_text()
    for needle in ('class="status-fail">fail', 'class="status-warn">warn', "eval_mode",
                   "BatchNorm in training mode", "0" * 64, "f" * 64, "c" * 64,
                   "data.n_samples=60 seed=0", "abc123", "test-platform", "/ckpt/v2.pt",
                   "&lt;b&gt;not markup&lt;/b&gt;"):
        assert needle in text, needle
    assert "<b>not markup</b>" not in text
    report = build_report(load_runs([str(run_dir)]))
    assert [r[1] for r in report.checks.rows] == ["fail", "warn", "pass"]
    summary = {r[0]: r for r in report.checks_summary.rows}
    assert summary["data"] == ["data", "1", "1", "0", "input_range (warn)"]
    assert summary["tiny@v1"] == ["tiny@v1", "0", "0", "1", "eval_mode (fail)"]


def test_markdown_variant_writes_plot_files(tmp_path: Path, capsys) -> None:
    run_dir, _ = write_run(tmp_path)
    out = tmp_path / "out" / "report.md"
    out.parent.mkdir()
    assert main(["report", str(run_dir), "-o", str(out)]) == 0
    assert "4 image file(s)" in capsys.readouterr().out
    text = out.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {Path(link).stem for link in links} == EXPECTED_PLOTS
    for link in links:
        assert not link.startswith(("http", "/", "data:"))
        w, h = png_size((out.parent / link).read_bytes())
        assert w > 100 and h > 100
    assert "| check | status |" in text and "| eval_mode | fail |" in text
    assert "```json" in text and "<html" not in text
    # --format wins over the suffix
    assert main(["report", str(run_dir), "--format", "html", "-o", str(tmp_path / "x.md")]) == 0
    assert (tmp_path / "x.md").read_text().startswith("<!DOCTYPE html>")


def test_compare_selects_and_orders_versions(tmp_path: Path, capsys) -> None:
    run_dir, _ = write_run(tmp_path, versions=("v1", "v2", "v3"), corruption=False, groups=False)
    report = build_report(load_runs([str(run_dir)]), compare=["v3", "tiny@v1"])
    assert report.series == ["tiny@v3", "tiny@v1"]
    assert report.summary.headers[-1] == "delta (tiny@v1 - tiny@v3)"
    code = main(["report", str(run_dir), "--compare", "v9", "-o", str(tmp_path / "r.html")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "'v9' is unknown" in err and "tiny@v1, tiny@v2, tiny@v3" in err


def test_several_runs_on_different_data_are_flagged(tmp_path: Path) -> None:
    a, _ = write_run(tmp_path, versions=("v1",), seed=1, fingerprint="a" * 64)
    b, _ = write_run(tmp_path, versions=("v1", "v2"), seed=2, fingerprint="b" * 64)
    report = build_report(load_runs([str(a), str(b / "record.json")]))
    assert report.series == [f"tiny@v1 ({a.name})", f"tiny@v1 ({b.name})", "tiny@v2"]
    assert len(report.notes) == 1 and "different data" in report.notes[0]
    same = build_report(load_runs([str(a), str(a)]))
    assert same.notes == [] and len(same.runs) == 1


ERROR_CASES = {
    "unknown_run": "Unknown run 'nosuchrun'",
    "missing_dir": "does not exist",
    "no_record": "has none",
    "bad_record": "Cannot read",
    "empty_record": "hold none",
    "no_output_dir": "does not exist",
    "no_run": "Expected a run directory",
    "unknown_gate": "Unknown rule set 'nosuchrules'",
    "bad_gate_file": "Cannot parse rules file",
}


def _error_case_args(tmp_path: Path, case: str) -> list[str]:
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "record.json").write_text("{not json")
    (tmp_path / "emptyrec").mkdir()
    (tmp_path / "emptyrec" / "record.json").write_text(json.dumps({"run_id": "x", "measurements": []}))
    if case in ("no_output_dir", "unknown_gate", "bad_gate_file"):
        write_run(tmp_path, run_id="good", corruption=False, groups=False)
    (tmp_path / "bad.yaml").write_text("rules: [unclosed\n")
    args = {
        "unknown_run": ["nosuchrun"],
        "missing_dir": [str(tmp_path / "missing" / "run")],
        "no_record": [str(empty)],
        "bad_record": [str(tmp_path / "bad")],
        "empty_record": [str(tmp_path / "emptyrec")],
        "no_output_dir": [str(tmp_path / "good"), "-o", str(tmp_path / "nodir" / "r.html")],
        "no_run": [],
        "unknown_gate": [str(tmp_path / "good"), "--gate", "nosuchrules"],
        "bad_gate_file": [str(tmp_path / "good"), "--gate", str(tmp_path / "bad.yaml")],
    }[case]
    return ["report", *args, "--store", str(tmp_path / "nostore.sqlite")]


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_error_paths_exit_2_with_one_line(tmp_path: Path, capsys, case: str) -> None:
    args = _error_case_args(tmp_path, case)
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rtb: error: "), captured.err
    assert ERROR_CASES[case] in lines[0]
    assert not (tmp_path / "report.html").exists()


def test_error_from_the_real_command_is_one_line(tmp_path: Path, run_cli) -> None:
    res = run_cli("report", *_error_case_args(tmp_path, "unknown_run")[1:], timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "rtb: error: Unknown run 'nosuchrun': it is not a run directory, and there is no results "
        f"store at {str(tmp_path / 'nostore.sqlite')!r} to look it up in."
    ]


def test_record_file_name_matches_the_writer() -> None:
    from benchmark import record, rundir

    assert rundir.RECORD_FILE == record.RECORD_FILE


def test_report_help_teaches() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["report", "--help"])
    assert exc.value.code == 0


def test_help_lists_examples(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    out = capsys.readouterr().out
    assert "--compare" in out and "rtb report" in out and "self-contained" in out


def test_runs_from_the_store(tmp_path: Path, capsys) -> None:
    store = tmp_path / "rtb.sqlite"
    old, _ = write_run(tmp_path, versions=("v1", "v2"), seed=3, run_id="20240101-000000-old")
    new, _ = write_run(tmp_path, versions=("v1", "v2"), seed=4, run_id="20240102-000000-new")
    for d in (old, new):
        store_mod.save_run_dir(store, d)
    out = tmp_path / "r.md"
    assert main(["report", "20240101-000000-o", "--store", str(store), "-o", str(out)]) == 0
    assert "20240101-000000-old" in out.read_text()
    runs = load_runs([], compare=["tiny@v2", "tiny@v1"], store=str(store))
    assert [r.run_id for r in runs] == ["20240102-000000-new"]
    capsys.readouterr()
    assert main(["report", "zzz", "--store", str(store), "-o", str(out)]) == 2
    assert "Unknown run 'zzz'" in capsys.readouterr().err
    assert main(["report", "--compare", "tiny@v7", "--store", str(store), "-o", str(out)]) == 2
    assert "tiny@v7" in capsys.readouterr().err


@pytest.mark.slow
def test_report_of_a_real_tiny_run(tmp_path: Path, run_cli, tiny_files) -> None:
    """End to end: `rtb run` on tiny data and models, then `rtb report` on its directory."""
    from conftest import tiny_overrides

    ckpt, npz = tiny_files
    res = run_cli("run", *tiny_overrides(ckpt, npz, versions=("v1", "v2")),
                  f"hydra.run.dir={tmp_path / 'run'}")
    assert res.returncode == 0, res.stderr
    res = run_cli("report", str(tmp_path / "run"), "-o", str(tmp_path / "r.html"))
    assert res.returncode == 0, res.stderr
    doc = parse_html((tmp_path / "r.html").read_text())
    plots = [a["data-plot"] for t, a in doc.tags if t == "img" and "data-plot" in a]
    assert plots[:1] == ["robustness"]
    assert any(t == "img" and "data-plot" not in a for t, a in doc.tags)  # the gallery's


def test_group_panels_show_clean_then_the_hardest_threats() -> None:
    """The group figure's panels: clean, then each threat at its largest
    param, lowest mean group accuracy first, at most ``max_threats``."""
    import pandas as pd

    from benchmark.plots import _disparity_panels

    rows = []
    for family, threat, param, values in [
        ("clean", "clean", None, (0.9, 0.8)),
        ("attack", "fgsm", 0.1, (0.1, 0.1)),      # not the largest eps: ignored
        ("attack", "fgsm", 0.3, (0.5, 0.4)),
        ("corruption", "fog", 3.0, (0.3, 0.2)),
        ("corruption", "snow", 3.0, (0.7, 0.8)),
    ]:
        for g, v in enumerate(values):
            rows.append({"family": family, "threat": threat, "param": param, "value": v,
                         "group_value": str(g)})
    frame = pd.DataFrame(rows)
    assert _disparity_panels(frame, 3) == [("clean", "clean", None), ("corruption", "fog", 3.0),
                                           ("attack", "fgsm", 0.3)]
    assert len(_disparity_panels(frame, 10)) == 4


# ----------------------------------------------------------------------------- verdict & layout

def _cells(text: str, cls: str) -> list[str]:
    return re.findall(rf'<td class="{cls}">([^<]*)</td>', text)


def test_verdict_box_recomputes_from_outcomes(tmp_path: Path) -> None:
    run_dir, outcomes = write_run(tmp_path, corruption=True, ce=True)
    report = build_report(load_runs([str(run_dir)]))
    v = report.verdict
    assert v is not None and v.gate_status == ""
    assert v.versions.headers == ["version", "clean accuracy", "worst under fgsm",
                                  "worst under pgd_linf", "mCE"]
    rows = {r[0]: r for r in v.versions.rows}
    classes = np.arange(N) % CLASSES
    for version in ("v1", "v2"):
        mine = [o for o in outcomes if o.version == version]
        clean = next(o for o in mine if o.threat.family == "clean")
        row = rows[f"tiny@{version}"]
        assert row[1] == f"{clean.correct.mean():.3f}"
        for col, attack in ((2, "fgsm"), (3, "pgd_linf")):
            acc = {o.threat.param: o.correct.mean() for o in mine if o.threat.name == attack}
            worst = min(acc, key=acc.__getitem__)
            assert row[col] == f"{acc[worst]:.3f} (eps={worst:g})"
        # mCE by hand: per corruption, summed errors over the severities / the baseline's
        err = {(o.version, o.threat.name, o.threat.param): 1 - o.correct.mean()
               for o in outcomes if o.threat.family == "corruption"}
        ces = [sum(err[(version, c, s)] for s in (1.0, 2.0, 3.0))
               / sum(err[("v1", c, s)] for s in (1.0, 2.0, 3.0))
               for c in ("gaussian_noise", "brightness")]
        assert row[4] == f"{np.mean(ces):.3f}"
    assert classes is not None
    # the significant changes are the paired table's significant rows
    marked = [r for r in report.paired[0].rows if r[-1]]
    assert len(v.changes) == min(len(marked), 8)
    for line in v.changes:
        assert any(f"under {r[0]}: " in line and r[-1] in line for r in marked), line
    # CE table: one row per corruption and the mCE row
    ce = report.corruption
    assert ce is not None and [r[0] for r in ce.rows] == ["gaussian_noise", "brightness",
                                                          "mCE (all corruptions)"]


def test_gate_result_in_the_verdict(tmp_path: Path) -> None:
    run_dir, outcomes = write_run(tmp_path, corruption=False)
    clean_v2 = next(o for o in outcomes if o.version == "v2" and o.threat.family == "clean")
    acc = clean_v2.correct.mean()
    for floor, expected in ((acc - 0.05, "pass"), (acc + 0.05, "fail")):
        rules = tmp_path / f"gate-{expected}.yaml"
        rules.write_text(f"baseline: tiny@v1\ncandidates: [tiny@v2]\nrules:\n"
                         f"  - floor: {{threat: clean, metric: accuracy, min: {floor:.4f}}}\n")
        out = tmp_path / f"{expected}.html"
        assert main(["report", str(run_dir), "--gate", str(rules), "-o", str(out)]) == 0
        text = out.read_text()
        assert f'<p class="gate gate-{expected}">' in text
        assert text.index('id="verdict"') < text.index('id="summary"')
    bad = tmp_path / "other.yaml"
    bad.write_text("baseline: zzz@v1\ncandidates: [zzz@v2]\nrules:\n"
                   "  - floor: {threat: clean, metric: accuracy, min: 0.5}\n")
    report = build_report(load_runs([str(run_dir)]), gate=str(bad))
    assert report.verdict is not None and report.verdict.gate_status == "error"
    assert "was not evaluated" in report.verdict.gate_note


def test_numbers_are_right_aligned_and_checks_grouped(tmp_path: Path) -> None:
    run_dir, outcomes = write_run(tmp_path)
    out = tmp_path / "r.html"
    assert main(["report", str(run_dir), "-o", str(out)]) == 0
    text = out.read_text()
    nums = _cells(text, "num")
    clean_v1 = next(o for o in outcomes if o.version == "v1" and o.threat.family == "clean")
    assert f"{clean_v1.correct.mean():.3f}" in nums  # a verdict / paired cell
    assert all(re.match(r"^[+-]?[\d.e+-]+%?( [\[(].*)?$|^-$", c) for c in nums), nums[:20]
    assert not any(c in ("clean", "fgsm eps=0.1") for c in nums)
    # checks: one collapsible group per status, failures open, evidence collapsed
    assert '<details class="checks-fail" open>' in text
    assert '<details class="checks-pass">' in text
    assert "<details><summary>evidence</summary><pre>" in text
    assert '&quot;samples&quot;: [' in text  # the warn check's evidence, whole, inside its <details>
    # every section the nav names exists, in order
    doc = parse_html(text)
    nav = [a["href"][1:] for t, a in doc.tags if t == "a" and a.get("href", "").startswith("#")
           and a["href"] != "#top"]
    ids = [a["id"] for t, a in doc.tags if t == "section" and "id" in a]
    assert nav == ids
    assert nav[:2] == ["verdict", "summary"] and "gallery" not in nav


def test_tied_groups_name_no_worst_or_best(tmp_path: Path) -> None:
    tie = [Measurement(model="tiny", version=v, family="clean", threat="clean", param=None,
                       metric="accuracy", value=0.5, n=20, group_feature="site",
                       group_value=g) for v in ("v1", "v2") for g in ("a", "b", "c")]
    tie += [Measurement(model="tiny", version=v, family="clean", threat="clean", param=None,
                        metric=f"accuracy_{which}_group", value=0.5, n=20, group_feature="site",
                        group_value="a") for v in ("v1", "v2") for which in ("worst", "best")]
    run_dir, _ = write_run(tmp_path, corruption=False, groups=False, more=tie)
    report = build_report(load_runs([str(run_dir)]))
    assert report.verdict is not None
    assert [r[-1] for r in report.verdict.versions.rows] == ["0.500 (all site tie)"] * 2
    table = report.groups
    assert table is not None
    for row in table.rows:
        assert row[3] == "all 3 tie (0.500)" and row[4] == "-" and row[5] == "0.000"


def test_tabular_report_shows_groups_and_fairness_first(tmp_path: Path) -> None:
    more = [Measurement(model="tiny", version=v, family="clean", threat="clean", param=None,
                        metric=metric, value=value, n=60, group_feature="sex", group_value="",
                        ci_low=value - 0.05, ci_high=value + 0.05)
            for v in ("v1", "v2") for metric, value in
            (("demographic_parity_difference", 0.2), ("equalized_odds_ratio", 0.7))]
    run_dir, _ = write_run(tmp_path, corruption=False, more=more)
    report = build_report(load_runs([str(run_dir)]))
    assert report.groups_first and report.fairness is not None
    assert report.fairness.rows[0] == ["clean", "sex", "tiny@v1", "0.200 [0.150, 0.250]", "0.700"]
    text = render_html(report)
    assert text.index('<section id="groups">') < text.index('<section id="summary">')
    assert "Fairness between groups" in text
    plain, _ = write_run(tmp_path / "img", corruption=False)
    image = build_report(load_runs([str(plain)]))
    assert not image.groups_first and image.fairness is None


def test_gallery_slot(tmp_path: Path) -> None:
    run_dir, _ = write_run(tmp_path, corruption=False, groups=False)
    report = build_report(load_runs([str(run_dir)]))
    report.gallery_html = "<h2>Examples</h2><p>grid</p>"
    text = render_html(report)
    assert '<a href="#gallery">Examples</a>' in text
    assert '<section id="gallery"><h2>Examples</h2><p>grid</p></section>' in text
    assert text.index('id="gallery"') < text.index('id="checks"')
