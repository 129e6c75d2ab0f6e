"""The example gallery: a deterministic, small selection per (version, threat)
whose inputs are exactly what the outcomes counted; its report section; and
``rtb export adversarial`` (npz that reloads through ``data=npz`` with the
same predictions, PNGs with a CSV index, and its bad inputs)."""

from __future__ import annotations

import base64
import csv
import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_evalset
from PIL import Image
from test_api import trained_tiny

from benchmark import evaluate
from benchmark.cli import main
from benchmark.gallery import BROKEN, DISAGREE, WORST_GROUP, amplified, pool_indices
from benchmark.report_gallery import gallery_section
from benchmark.rundir import GALLERY_FILE, read_gallery

CORRUPTIONS = {"name": "some_noise", "corruptions": ["gaussian_noise", "impulse_noise"],
               "severities": [3, 5], "baseline": None}
FAULTS = {"name": "some_faults", "faults": {"scale_255": {}, "dead_pixels": {"fraction": 0.2},
                                             "float16": {}}}


def nets() -> dict[str, torch.nn.Module]:
    return {"tiny@v1": trained_tiny(0), "tiny@v2": trained_tiny(1, steps=8)}


def run(tmp: Path, name: str = "run"):
    data = make_evalset(n=48)
    return evaluate(nets(), (data.x, data.y), attacks=[{"fgsm": {"eps": [0.1, 0.3]}}],
                    corruptions=CORRUPTIONS, faults=FAULTS, batch_size=16,
                    overrides=["reliability.enabled=false"], out_dir=tmp / name,
                    progress=False), data


@pytest.fixture(scope="module")
def gallery_run(tmp_path_factory: pytest.TempPathFactory):
    return run(tmp_path_factory.mktemp("gallery"))


def test_points_are_what_the_outcomes_counted(gallery_run) -> None:
    result, data = gallery_run
    g = read_gallery(result.out_dir)
    a = g.arrays
    assert len(g) > 0
    assert set(a["family"]) == {"attack", "corruption", "fault"}
    frame = result.outcomes()
    recorded = {(f"{r.model}@{r.version}", r.family, r.threat,
                 None if pd.isna(r.param) else float(r.param), int(r.sample)): int(r.pred)
                for r in frame.itertuples()}
    modules = {m.key: m.module for m in result.result.models}
    for i in range(len(g)):
        version, family, threat = str(a["version"][i]), str(a["family"][i]), str(a["threat"][i])
        sample, param = int(a["sample"][i]), float(a["param"][i])
        key = (version, family, threat, None if math.isnan(param) else param, sample)
        assert recorded[key] == int(a["pred"][i])
        assert int(a["label"][i]) == int(data.y[sample])
        np.testing.assert_array_equal(g.clean([i])[0], data.x[sample].numpy())
        with torch.no_grad():  # the kept input gives the recorded prediction
            logits = modules[version](torch.from_numpy(a["perturbed"][i][None]))
        assert int(logits.argmax(1)) == int(a["pred"][i])
        why = str(a["why"][i])
        if why == "broken":
            assert a["pred_clean"][i] == a["label"][i] != a["pred"][i]
        if why == "disagree":
            assert a["other_pred"][i] != a["pred"][i] and a["other_version"][i] != version
    for entry in g.entries():
        rows = g.rows(*entry[:3], param=None if math.isnan(entry[3]) else entry[3])
        assert len(rows) <= BROKEN + WORST_GROUP + DISAGREE
    # numeric arrays only, and small
    with np.load(result.out_dir / GALLERY_FILE, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    assert (result.out_dir / GALLERY_FILE).stat().st_size < 300_000


@pytest.mark.slow
def test_the_selection_is_deterministic(gallery_run, tmp_path: Path) -> None:
    again, _ = run(tmp_path, "again")
    a = read_gallery(gallery_run[0].out_dir).arrays
    b = read_gallery(again.out_dir).arrays
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_amplified_difference() -> None:
    d = np.zeros((3, 1, 2, 2), dtype=np.float32)
    d[1, 0, 0, 0], d[1, 0, 1, 1] = 0.2, -0.1
    d[2, 0, 0, 0] = np.nan
    out = amplified(d)
    assert out.dtype == np.uint8
    assert (out[0] == 128).all()  # no change is mid grey
    assert out[1, 0, 0, 0] == 255 and out[1, 0, 1, 1] == round((0.5 - 0.25) * 255)
    assert out[2, 0, 0, 0] == 255


def test_pool_is_a_stratified_subset() -> None:
    y = np.repeat(np.arange(4), 100)
    pool = pool_indices(y, seed=0, size=40)
    assert len(pool) == 40 and (np.diff(pool) > 0).all()
    assert np.bincount(y[pool]).tolist() == [10, 10, 10, 10]
    np.testing.assert_array_equal(pool_indices(y[:30], seed=0, size=40), np.arange(30))


def test_report_section_has_a_grid_per_family(gallery_run) -> None:
    html = gallery_section(gallery_run[0].out_dir)
    for family in ("attack", "corruption", "fault"):
        assert f'id="gallery-{family}"' in html
    images = html.split('src="data:image/png;base64,')[1:]
    assert images
    for chunk in images:
        img = Image.open(io.BytesIO(base64.b64decode(chunk.split('"', 1)[0])))
        assert img.size[0] > 0 and img.size[1] > 0
        assert np.asarray(img).std() > 0  # not blank
    assert "true " in html and "versions disagree" in html or "broken" in html
    assert gallery_section({"run_id": "x"}) == ""


def test_export_npz_reloads_through_data_npz(gallery_run, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    result, _ = gallery_run
    adv = tmp_path / "adv.npz"
    code = main(["export", "adversarial", str(result.out_dir), "--threat", "fgsm",
                 "--eps", "0.3", "--version", "tiny@v2", "-o", str(adv)])
    assert code == 0, capsys.readouterr().err
    with np.load(adv, allow_pickle=False) as z:
        predictions = z["predictions"].reshape(-1)
        n = len(z["y"])
    assert n > 0
    again = evaluate({"tiny@v2": trained_tiny(1, steps=8)}, "npz", attacks=[], groups=False,
                     validation="off", overrides=[f"data.root={adv}",
                                                  "reliability.enabled=false"],
                     out_dir=tmp_path / "reload", progress=False)
    clean = again.outcomes()
    clean = clean[clean["family"] == "clean"].sort_values("sample")
    np.testing.assert_array_equal(clean["pred"].to_numpy(), predictions)


def test_export_png_with_index(gallery_run, tmp_path: Path) -> None:
    result, _ = gallery_run
    out = tmp_path / "png"
    assert main(["export", "adversarial", str(result.out_dir), "--threat", "gaussian_noise",
                 "--eps", "5", "--version", "tiny@v1", "--format", "png", "-o", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO((out / "index.csv").read_text())))
    g = read_gallery(result.out_dir)
    sel = g.rows("tiny@v1", "corruption", "gaussian_noise", 5.0)
    assert len(rows) == len(sel) > 0
    for row, i in zip(rows, sel, strict=True):
        px = np.asarray(Image.open(out / row["file"]))
        expected = np.round(np.clip(g.arrays["perturbed"][i][0], 0, 1) * 255).astype(np.uint8)
        np.testing.assert_array_equal(px, expected)
        assert int(row["label"]) == int(g.arrays["label"][i])
        assert int(row["prediction"]) == int(g.arrays["pred"][i])


@pytest.mark.parametrize(("args", "needle"), [
    (["--threat", "nope"], "Expected --threat to be a threat the run's gallery holds"),
    (["--threat", "fgsm", "--eps", "0.3"], "Expected --version for a run of several versions"),
    (["--threat", "fgsm", "--version", "tiny@v1"], "Expected --eps for fgsm"),
    (["--threat", "fgsm", "--eps", "0.7", "--version", "tiny@v1"],
     "Expected --eps to be a budget of fgsm in the run (0.1, 0.3), but got 0.7."),
    (["--threat", "fgsm", "--eps", "0.3", "--version", "tiny@v9"],
     "Expected --version to be one of tiny@v1, tiny@v2"),
])
def test_export_bad_input(gallery_run, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                          args: list[str], needle: str) -> None:
    out = tmp_path / "x.npz"
    code = main(["export", "adversarial", str(gallery_run[0].out_dir), *args, "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("rtb: error:"), err
    assert needle in err[0]
    assert not out.exists()


def test_export_needs_a_run_dir_with_a_gallery(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "adversarial", str(tmp_path / "missing"), "--threat", "fgsm",
                 "-o", str(tmp_path / "a.npz")]) == 2
    assert "not an existing directory" in capsys.readouterr().err
    (tmp_path / "old").mkdir()
    assert main(["export", "adversarial", str(tmp_path / "old"), "--threat", "fgsm",
                 "-o", str(tmp_path / "a.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"Expected {GALLERY_FILE} in the run directory" in err[0]


def test_outcome_frame_is_unchanged_by_the_gallery(gallery_run) -> None:
    """The gallery adds a file; the outcomes keep their columns."""
    frame = gallery_run[0].outcomes()
    assert isinstance(frame, pd.DataFrame)
    assert {"model", "version", "family", "threat", "param", "sample", "pred",
            "correct"} <= set(frame.columns)


@pytest.mark.slow
def test_report_gallery_in_a_browser(gallery_run, tmp_path: Path) -> None:
    """The report of a run with attacks, corruptions and faults: every gallery
    image decodes in chromium, one grid per family at least, no errors."""
    browser = pytest.importorskip("test_report_browser")
    if not browser.CHROMIUM or not Path(browser.CHROMIUM).exists():
        pytest.skip("no chromium on PATH (apt-get install -y chromium)")
    out = tmp_path / "report.html"
    assert main(["report", str(gallery_run[0].out_dir), "-o", str(out)]) == 0
    html = out.read_text()
    for family in ("attack", "corruption", "fault"):
        assert f'id="gallery-{family}"' in html
    result, console = browser.browser_check(out, tmp_path)
    assert result["errors"] == [] and console == [] and result["fetched"] == []
    gallery = [i for i in result["images"] if not i["plot"]]
    assert len(gallery) >= 3
    assert all(i["ok"] and i["width"] > 0 and i["height"] > 0 for i in result["images"])


def test_tabular_gallery_is_a_feature_diff_table(tmp_path: Path) -> None:
    from benchmark.gallery import write_gallery

    clean = np.array([[30.0, 1.0, 5.0], [41.0, 0.0, 2.0]], dtype=np.float32)
    perturbed = clean.copy()
    perturbed[0, 2] = 7.5  # one feature changed on the first point, none on the second
    strs = lambda *v: np.asarray(v, dtype=str)  # noqa: E731
    write_gallery(tmp_path, {
        "version": strs("t@v1", "t@v1"), "family": strs("attack", "attack"),
        "threat": strs("hsj", "hsj"), "param": np.array([0.5, 0.5]),
        "sample": np.array([3, 9]), "label": np.array([1, 0]), "pred_clean": np.array([1, 0]),
        "pred": np.array([0, 0]), "other_version": strs("", ""), "other_pred": np.array([-1, -1]),
        "why": strs("broken", "worst_group"), "group": strs("sex=F", "sex=F"),
        "perturbed": perturbed, "diff": amplified(perturbed - clean),
        "clean_row": np.array([0, 1]), "clean_sample": np.array([3, 9]), "clean": clean,
        "classes": strs("no", "yes"), "modality": np.asarray("tabular"),
        "features": strs("age", "smoker", "hours")})
    html = gallery_section(tmp_path)
    assert "<img" not in html and 'class="gal-diff"' in html
    assert "hours: 5 &rarr; 7.5" in html
    assert "age:" not in html  # unchanged features are not listed
    assert html.count("<tr>") == 3 and "none" in html


def test_export_help_loads_no_torch() -> None:
    import subprocess
    import sys

    code = ("import sys\nfrom benchmark.cli import main\ntry:\n    main(['export', '--help'])\n"
            "except SystemExit:\n    pass\nassert 'torch' not in sys.modules, 'torch loaded'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "rtb export" in proc.stdout and "--threat" in proc.stdout
