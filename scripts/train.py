"""Train the reference model versions.

    python scripts/train.py                         # every version
    python scripts/train.py --version v2            # mnist_cnn@v2
    python scripts/train.py --version arrests_mlp@v1 --version arrests_mlp@v2
    python scripts/train.py --check                 # rebuild, compare the sha256s

mnist_cnn on mnist5k's train part: v1 standard training, v2 PGD adversarial
training (Madry et al. 2018) at eps 0.3.

arrests_mlp on the arrests table's train part (a ``TabularMLP`` with its
imputation, standardisation and one-hot encoding folded in): v1 plain
cross-entropy; v2 adds a demographic-parity penalty on ``colour`` (the
squared gap between the groups' mean predicted probability of release,
batch by batch). After training, the script tests on the test split whether
v2's demographic parity difference on ``colour`` is smaller than v1's
(paired bootstrap over the same test rows) and prints the figures.

Seeded, CPU only, a fixed thread count: the rebuild reproduces the
committed checkpoints byte for byte, and the script writes each version's
``conf/model/*.yaml`` with the sha256 of its checkpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.core.specs import DataSpec
from benchmark.data import load_evalset
from benchmark.nets import SmallCNN

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "benchmark" / "weights"
CONF = ROOT / "conf" / "model"
WIDTH = 16

VERSIONS = {
    "v1": {"adversarial": False, "epochs": 8, "description": "standard training"},
    "v2": {"adversarial": True, "epochs": 14, "description": "PGD adversarial training, eps 0.3"},
}


def pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
        step: float, gen: torch.Generator) -> torch.Tensor:
    """Linf PGD with a random start, for adversarial training."""
    delta = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
    x_adv = (x + delta).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + step * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def train(version: str, seed: int = 0) -> bytes:
    settings = VERSIONS[version]
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    data = load_evalset(DataSpec(name="mnist5k", loader="mnist5k", split="train"))
    x, y = data.x, data.y
    model = SmallCNN(in_channels=1, num_classes=10, width=WIDTH)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    epochs = int(settings["epochs"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * ((len(y) + 63) // 64))
    for epoch in range(epochs):
        perm = torch.randperm(len(y), generator=gen)
        # ramp the training budget over the first epochs (helps small models converge)
        eps = 0.3 * min(1.0, (epoch + 1) / 4)
        t0, total, correct = time.time(), 0.0, 0
        for i in range(0, len(y), 64):
            idx = perm[i : i + 64]
            xb, yb = x[idx], y[idx]
            if settings["adversarial"]:
                model.eval()
                xb = pgd(model, xb, yb, eps, steps=10, step=eps / 4, gen=gen)
            model.train()
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(yb)
            correct += int((out.argmax(1) == yb).sum())
        print(f"{version} epoch {epoch + 1}/{epochs} loss {total / len(y):.4f} "
              f"train acc {correct / len(y):.3f} ({time.time() - t0:.1f}s)", file=sys.stderr)
    model.eval()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


# ----------------------------------------------------------------------------- arrests_mlp

TABULAR_VERSIONS = {
    "v1": {"penalty": 0.0, "description": "plain MLP, cross-entropy"},
    "v2": {"penalty": 3.0, "description": "MLP with a demographic-parity penalty on colour "
                                           "(weight 3)"},
}
TAB_HIDDEN = (32, 16)
TAB_EPOCHS = 40
TAB_BATCH = 128
FAIR_GROUP = "colour"


def _arrests(split: str):  # type: ignore[no-untyped-def]
    return load_evalset(DataSpec(name="arrests", loader="arrests", split=split))


def train_tabular(version: str, seed: int = 0) -> bytes:
    """One arrests_mlp version: the state_dict bytes, preprocessing buffers included."""
    from benchmark.tabular_models import TabularMLP, cardinalities

    penalty = float(TABULAR_VERSIONS[version]["penalty"])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    data = _arrests("train")
    assert data.schema is not None and data.train_x is not None
    x, y = data.x, data.y
    group = torch.from_numpy((data.groups[FAIR_GROUP] == "Black").to_numpy(dtype=bool).copy())
    model = TabularMLP(cardinalities(data.schema), hidden=TAB_HIDDEN, num_classes=2)
    model.fit_preprocessing(x.numpy())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    for epoch in range(TAB_EPOCHS):
        perm = torch.randperm(len(y), generator=gen)
        total, gap_sum = 0.0, 0.0
        model.train()
        for i in range(0, len(y), TAB_BATCH):
            idx = perm[i : i + TAB_BATCH]
            out = model(x[idx])
            loss = F.cross_entropy(out, y[idx])
            g = group[idx]
            if penalty and bool(g.any()) and bool((~g).any()):
                p = out.softmax(1)[:, 1]
                gap = p[g].mean() - p[~g].mean()
                loss = loss + penalty * gap**2
                gap_sum += float(gap.detach().abs()) * len(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        if (epoch + 1) % 10 == 0:
            print(f"arrests_mlp@{version} epoch {epoch + 1}/{TAB_EPOCHS} loss "
                  f"{total / len(y):.4f}" + (f" mean |gap| {gap_sum / len(y):.3f}" if penalty
                                             else ""), file=sys.stderr)
    model.eval()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


def dp_difference(pred: np.ndarray, group: np.ndarray) -> float:
    """|selection rate of one group - the other's| (two groups)."""
    values = np.unique(group)
    rates = [float(pred[group == v].mean()) for v in values]
    return max(rates) - min(rates)


def fairness_report(blobs: dict[str, bytes], resamples: int = 2000, seed: int = 0) -> dict:
    """v1 against v2 on the test split: accuracy and the demographic parity
    difference on colour, with a paired bootstrap over the same test rows (a
    one-sided p-value for 'v2 is not fairer')."""
    from fairlearn.metrics import demographic_parity_difference

    from benchmark.tabular_models import TabularMLP, cardinalities

    data = _arrests("test")
    assert data.schema is not None
    group = data.groups[FAIR_GROUP].to_numpy()
    preds = {}
    for version, blob in blobs.items():
        model = TabularMLP(cardinalities(data.schema), hidden=TAB_HIDDEN, num_classes=2)
        model.load_state_dict(torch.load(io.BytesIO(blob), weights_only=True))
        model.eval()
        with torch.no_grad():
            preds[version] = model(data.x).argmax(1).numpy()
    y = data.y.numpy()
    rng = np.random.default_rng(seed)
    n = len(y)
    diffs = np.empty(resamples)
    for b in range(resamples):
        idx = rng.integers(0, n, n)
        diffs[b] = (dp_difference(preds["v1"][idx], group[idx])
                    - dp_difference(preds["v2"][idx], group[idx]))
    out = {v: {"accuracy": float((p == y).mean()),
               "dp_difference": dp_difference(p, group),
               "fairlearn_dp_difference": float(demographic_parity_difference(
                   y, p, sensitive_features=group))}
           for v, p in preds.items()}
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    out["reduction"] = {"value": out["v1"]["dp_difference"] - out["v2"]["dp_difference"],
                        "ci95": (float(lo), float(hi)),
                        "p_one_sided": float((np.sum(diffs <= 0) + 1) / (resamples + 1))}
    return out


TAB_MODEL_YAML = """\
# arrests_mlp@{version}: {description}; rebuilt by
# `python scripts/train.py --version arrests_mlp@{version}`. Input: the raw arrests feature
# matrix (schema order: {columns}); preprocessing folded into the module:
# impute (median / mode), standardise numeric columns, one-hot categoricals.
arrests_mlp_{version}:
  name: arrests_mlp
  version: {version}
  architecture:
    _target_: benchmark.tabular_models.TabularMLP
    cardinalities: {cards}   # per column: 0 numeric, else its number of categories
    hidden: [{hidden}]
    num_classes: 2
  checkpoint: pkg://benchmark/weights/arrests_mlp_{version}.pt
  format: state_dict
  sha256: {sha}
  num_classes: 2
  input_shape: [{n}]
"""


MODEL_YAML = """\
# {description}; rebuilt by `python scripts/train.py --version {version}`.
mnist_cnn_{version}:
  name: mnist_cnn
  version: {version}
  architecture:
    _target_: benchmark.nets.SmallCNN
    in_channels: 1
    num_classes: 10
    width: {width}
  checkpoint: pkg://benchmark/weights/mnist_cnn_{version}.pt
  format: state_dict
  sha256: {sha}
  mean: [0.0]
  std: [1.0]
  num_classes: 10
  input_shape: [1, 28, 28]
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    choices = sorted(VERSIONS) + [f"arrests_mlp@{v}" for v in sorted(TABULAR_VERSIONS)]
    parser.add_argument("--version", choices=choices, action="append")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads; fixed so that the bytes do not depend on the machine")
    parser.add_argument("--check", action="store_true",
                        help="only compare the rebuilt sha256 with the committed config")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    status = 0
    tab_blobs: dict[str, bytes] = {}
    for version in args.version or choices:
        t0 = time.time()
        if version.startswith("arrests_mlp@"):
            v = version.split("@")[1]
            blob = train_tabular(v)
            tab_blobs[v] = blob
            stem = f"arrests_mlp_{v}"
        else:
            blob = train(version)
            stem = f"mnist_cnn_{version}"
        sha = hashlib.sha256(blob).hexdigest()
        yaml_path = CONF / f"{stem}.yaml"
        if args.check:
            same = yaml_path.is_file() and sha in yaml_path.read_text()
            print(f"{version if '@' in version else 'mnist_cnn@' + version} sha256 {sha} "
                  f"{'matches' if same else 'DIFFERS from'} {yaml_path.name}")
            status |= 0 if same else 1
            continue
        (WEIGHTS / f"{stem}.pt").write_bytes(blob)
        if version.startswith("arrests_mlp@"):
            schema = _arrests("test").schema
            assert schema is not None
            from benchmark.tabular_models import cardinalities

            yaml_path.write_text(TAB_MODEL_YAML.format(
                version=v, sha=sha, description=TABULAR_VERSIONS[v]["description"],
                columns=", ".join(schema.names), cards=cardinalities(schema),
                hidden=", ".join(map(str, TAB_HIDDEN)), n=len(schema.columns)))
        else:
            yaml_path.write_text(MODEL_YAML.format(version=version, sha=sha, width=WIDTH,
                                                   description=VERSIONS[version]["description"]))
        print(f"{stem}: sha256 {sha} ({time.time() - t0:.0f}s)")
    if set(tab_blobs) == set(TABULAR_VERSIONS):
        rep = fairness_report(tab_blobs)
        for v in sorted(TABULAR_VERSIONS):
            print(f"arrests_mlp@{v} test accuracy {rep[v]['accuracy']:.4f}  demographic parity "
                  f"difference on {FAIR_GROUP} {rep[v]['dp_difference']:.4f} (fairlearn "
                  f"{rep[v]['fairlearn_dp_difference']:.4f})")
        r = rep["reduction"]
        print(f"v1 - v2 DP difference {r['value']:.4f}, paired bootstrap 95% CI "
              f"[{r['ci95'][0]:.4f}, {r['ci95'][1]:.4f}], one-sided p {r['p_one_sided']:.4f} "
              f"({'significant' if r['ci95'][0] > 0 else 'NOT significant'} at 5%)")
    return status


if __name__ == "__main__":
    sys.exit(main())
