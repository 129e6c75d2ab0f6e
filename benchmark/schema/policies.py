"""The policy sections of a run: ``validation`` (pre-run checks),
``reliability`` (evaluation flags), ``sweep`` (multirun jobs) and ``store``."""

from __future__ import annotations

from typing import Any

from benchmark.core import fields as F
from benchmark.core.errors import ConfigError
from benchmark.core.specs import (
    ReliabilitySpec,
    ShardSpec,
    StoreSpec,
    SweepSpec,
    ValidationPolicy,
)
from metrics.checks import get_check

ON_FAIL = ("stop", "report")
POLICY_KEYS = ("on_fail", "data", "model", "skip", "thresholds", "probe_size", "input_range",
               "reference_mean", "reference_std")
RELIABILITY_KEYS = ("enabled", "n_samples", "targeted_top_k", "targeted_max_iter",
                    "budget_s")
SWEEP_KEYS = ("id", "skip_existing", "threads")
SHARD_KEYS = ("index", "count", "block")


def _optional_numbers(where: str, v: Any) -> tuple[float, ...] | None:
    if v is None:
        return None
    return F.numbers(where, v, item=F.finite_number, wanted="a non-empty list of numbers or null")


def _threshold(check: str, key: str, default: Any, v: Any) -> Any:
    """One threshold, typed like its default in the check's registry entry."""
    where = f"validation.thresholds.{check}.{key}"
    if isinstance(default, bool):
        return F.flag(where, v)
    if v is None:
        if default is not None:
            raise F.fail(where, f"a number (null only where the default is null; default {default})",
                         v)
        return None
    value = F.finite_number(where, v)
    if isinstance(default, int) and not isinstance(default, bool):
        if value != int(value) or value < 1:
            raise F.fail(where, "a positive integer", v)
        return int(value)
    if value < 0:
        raise F.fail(where, "a non-negative number", v)
    return value


def _thresholds(raw: Any) -> dict[str, dict[str, Any]]:
    """``validation.thresholds``: per check, only the thresholds it declares."""
    raw = F.mapping("validation.thresholds", raw, "a mapping of check names to thresholds")
    thresholds: dict[str, dict[str, Any]] = {}
    for check, values in raw.items():
        defaults = get_check(str(check)).defaults
        if values is None:
            continue
        values = F.mapping(f"validation.thresholds.{check}", values,
                           "a mapping of threshold names to values")
        for key, v in values.items():
            if key not in defaults:
                valid = ", ".join(defaults) or "none"
                raise ConfigError(
                    f"Unknown threshold `validation.thresholds.{check}.{key}`; check {check!r} "
                    f"takes: {valid}."
                )
            thresholds.setdefault(str(check), {})[str(key)] = _threshold(check, key,
                                                                         defaults[key], v)
    return thresholds


def parse_validation(d: Any) -> ValidationPolicy:
    """Validate the ``validation`` section into a ``ValidationPolicy``."""
    d = F.mapping("validation", d)
    F.check_keys("validation", d, POLICY_KEYS)
    on_fail = F.choice("validation.on_fail", d.get("on_fail", "stop"), ON_FAIL, "stop or report")
    data = F.flag("validation.data", d.get("data", True))
    model = F.flag("validation.model", d.get("model", True))
    skip = d.get("skip") or []
    if not isinstance(skip, (list, tuple)):
        raise F.fail("validation.skip", "a list of check names", skip)
    for name in skip:
        get_check(str(name))
    thresholds = _thresholds(d.get("thresholds") or {})
    probe = F.integer("validation.probe_size", d.get("probe_size", 64), 2)
    rng = _optional_numbers("validation.input_range", d.get("input_range", [0.0, 1.0]))
    if rng is None or len(rng) != 2 or rng[0] >= rng[1]:
        raise F.fail("validation.input_range", "[low, high] with low < high", d.get("input_range"))
    ref_std = _optional_numbers("validation.reference_std", d.get("reference_std"))
    if ref_std is not None and any(s <= 0 for s in ref_std):
        raise F.fail("validation.reference_std", "positive numbers", list(ref_std))
    ref_mean = _optional_numbers("validation.reference_mean", d.get("reference_mean"))
    if (ref_mean is None) != (ref_std is None):
        raise F.fail("validation.reference_mean", "given together with reference_std",
                     d.get("reference_mean"))
    return ValidationPolicy(
        on_fail=on_fail, data=data, model=model,
        skip=tuple(str(s) for s in skip), thresholds=thresholds, probe_size=probe,
        input_range=(rng[0], rng[1]), reference_mean=ref_mean, reference_std=ref_std,
    )


def parse_reliability(d: Any) -> ReliabilitySpec:
    """Validate the ``reliability:`` section (absent: flags on, 32 samples)."""
    if d is None:
        return ReliabilitySpec()
    d = F.mapping("reliability", d)
    F.check_keys("reliability", d, RELIABILITY_KEYS)
    budget = d.get("budget_s")
    if budget is not None:
        budget = F.number("reliability.budget_s", budget)
        if budget <= 0:
            raise F.fail("reliability.budget_s", "a positive number of seconds or null", budget)
    return ReliabilitySpec(
        enabled=F.flag("reliability.enabled", d.get("enabled", True)),
        n_samples=F.integer("reliability.n_samples", d.get("n_samples", 32), minimum=1),
        targeted_top_k=F.integer("reliability.targeted_top_k", d.get("targeted_top_k", 3),
                                 minimum=1),
        targeted_max_iter=F.integer("reliability.targeted_max_iter",
                                    d.get("targeted_max_iter", 100), minimum=1),
        budget_s=budget,
    )


def parse_sweep(d: Any) -> SweepSpec:
    """Validate the ``sweep:`` section."""
    d = F.mapping("sweep", d)
    F.check_keys("sweep", d, SWEEP_KEYS)
    sid = d.get("id")
    if sid is not None and (not isinstance(sid, str) or not sid or "/" in sid):
        raise F.fail("sweep.id", "a non-empty name without '/'", sid)
    skip = d.get("skip_existing", "auto")
    if skip == "auto":
        skip = None
    elif not isinstance(skip, bool):
        raise F.fail("sweep.skip_existing", "true, false or auto", skip)
    threads = d.get("threads", "auto")
    if threads == "auto":
        threads = None
    else:
        threads = F.integer("sweep.threads", threads, 1, "a positive integer or auto")
    return SweepSpec(id=sid, skip_existing=skip, threads=threads)


def parse_store(v: Any) -> StoreSpec | None:
    """The top-level ``store``: the results store's path, or null for none."""
    if v is None:
        return None
    return StoreSpec(path=F.text("store", v))


def parse_shard(shards: Any, d: Any) -> ShardSpec:
    """Validate ``shards`` (N) and the ``shard:`` section (``index``, ``count``, ``block``)."""
    d = {} if d is None else F.mapping("shard", d)
    F.check_keys("shard", d, SHARD_KEYS)
    total = F.optional_integer("shards", shards, 1, "a positive number of shards or null")
    count = F.optional_integer("shard.count", d.get("count"), 1,
                               "a positive number of shards or null")
    if total is not None and count is not None and total != count:
        raise F.fail("shard.count", f"the same number as shards={total} (or null)", count)
    count = count or total or 1
    index = F.optional_integer("shard.index", d.get("index"), 0,
                               "a shard number from 0 or null")
    if index is not None and index >= count:
        raise F.fail("shard.index", f"a shard number from 0 to {count - 1} (shard.count={count})",
                     index)
    block = F.integer("shard.block", d.get("block", 256), 1, "a positive number of samples")
    return ShardSpec(count=count, index=index, block=block)
