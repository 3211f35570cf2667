"""What ``pip install`` leaves: exactly one ONNX Runtime per extra (``onnxruntime`` and
``onnxruntime-gpu`` share the import name, so two installed leave whichever came last)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()
            for requirement in requirements}


def test_exactly_one_onnx_runtime_per_install() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtimes = {"onnxruntime", "onnxruntime-gpu"}
    assert not _names(project["dependencies"]) & runtimes
    extras = {name: _names(requirements)
              for name, requirements in project["optional-dependencies"].items()}
    assert extras["cpu"] & runtimes == {"onnxruntime"}
    assert extras["gpu"] & runtimes == {"onnxruntime-gpu"}
    for name, requirements in extras.items():
        if name not in ("cpu", "gpu"):
            assert not requirements & runtimes, f"[{name}] pulls an ONNX Runtime in"
    makefile = (ROOT / "Makefile").read_text()
    assert "'.[cpu,train,dev]'" in makefile
