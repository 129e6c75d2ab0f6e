"""`rtb validate`: the pipeline faults are caught through the command,
clean data passes, drift is reported, and every usage error exits 2."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_evalset

from attacks.faults import get_fault, list_faults
from benchmark.cli import main
from benchmark.nets import TinyMLP

CHANNEL_SCALE = torch.tensor([1.0, 0.6, 0.3]).view(1, 3, 1, 1)

MODEL_YAML = """\
tiny3_v1:
  name: tiny3
  version: v1
  architecture: {{_target_: benchmark.nets.TinyMLP, in_features: 192, num_classes: 3, hidden: 16}}
  checkpoint: {ckpt}
  num_classes: 3
  input_shape: [3, 8, 8]
"""

#: The faults that corrupt the data, and the checks any of which must catch each.
DATA_FAULTS: dict[str, tuple[dict, set[str]]] = {
    "scale_255": ({}, {"input_range", "input_scale"}),
    "channel_swap": ({}, {"channel_order"}),
    "normalization_missing": ({}, {"channel_stats"}),
    "normalization_twice": ({}, {"input_range", "input_scale"}),
    "nan_values": ({"fraction": 0.01}, {"finite_values"}),
    "resize": ({"factor": 0.5, "restore": True}, {"property_outliers"}),
    "resize_cropped": ({"factor": 0.5, "restore": False}, {"property_outliers"}),
}


def rgb(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    d = make_evalset(n=n, channels=3, size=8, classes=3, seed=seed)
    return d.x * CHANNEL_SCALE, d.y


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, list[str]]:
    """A 3-channel tiny model version and the overrides that select it."""
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny3.pt"
    torch.save(TinyMLP(in_features=192, num_classes=3, hidden=16).state_dict(), ckpt)
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "tiny3_v1.yaml").write_text(MODEL_YAML.format(ckpt=ckpt))
    return tmp_path, [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "model=[tiny3_v1]"]


def write(path: Path, x: torch.Tensor, y: torch.Tensor | None = None,
          train_x: torch.Tensor | None = None) -> Path:
    arrays = {"x": x.numpy().astype(np.float32)}
    if y is not None:
        arrays["y"] = y.numpy()
    if train_x is not None:
        arrays["train_x"] = train_x.numpy().astype(np.float32)
    np.savez(path, **arrays)
    return path


def validate(*args: str) -> tuple[int, dict]:
    """Exit status and the --json results of `rtb validate ARGS`."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.json"
        rc = main(["validate", "--json", str(out), *args])
        return rc, json.loads(out.read_text()) if out.exists() else {}


def failed(result: dict) -> set[str]:
    return {c["check"] for c in result["checks"] if c["status"] == "fail"}


def test_the_fault_list_covers_the_registry_data_faults() -> None:
    names = {n.removesuffix("_cropped") for n in DATA_FAULTS}
    assert names <= set(list_faults())


def test_clean_data_passes_every_check(setup: tuple[Path, list[str]]) -> None:
    tmp, overrides = setup
    x, y = rgb(60, 0)
    npz = write(tmp / "clean.npz", x, y, train_x=rgb(120, 1)[0])
    rc, result = validate("data=npz", f"data.root={npz}", *overrides)
    assert rc == 0 and result["status"] == "pass", [c["message"] for c in result["checks"]
                                                    if c["status"] != "pass"]
    assert {c["subject"] for c in result["checks"]} == {"data:npz", "tiny3@v1"}


@pytest.mark.parametrize("fault", sorted(DATA_FAULTS))
def test_each_data_fault_is_caught(fault: str, setup: tuple[Path, list[str]]) -> None:
    tmp, overrides = setup
    params, catchers = DATA_FAULTS[fault]
    x, y = rgb(60, 0)
    broken = get_fault(fault.removesuffix("_cropped"))(x.clone(), **params)
    npz = write(tmp / f"{fault}.npz", broken, y, train_x=rgb(120, 1)[0])
    rc, result = validate("--only", "data", "data=npz", f"data.root={npz}", *overrides)
    assert rc == 1
    assert failed(result) & catchers, (fault, failed(result))


def test_wrong_resolution_is_a_shape_failure(setup: tuple[Path, list[str]]) -> None:
    tmp, overrides = setup
    x, y = rgb(30, 0)
    small = torch.nn.functional.interpolate(x, size=(6, 6), mode="bilinear")
    npz = write(tmp / "small.npz", small, y)
    rc, result = validate("data=npz", f"data.root={npz}", *overrides)
    assert rc == 1 and "dtype_shape" in failed(result)
    model_checks = [c for c in result["checks"] if c["subject"] == "tiny3@v1"]
    assert model_checks and all(c["status"] == "pass" for c in model_checks)


def test_only_model_runs_only_the_model_checks(setup: tuple[Path, list[str]],
                                              capsys: pytest.CaptureFixture) -> None:
    tmp, overrides = setup
    x, y = rgb(30, 0)
    npz = write(tmp / "d.npz", x * 255, y)  # broken data: the model checks do not care
    rc, result = validate("--only", "model", "data=npz", f"data.root={npz}", *overrides)
    assert rc == 0 and {c["subject"] for c in result["checks"]} == {"tiny3@v1"}
    assert "validation: PASS" in capsys.readouterr().out


def test_drift_flags_a_brightened_batch_and_names_brightness(
        setup: tuple[Path, list[str]], capsys: pytest.CaptureFixture) -> None:
    tmp, overrides = setup
    ref = write(tmp / "ref.npz", rgb(200, 0)[0])
    fresh = write(tmp / "fresh.npz", rgb(200, 1)[0])
    bright = write(tmp / "bright.npz", (rgb(200, 1)[0] + 0.2).clamp(0, 1))
    rc, result = validate("--reference", str(ref), "--batch", str(bright), *overrides)
    assert rc == 1 and "brightness" in result["drifted"]
    assert "drifted: " in capsys.readouterr().out
    rc, result = validate("--reference", str(ref), "--batch", str(fresh), *overrides)
    assert rc == 0 and result["drifted"] == []
    assert "drift:predicted_class[tiny3@v1]" in {c["check"] for c in result["checks"]}


def test_drift_without_model_and_with_a_different_shape(tmp_path: Path) -> None:
    ref = write(tmp_path / "ref.npz", rgb(100, 0)[0])
    noisy = write(tmp_path / "noisy.npz", (rgb(100, 1)[0] + 0.2 * torch.rand(100, 3, 8, 8)))
    rc, result = validate("--reference", str(ref), "--batch", str(noisy), "--no-model")
    assert rc == 1 and result["drifted"] and not any("logits" in d for d in result["drifted"])
    other = write(tmp_path / "other.npz", torch.rand(10, 3, 6, 6))
    rc, result = validate("--reference", str(ref), "--batch", str(other), "--no-model")
    assert rc == 1 and failed(result) == {"drift:shape"}


@pytest.mark.parametrize("args, message", [
    (["--reference", "a.npz"], "--reference and --batch go together"),
    (["--only", "data", "--reference", "a.npz", "--batch", "b.npz"], "--only applies"),
    (["--reference", "missing.npz", "--batch", "missing.npz"], "does not exist"),
    (["--alpha", "2", "--reference", "a.npz", "--batch", "a.npz"], "Expected `alpha` in (0, 1)"),
    (["--only", "nothing"], "invalid choice"),
    (["validation.on_fail=maybe"], "Expected `validation.on_fail` to be stop or report"),
    (["data=npz", "data.root=/nonexistent.npz"], "does not exist"),
])
def test_usage_errors_exit_2(args: list[str], message: str, tmp_path: Path,
                             capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
                             ) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.npz", rgb(10, 0)[0])
    assert main(["validate", *args]) == 2
    assert message in capsys.readouterr().err


def test_help_and_list_teach(capsys: pytest.CaptureFixture) -> None:
    assert main(["validate", "--help"]) == 0
    out = capsys.readouterr().out
    assert "exit status: 0 pass" in out and "--reference" in out and "examples:" in out
    assert main(["validate", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("finite_values", "batch_invariance", "property_outliers"):
        assert name in out
