"""``rtb list``: what the config groups offer (datasets, model versions, attacks, ...)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from benchmark.commands.errors import error

GROUPS = ("data", "model", "attack", "corruption", "fault")


def list_main(args: Sequence[str]) -> int:
    """``rtb list``: what the config groups offer."""
    from benchmark.compose import group_options, read_option
    from benchmark.console import format_table

    parser = argparse.ArgumentParser(prog="rtb list", description=list_main.__doc__)
    parser.add_argument("group", nargs="?", help="only this config group (data, model, attack, ...)")
    ns = parser.parse_args(args)
    groups = [ns.group] if ns.group else list(GROUPS)
    for group in groups:
        options = group_options(group)
        if not options:
            return error(f"Unknown config group {group!r}; expected one of: data, model, attack, "
                         "corruption, fault.")
        rows = []
        for opt in options:
            body = read_option(group, opt)
            if group == "model":
                inner = body.get(opt, body)
                rows.append([opt, f"{inner.get('name')}@{inner.get('version')}",
                             str(inner.get("checkpoint", ""))])
            elif group == "attack":
                inner = body.get(opt, body)
                rows.append([opt, str(inner.get("_target_", "")).removeprefix("art.attacks.evasion."),
                             f"eps={inner.get('eps')}"])
            elif group == "data":
                rows.append([opt, str(body.get("loader", opt)),
                             "built-in" if not body.get("root") and body.get("loader") in
                             ("mnist5k", "digits") else "needs data.root"])
            elif group == "corruption":
                rows.append([opt, f"{len(body.get('corruptions') or [])} corruptions",
                             f"severities={body.get('severities')} baseline={body.get('baseline')}"])
            elif group == "fault":
                rows.append([opt, f"{len(body.get('faults') or {})} faults",
                             ", ".join(body.get("faults") or {})])
            else:
                rows.append([opt, "", ""])
        print(f"\n{group} (select with {group}=NAME" +
              (f" or {group}=[A,B]" if group in ("model", "attack") else "") + ")")
        print(format_table(["option", "what", "details"], rows, align="lll"))
    return 0
