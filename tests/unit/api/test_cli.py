"""`modelmonitor crd`: print, write, check."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from modelmonitor.api.crd import render_crd_yaml
from modelmonitor.api.reference import render_reference
from modelmonitor.cli import main


def test_prints_the_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd"]) == 0
    out = capsys.readouterr().out
    assert out == render_crd_yaml()
    assert yaml.safe_load(out)["kind"] == "CustomResourceDefinition"


def test_writes_the_crd_and_then_checks_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "crds" / "mm.yaml"
    assert main(["crd", "--output", str(target)]) == 0
    assert target.read_text() == render_crd_yaml()
    assert main(["crd", "--check", str(target)]) == 0
    assert capsys.readouterr().out == ""


def test_check_fails_with_a_diff_when_the_file_is_stale(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "mm.yaml"
    stale.write_text(render_crd_yaml().replace("shortNames:\n    - mm", "shortNames:\n    - monitor"))
    assert main(["crd", "--check", str(stale)]) == 1
    captured = capsys.readouterr()
    assert "-    - monitor" in captured.out and "+    - mm" in captured.out
    assert "modelmonitor crd --output" in captured.err


def test_check_fails_when_the_file_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd", "--check", str(tmp_path / "absent.yaml")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_markdown_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd", "--markdown"]) == 0
    assert capsys.readouterr().out == render_reference()
    doc = tmp_path / "ref.md"
    assert main(["crd", "--markdown", "--output", str(doc)]) == 0
    assert main(["crd", "--markdown", "--check", str(doc)]) == 0
    doc.write_text("old\n")
    assert main(["crd", "--markdown", "--check", str(doc)]) == 1


def test_output_and_check_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["crd", "--output", "a", "--check", "b"])
    assert exit_info.value.code == 2
