"""The report's example gallery: what each attack, corruption and fault did to
the points it broke, as HTML.

Images: per threat, one grid per version at the threat's strongest setting
kept (largest eps or severity), each point a strip of clean, perturbed and
amplified difference (grey is no change) with its true label and the
predictions. Feature tables: a table of the features each threat changed.
The first threat of each family is shown open; the rest are collapsed.
Reads ``gallery.npz`` only (numpy and Pillow, no torch).
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.core.errors import RunDirError
from benchmark.rundir import GALLERY_FILE, RECORD_FILE, Gallery, LoadedRun, read_gallery

FAMILY_TITLES = {"attack": "Attacks", "corruption": "Corruptions", "fault": "Pipeline faults"}
WHY_TEXT = {"broken": "broken", "worst_group": "worst group", "disagree": "versions disagree"}
#: Width in pixels each image of a strip is scaled to (nearest neighbour).
STRIP_WIDTH = 56

CSS = """
.gal-grid{display:flex;flex-wrap:wrap;gap:8px;margin:6px 0 14px}
.gal-grid figure{margin:0;text-align:center;font-size:.74em;width:88px}
.gal-grid img{image-rendering:pixelated;border:1px solid #d0d7de;display:block;margin:0 auto}
.gal-grid figcaption{color:#1f2328;line-height:1.25}
.gal-bad{color:#cf222e;font-weight:600}.gal-why{color:#57606a}
.gal-diff td.changed{background:#fff8c5}
"""


def _e(s: Any) -> str:
    return html.escape(str(s))


def _run_dir(run: str | os.PathLike[str] | LoadedRun | Mapping[str, Any]) -> Path | None:
    if isinstance(run, LoadedRun):
        path = Path(run.source)
    elif isinstance(run, Mapping):
        src = run.get("run_dir")
        if not src:
            return None
        path = Path(str(src))
    else:
        path = Path(run)
    if path.is_file() and path.name == RECORD_FILE:
        path = path.parent
    return path if (path / GALLERY_FILE).is_file() else None


def _png(img: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _pixels(x: np.ndarray) -> np.ndarray:
    """CHW floats in [0,1] (or uint8) as HxW or HxWx3 uint8 (NaN shows magenta)."""
    if x.dtype == np.uint8:
        img = x
    else:
        nan = ~np.isfinite(x)
        img = np.round(np.clip(np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0), 0, 1)
                       * 255).astype(np.uint8)
        if nan.any():
            img = np.repeat(img, 3, axis=0) if img.shape[0] == 1 else img.copy()
            mask = nan.any(axis=0)
            img[0][mask], img[1][mask], img[2][mask] = 255, 0, 255
    if img.shape[0] == 1:
        return img[0]
    return np.ascontiguousarray(np.transpose(img[:3], (1, 2, 0)))


def _strip(clean: np.ndarray, perturbed: np.ndarray, diff: np.ndarray) -> tuple[str, int, int]:
    """Clean over perturbed over difference, scaled by an integer factor."""
    parts = [_pixels(clean), _pixels(perturbed), _pixels(diff)]
    if any(p.ndim == 3 for p in parts):
        parts = [p if p.ndim == 3 else np.repeat(p[:, :, None], 3, axis=2) for p in parts]
    h, w = parts[0].shape[:2]
    gap = np.full((1, *parts[0].shape[1:]), 255, dtype=np.uint8)
    img = np.concatenate([parts[0], gap, parts[1], gap, parts[2]], axis=0)
    k = max(1, STRIP_WIDTH // max(w, 1))
    img = np.repeat(np.repeat(img, k, axis=0), k, axis=1)
    return _png(img), img.shape[1], img.shape[0]


def _cls(classes: list[str], i: int) -> str:
    return classes[i] if 0 <= i < len(classes) else str(i)


def _caption(g: Gallery, i: int) -> str:
    a, classes = g.arrays, g.classes
    y, p0, p = int(a["label"][i]), int(a["pred_clean"][i]), int(a["pred"][i])
    bad = ' class="gal-bad"' if p != y else ""
    text = (f"true {_e(_cls(classes, y))}<br>clean {_e(_cls(classes, p0))} &rarr; "
            f"<span{bad}>{_e(_cls(classes, p))}</span>")
    other = str(a["other_version"][i])
    if other:
        text += f"<br>{_e(other)}: {_e(_cls(classes, int(a['other_pred'][i])))}"
    text += f'<br><span class="gal-why">{_e(WHY_TEXT.get(str(a["why"][i]), a["why"][i]))}</span>'
    return text


def _image_grid(g: Gallery, rows: np.ndarray) -> str:
    clean = g.clean(rows)
    out = ['<div class="gal-grid">']
    for j, i in enumerate(rows):
        data, w, h = _strip(clean[j], g.arrays["perturbed"][i], g.arrays["diff"][i])
        out.append(f'<figure><img class="gallery" alt="sample {int(g.arrays["sample"][i])}: clean, '
                   f'perturbed, difference" width="{w}" height="{h}" '
                   f'src="data:image/png;base64,{data}"><figcaption>{_caption(g, i)}'
                   "</figcaption></figure>")
    out.append("</div>")
    return "".join(out)


def _fmt(v: float) -> str:
    return f"{v:.4g}" if math.isfinite(v) else str(v)


def _feature_table(g: Gallery, rows: np.ndarray) -> str:
    """Per point: the features the threat changed, clean value -> perturbed value."""
    names = [str(n) for n in g.arrays.get("features", [])]
    clean = g.clean(rows)
    out = ['<table class="gal-diff"><tr><th>sample</th><th>true</th><th>clean &rarr; now</th>'
           "<th>changed features (clean &rarr; perturbed)</th><th>why</th></tr>"]
    a, classes = g.arrays, g.classes
    for j, i in enumerate(rows):
        c, p = clean[j].reshape(-1), a["perturbed"][i].reshape(-1)
        changed = [k for k in range(len(c)) if not (c[k] == p[k] or (np.isnan(c[k]) and np.isnan(p[k])))]
        cells = ", ".join(f"{_e(names[k] if k < len(names) else k)}: {_fmt(float(c[k]))} &rarr; "
                          f"{_fmt(float(p[k]))}" for k in changed[:8])
        if len(changed) > 8:
            cells += f", &hellip; ({len(changed)} in all)"
        out.append(f'<tr><td class="num">{int(a["sample"][i])}</td>'
                   f'<td>{_e(_cls(classes, int(a["label"][i])))}</td>'
                   f'<td>{_e(_cls(classes, int(a["pred_clean"][i])))} &rarr; '
                   f'{_e(_cls(classes, int(a["pred"][i])))}</td>'
                   f'<td class="changed">{cells or "none"}</td>'
                   f'<td>{_e(WHY_TEXT.get(str(a["why"][i]), a["why"][i]))}</td></tr>')
    out.append("</table>")
    return "".join(out)


def _label(family: str, threat: str, param: float) -> str:
    if math.isnan(param):
        return threat
    word = {"attack": "eps", "corruption": "severity"}.get(family, "param")
    return f"{threat} {word}={param:g}"


def _strongest(g: Gallery) -> dict[tuple[str, str], list[tuple[str, float]]]:
    """(family, threat) -> [(version, strongest param kept)] in stored order."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for version, family, threat, param in g.entries():
        best = out.setdefault((family, threat), {})
        old = best.get(version)
        if old is None or (not math.isnan(param) and (math.isnan(old) or param > old)):
            best[version] = param
    return {k: list(v.items()) for k, v in out.items()}


def gallery_section(run: str | os.PathLike[str] | LoadedRun | Mapping[str, Any]) -> str:
    """The gallery of one run as an HTML section (with its own CSS), or ""
    when the run kept none (a run read from the store, or an older run)."""
    path = _run_dir(run)
    if path is None:
        return ""
    try:
        g = read_gallery(path)
    except RunDirError as exc:
        return f'<p class="note">No example gallery: {_e(exc)}</p>'
    if not len(g):
        return ('<h2>Examples</h2><p class="note">No example was kept: no point '
                "was broken and no versions disagreed.</p>")
    tabular = g.modality == "tabular" or g.arrays["perturbed"].ndim != 4
    parts = [f"<style>{CSS}</style>", '<h2>Examples</h2>',
             '<p class="note">Points each threat broke (right on clean data, wrong under the '
             "threat), points of the version's worst group, and points where versions "
             "disagree, at the strongest setting run. "
             + ("Each strip: clean, perturbed, amplified difference (grey: no change)."
                if not tabular else "Changed features are listed per point.") + "</p>"]
    strongest = _strongest(g)
    for family in ("attack", "corruption", "fault"):
        threats = [(t, vs) for (f, t), vs in strongest.items() if f == family]
        if not threats:
            continue
        parts.append(f'<h3 id="gallery-{family}">{FAMILY_TITLES[family]}</h3>')
        for n, (threat, versions) in enumerate(threats):
            body = []
            for version, param in versions:
                rows = g.rows(version=version, family=family, threat=threat,
                              param=None if math.isnan(param) else param)
                if math.isnan(param):
                    rows = rows[np.isnan(g.arrays["param"][rows])]
                group = str(g.arrays["group"][rows[0]]) if len(rows) else ""
                note = f" &middot; worst group {_e(group)}" if group else ""
                body.append(f"<h4>{_e(version)}: {_e(_label(family, threat, param))}{note}</h4>")
                body.append(_feature_table(g, rows) if tabular else _image_grid(g, rows))
            html_body = "".join(body)
            if n == 0:
                parts.append(html_body)
            else:
                parts.append(f"<details><summary>{_e(threat)}</summary>{html_body}</details>")
    return "\n".join(parts)


__all__ = ["gallery_section"]
