"""Bad-input corpus: bad data files, bad output paths, gate rules and report
options (see ``badinput.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from badinput import Case, World, run_case

DIGITS = "1" * 64


def _npz(name: str, **arrays: np.ndarray):
    def setup(tmp: Path, world: World) -> None:
        np.savez(tmp / name, **arrays)
    return setup


def _file(name: str, text: str = "not what you think\n"):
    def setup(tmp: Path, world: World) -> None:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(text)
    return setup


def _image_folder(bad_name: str, bad_bytes: bytes):
    """Two classes of 8x8 grey PNGs, plus one bad file in the first class."""
    def setup(tmp: Path, world: World) -> None:
        from PIL import Image

        rng = np.random.default_rng(0)
        for c in ("a", "b"):
            (tmp / "imgs" / c).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(
                    tmp / "imgs" / c / f"{i}.png")
        (tmp / "imgs" / "a" / bad_name).write_bytes(bad_bytes)
    return setup


def _rules(threat: str):
    return _file("rules.yaml", f"rules:\n  - floor: {{threat: {threat}, min: 0.1}}\n")


X = (np.random.default_rng(0).random((30, 8, 8)) * 255).astype(np.uint8)
Y = np.arange(30) % 3
IMAGE_FOLDER = ("data=image_folder", "data.root={tmp}/imgs", "data.channels=1")

CASES = [
    # data files
    Case("empty npz", "data", ("data.root={tmp}/empty.npz",), "expected at least one sample",
         run_overrides=True,
         setup=_npz("empty.npz", x=np.zeros((0, 8, 8), np.uint8), y=np.zeros(0, np.int64))),
    Case("text file as npz", "data", ("data.root={tmp}/text.npz",), "is not an .npz file",
         run_overrides=True, setup=_file("text.npz")),
    Case("npy file as npz", "data", ("data.root={tmp}/x.npz",), "a single .npy array",
         run_overrides=True, setup=lambda tmp, w: np.save(tmp / "x.npz.npy", X) or
         (tmp / "x.npz.npy").rename(tmp / "x.npz")),
    Case("directory as npz", "data", ("data.root={tmp}",), "is a directory", run_overrides=True),
    Case("corrupt png in image_folder", "data", IMAGE_FOLDER, "as an image", run_overrides=True,
         setup=_image_folder("bad.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 20)),
    Case("text file named png in image_folder", "data", IMAGE_FOLDER, "as an image",
         run_overrides=True, setup=_image_folder("notes.png", b"hello\n")),
    Case("file as image_folder root", "data", ("data=image_folder", "data.root={npz}"),
         "is a file; expected a directory", run_overrides=True),
    # degenerate data
    Case("one class in total", "data", ("data.root={tmp}/one.npz",), "at least two classes",
         run_overrides=True, setup=_npz("one.npz", x=X, y=np.zeros(30, np.int64))),
    Case("identical images", "data", ("data.root={tmp}/same.npz",), "are identical",
         run_overrides=True, setup=_npz("same.npz", x=np.full_like(X, 7), y=Y)),
    Case("NaN label", "data", ("data.root={tmp}/nan.npz",), "expected integer class labels",
         run_overrides=True,
         setup=_npz("nan.npz", x=X, y=np.where(Y == 2, np.nan, Y).astype(np.float64))),
    Case("label outside the class list", "data", ("data.root={tmp}/out.npz",),
         "expected labels in 0..2", run_overrides=True,
         setup=_npz("out.npz", x=X, y=np.where(np.arange(30) == 4, 5, Y),
                    classes=np.array(["a", "b", "c"]))),
    Case("negative label", "data", ("data.root={tmp}/neg.npz",), "but got label -1",
         run_overrides=True, setup=_npz("neg.npz", x=X, y=np.where(np.arange(30) == 4, -1, Y))),
    Case("n_samples above the data set", "data", ("data.n_samples=100000",),
         "Expected `data.n_samples` to be at most 30 (the size of 'npz'), but got 100000.",
         run_overrides=True),
    # config values that name files or directories
    Case("unknown data option", "config", ("+data.options.bogus=1",),
         "Unknown dataset option `data.options.bogus`; expected one of: check_range",
         run_overrides=True),
    Case("run name with a slash", "config", ("name=a/b",), "Expected `name` to be a run name",
         run_overrides=True),
    Case("run name dot-dot", "config", ("name=..",), "Expected `name` to be a run name",
         run_overrides=True),
    Case("unquoted all-digit sha256", "config", (f"model.tiny_v1.sha256={DIGITS}",),
         "quote it", run_overrides=True),
    Case("run dir under a file", "output", ("hydra.run.dir={tmp}/afile/run",),
         "is a file, not a directory", run_overrides=True, setup=_file("afile")),
    # gate
    Case("gate threat typo", "gate", ("gate", "tiny@v1", "--store", "{store}", "--rules", "{tmp}/rules.yaml"),
         "Unknown threat 'fgsn'", setup=_rules("fgsn")),
    Case("gate missing rules file", "gate", ("gate", "tiny@v1", "--store", "{store}", "--rules",
                                             "{tmp}/missing.yaml"),
         "does not exist; expected an existing YAML file or a built-in rule set: arrests, default"),
    Case("gate junit under a file", "output",
         ("gate", "tiny@v1", "--store", "{store}", "--junit", "{tmp}/afile/out.xml"),
         "is a file, not a directory", setup=_file("afile")),
    Case("gate summary is a directory", "output",
         ("gate", "tiny@v1", "--store", "{store}", "--summary", "{tmp}"), "it is a directory"),
    # report
    Case("report output under a file", "output", ("report", "{run_dir}", "-o", "{tmp}/afile/r.html"),
         "is a file, not a directory", setup=_file("afile")),
    Case("report pdf", "output", ("report", "{run_dir}", "-o", "{tmp}/r.pdf"),
         "Expected the report file to end in .html"),
    Case("report of an existing non-run file", "data", ("report", "{npz}"),
         "is a file, not a run directory"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.klass}:{c.name}")
def test_bad_input(case: Case, world: World, tmp_path: Path) -> None:
    run_case(case, world, tmp_path)


def test_report_pdf_writes_nothing(world: World, tmp_path: Path) -> None:
    case = next(c for c in CASES if c.name == "report pdf")
    run_case(case, world, tmp_path)
    assert not (tmp_path / "r.pdf").exists() and not (tmp_path / "report.html").exists()
