"""The ``groups`` section: group definitions (label, metadata column,
derived property, intersection), group-metric settings and slice discovery."""

from __future__ import annotations

from typing import Any

from benchmark.core import fields as F
from benchmark.core.errors import ConfigError
from benchmark.core.specs import FeatureSpec, GroupsSpec, SliceSpec
from metrics.groups import MISSING_POLICIES
from metrics.properties import list_properties

GROUPS_KEYS = ("features", "min_size", "missing", "n_boot", "confidence", "tau", "slices")
SLICE_KEYS = ("enabled", "properties", "metadata", "label", "bins", "pairs", "fdr", "min_size",
              "top")
#: Keys each kind of group feature takes.
FEATURE_KEYS: dict[str, tuple[str, ...]] = {
    "label": ("kind",),
    "metadata": ("kind", "column", "csv", "on"),
    "property": ("kind", "property", "bins", "edges"),
    "intersection": ("kind", "of"),
}


def _metadata(name: str, where: str, d: Any) -> FeatureSpec:
    for key in ("column", "csv", "on"):
        F.optional_text(f"{where}.{key}", d.get(key))
    if not d.get("column"):
        raise ConfigError(f"Missing `{where}.column`; a metadata group names its column.")
    return FeatureSpec(name=name, kind="metadata", column=d["column"], csv=d.get("csv"),
                       on=d.get("on"))


def _property(name: str, where: str, d: Any) -> FeatureSpec:
    prop = F.choice(f"{where}.property", d.get("property"), list_properties())
    bins, edges = d.get("bins"), d.get("edges")
    if (bins is None) == (edges is None):
        raise ConfigError(
            f"Expected exactly one of `{where}.bins` (quantile bins) or `{where}.edges` "
            f"(cut points), but got bins={bins!r}, edges={edges!r}."
        )
    if bins is not None:
        bins = F.integer(f"{where}.bins", bins, minimum=2)
    if edges is not None:
        edges = F.numbers(f"{where}.edges", edges)
        if any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise F.fail(f"{where}.edges", "strictly increasing cut points", list(edges))
    return FeatureSpec(name=name, kind="property", property=prop, bins=bins, edges=edges)


def parse_feature(name: str, d: Any) -> FeatureSpec:
    """Validate one entry of ``groups.features``."""
    where = f"groups.features.{name}"
    d = F.mapping(where, d, "a mapping with a `kind`")
    kind = F.choice(f"{where}.kind", d.get("kind"), tuple(FEATURE_KEYS))
    F.check_keys(where, d, FEATURE_KEYS[kind])
    if kind == "metadata":
        return _metadata(name, where, d)
    if kind == "property":
        return _property(name, where, d)
    if kind == "intersection":
        of = F.names(f"{where}.of", d.get("of"))
        if of is None or len(of) != 2 or of[0] == of[1]:
            raise F.fail(f"{where}.of", "a list of two other group features", d.get("of"))
        return FeatureSpec(name=name, kind=kind, of=of)
    return FeatureSpec(name=name, kind=kind)


def parse_slices(d: Any) -> SliceSpec:
    """Validate ``groups.slices`` (absent: slice discovery off)."""
    if d is None:
        return SliceSpec()
    w = "groups.slices"
    d = F.mapping(w, d)
    F.check_keys(w, d, SLICE_KEYS)
    props = F.names(f"{w}.properties", d.get("properties"))
    for p in props or ():
        F.choice(f"{w}.properties", p, list_properties(),
                 f"names among {', '.join(list_properties())}")
    return SliceSpec(
        enabled=F.flag(f"{w}.enabled", d.get("enabled", True)),
        properties=props,
        metadata=F.names(f"{w}.metadata", d.get("metadata")),
        label=F.flag(f"{w}.label", d.get("label", True)),
        bins=F.integer(f"{w}.bins", d.get("bins", 5), minimum=2),
        pairs=F.flag(f"{w}.pairs", d.get("pairs", False)),
        fdr=F.probability(f"{w}.fdr", d.get("fdr", 0.05)),
        min_size=F.integer(f"{w}.min_size", d.get("min_size", 30), minimum=1),
        top=F.integer(f"{w}.top", d.get("top", 5), minimum=1),
    )


def parse_groups(d: Any) -> GroupsSpec:
    """Validate the ``groups`` config section into a ``GroupsSpec``."""
    d = F.mapping("groups", d)
    F.check_keys("groups", d, GROUPS_KEYS)
    feats_cfg = F.mapping("groups.features", d.get("features") or {},
                          "a mapping of name -> group definition")
    features = tuple(parse_feature(str(k), v) for k, v in feats_cfg.items())
    names = [f.name for f in features]
    for f in features:
        for other in f.of:
            if other not in names or other == f.name:
                raise F.fail(f"groups.features.{f.name}.of", f"names among {', '.join(names)}",
                             other)
            if next(g for g in features if g.name == other).kind == "intersection":
                raise F.fail(f"groups.features.{f.name}.of", "features that are not themselves "
                             "intersections", other)
    missing = F.choice("groups.missing", d.get("missing", "error"), MISSING_POLICIES)
    tau = d.get("tau")
    if tau is not None:
        tau = F.numbers("groups.tau", [tau] if isinstance(tau, (int, float)) else tau)
        if any(t < 0 for t in tau):
            raise F.fail("groups.tau", "non-negative distances", list(tau))
    return GroupsSpec(
        features=features,
        min_size=F.integer("groups.min_size", d.get("min_size", 20), minimum=1),
        missing=missing,
        n_boot=F.integer("groups.n_boot", d.get("n_boot", 50), minimum=0),
        confidence=F.probability("groups.confidence", d.get("confidence", 0.95)),
        tau=tau,
        slices=parse_slices(d.get("slices")),
    )
