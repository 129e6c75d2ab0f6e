"""Train the reference model versions on mnist5k's train part.

    python scripts/train.py            # both versions
    python scripts/train.py --version v2

v1: standard training. v2: PGD adversarial training (Madry et al. 2018) at
eps 0.3. Seeded, CPU only, a fixed thread count: the rebuild reproduces the
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
    parser.add_argument("--version", choices=sorted(VERSIONS), action="append")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads; fixed so that the bytes do not depend on the machine")
    parser.add_argument("--check", action="store_true",
                        help="only compare the rebuilt sha256 with the committed config")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    status = 0
    for version in args.version or sorted(VERSIONS):
        t0 = time.time()
        blob = train(version)
        sha = hashlib.sha256(blob).hexdigest()
        yaml_path = CONF / f"mnist_cnn_{version}.yaml"
        if args.check:
            same = yaml_path.is_file() and sha in yaml_path.read_text()
            print(f"mnist_cnn@{version} sha256 {sha} {'matches' if same else 'DIFFERS from'} "
                  f"{yaml_path.name}")
            status |= 0 if same else 1
            continue
        (WEIGHTS / f"mnist_cnn_{version}.pt").write_bytes(blob)
        yaml_path.write_text(MODEL_YAML.format(version=version, sha=sha, width=WIDTH,
                                               description=VERSIONS[version]["description"]))
        print(f"mnist_cnn@{version}: sha256 {sha} ({time.time() - t0:.0f}s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
