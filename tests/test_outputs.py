"""Output paths are checked before any work (``benchmark.outputs``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.core.errors import ConfigError, UserError
from benchmark.outputs import check_output_dir, check_output_file, check_run_outputs, write_text
from benchmark.schema import parse_data


def test_output_file_checks(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    assert check_output_file("f", tmp_path / "new" / "deeper" / "o.xml") == tmp_path / "new" / "deeper" / "o.xml"
    with pytest.raises(UserError, match="is a file, not a directory"):
        check_output_file("f", tmp_path / "afile" / "o.xml")
    with pytest.raises(UserError, match="it is a directory"):
        check_output_file("f", tmp_path)
    with pytest.raises(UserError, match="it is a file"):
        check_output_dir("d", tmp_path / "afile")
    assert write_text("f", tmp_path / "a" / "b.txt", "hi").read_text() == "hi"


@pytest.mark.parametrize(("args", "ok"), [
    ([], True),
    (["hydra.run.dir={tmp}/runs/${{now:%H}}"], True),
    (["hydra.run.dir={tmp}/afile/run"], False),
    (["hydra.run.dir={tmp}/afile/${{name}}"], False),
    (["hydra.run.dir={tmp}/afile-${{name}}"], True),
    (["-m", "hydra.run.dir={tmp}/afile/run"], True),
    (["-m", "hydra.sweep.dir={tmp}/afile/sweep"], False),
])
def test_run_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str],
                     ok: bool) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    args = [a.format(tmp=tmp_path) for a in args]
    if ok:
        check_run_outputs(args)
    else:
        with pytest.raises(UserError, match="is a file"):
            check_run_outputs(args)


def test_data_options_are_the_loaders_own() -> None:
    assert parse_data({"loader": "cifar10c", "options": {"severity": 3}}).options == {"severity": 3}
    assert parse_data({"loader": "npz", "options": {"check_range": False}}).options
    with pytest.raises(ConfigError, match="`data.options.sevrity`; expected one of: corruption, "
                                          "severity, classes"):
        parse_data({"loader": "cifar10c", "options": {"sevrity": 3}})
    with pytest.raises(ConfigError, match="the 'digits' loader reads no options"):
        parse_data({"loader": "digits", "options": {"x": 1}})
