"""Export the perturbed inputs a run kept (its example gallery) as a dataset.

``rtb export adversarial RUN --threat pgd_linf --eps 0.3 -o adv.npz`` writes
the gallery's examples of one (version, threat, budget): the exact float
inputs the run evaluated, with their true labels and the version's
predictions. The ``.npz`` reloads through ``data=npz data.root=adv.npz``
(arrays ``x``, ``y``, ``classes``; everything else is 2-D, so the loader
does not read it as a group column). ``--format png`` writes one PNG per
example under ``DIR/<class>/`` (the ``image_folder`` layout) and
``DIR/index.csv``; PNG holds 8-bit pixels, so its predictions may differ from
the recorded ones where the perturbation is finer than 1/255.

Why the gallery: the run keeps the attack's examples of the chosen points as
it runs them (an attack's random start depends on the batch, so an example
regenerated on a subset would not be the example the outcome counted).
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.core.errors import RunDirError, UserError
from benchmark.gallery import Gallery, read_gallery
from benchmark.rundir import RECORD_FILE

FORMATS = ("npz", "png")


@dataclass(frozen=True)
class Selection:
    """The gallery rows of one (version, threat, param)."""

    version: str
    family: str
    threat: str
    param: float
    rows: np.ndarray


def _param_text(v: float) -> str:
    return "none" if math.isnan(v) else f"{v:g}"


def select(gallery: Gallery, threat: str, eps: float | None, version: str | None) -> Selection:
    """The rows of ``threat`` at ``eps`` for ``version``; one ``UserError`` line
    naming what the gallery holds when the choice is wrong or ambiguous."""
    entries = gallery.entries()
    threats = sorted({t for _, _, t, _ in entries})
    if threat not in threats:
        raise UserError(f"Expected --threat to be a threat the run's gallery holds "
                        f"({', '.join(threats) or 'none'}), but got {threat!r}.")
    matching = [e for e in entries if e[2] == threat]
    versions = sorted({v for v, _, _, _ in matching})
    if version is None:
        if len(versions) > 1:
            raise UserError(f"Expected --version for a run of several versions "
                            f"({', '.join(versions)}), but got none.")
        version = versions[0]
    elif version not in versions:
        raise UserError(f"Expected --version to be one of {', '.join(versions)}, but got "
                        f"{version!r}.")
    matching = [e for e in matching if e[0] == version]
    params = sorted({p for _, _, _, p in matching}, key=lambda p: (math.isnan(p), p))
    if eps is None:
        if len(params) > 1:
            raise UserError(f"Expected --eps for {threat} (the gallery holds "
                            f"{', '.join(_param_text(p) for p in params)}), but got none.")
        param = params[0]
    else:
        hits = [p for p in params if not math.isnan(p) and math.isclose(p, eps, abs_tol=1e-9)]
        if not hits:
            raise UserError(f"Expected --eps to be a budget of {threat} in the run "
                            f"({', '.join(_param_text(p) for p in params)}), but got {eps:g}.")
        param = hits[0]
    family = next(f for v, f, t, p in matching
                  if (p == param or (math.isnan(p) and math.isnan(param))))
    rows = gallery.rows(version=version, family=family, threat=threat,
                        param=None if math.isnan(param) else param)
    if math.isnan(param):
        rows = rows[np.isnan(gallery.arrays["param"][rows])]
    return Selection(version=version, family=family, threat=threat, param=param, rows=rows)


def _run_dir(ref: str) -> Path:
    path = Path(ref).expanduser()
    if path.is_file() and path.name == RECORD_FILE:
        path = path.parent
    if not path.is_dir():
        raise RunDirError(f"Expected RUN to be a run directory (it keeps the gallery), but "
                          f"{ref!r} is {'a file' if path.exists() else 'not an existing directory'}.")
    return path


def write_npz(gallery: Gallery, sel: Selection, output: Path) -> Path:
    """The selection as an ``.npz`` that ``data=npz`` reads."""
    a = gallery.arrays
    r = sel.rows
    col = lambda k: a[k][r].reshape(-1, 1)  # noqa: E731 (2-D: not a group column)
    arrays = {
        "x": a["perturbed"][r].astype(np.float32),
        "y": a["label"][r].astype(np.int64),
        "classes": np.asarray(gallery.classes, dtype=str),
        "predictions": col("pred"),
        "clean_predictions": col("pred_clean"),
        "sample": col("sample"),
        "why": col("why"),
        "version": np.asarray([[sel.version]]),
        "threat": np.asarray([[sel.threat]]),
        "param": np.asarray([[sel.param]]),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, output)
    return output


def _png_pixels(x: np.ndarray) -> np.ndarray:
    """CHW floats in [0, 1] as HxW (gray) or HxWxC uint8."""
    img = np.round(np.clip(np.nan_to_num(x, nan=0.0), 0.0, 1.0) * 255).astype(np.uint8)
    return img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))


def write_png(gallery: Gallery, sel: Selection, output: Path) -> Path:
    """One PNG per example under ``output/<class>/`` and ``output/index.csv``."""
    from PIL import Image

    a = gallery.arrays
    if a["perturbed"].ndim != 4:
        raise UserError("Expected an image run for --format png, but the run's inputs are a "
                        "feature table; use --format npz.")
    classes = gallery.classes
    output.mkdir(parents=True, exist_ok=True)
    lines = []
    for k, i in enumerate(sel.rows):
        label = int(a["label"][i])
        cls = classes[label] if label < len(classes) else str(label)
        folder = output / cls
        folder.mkdir(exist_ok=True)
        name = f"{k:04d}-sample{int(a['sample'][i])}.png"
        Image.fromarray(_png_pixels(a["perturbed"][i])).save(folder / name)
        lines.append({"file": f"{cls}/{name}", "sample": int(a["sample"][i]), "label": label,
                      "class": cls, "prediction": int(a["pred"][i]),
                      "clean_prediction": int(a["pred_clean"][i]), "why": str(a["why"][i]),
                      "version": sel.version, "threat": sel.threat,
                      "param": _param_text(sel.param)})
    with open(output / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(lines[0]) if lines else ["file"])
        w.writeheader()
        w.writerows(lines)
    return output


def export_examples(run: str, threat: str, eps: float | None, version: str | None,
                    output: Path, fmt: str = "npz") -> tuple[Path, Selection]:
    """Export one (version, threat, eps) of a run's gallery; returns (path, selection)."""
    if fmt not in FORMATS:
        raise UserError(f"Expected --format to be one of {', '.join(FORMATS)}, but got {fmt!r}.")
    gallery = read_gallery(_run_dir(run))
    sel = select(gallery, threat, eps, version)
    if fmt == "npz":
        if output.is_dir():
            raise UserError(f"Expected -o to name an .npz file, but {str(output)!r} is a "
                            f"directory.")
        return write_npz(gallery, sel, output), sel
    if output.exists() and not output.is_dir():
        raise UserError(f"Expected -o to name a directory for --format png, but "
                        f"{str(output)!r} is a file.")
    return write_png(gallery, sel, output), sel


__all__ = ["FORMATS", "Selection", "export_examples", "select", "write_npz", "write_png"]
