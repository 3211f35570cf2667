"""The thread setting shared by `nextclick train` and `nextclick benchmark`: the default,
the check of a requested count, and the warning on a machine that other work keeps busy."""

from __future__ import annotations

import pytest
import torch

from training.fit.threads import MAX_DEFAULT_THREADS, apply_threads, plan_threads


def test_default_is_small_and_never_above_the_available_cores() -> None:
    assert plan_threads(None, cores=1, load=0.0).threads == 1
    assert plan_threads(None, cores=64, load=0.0).threads == MAX_DEFAULT_THREADS
    assert plan_threads(3, cores=64, load=0.0).threads == 3
    with pytest.raises(ValueError, match="--threads must be >= 1"):
        plan_threads(0, cores=2, load=0.0)


def test_warns_only_when_threads_and_load_exceed_the_cores() -> None:
    assert plan_threads(1, cores=2, load=0.2).warning is None
    assert plan_threads(2, cores=4, load=1.5).warning is None
    busy = plan_threads(1, cores=2, load=3.0).warning
    assert busy is not None and "load average is already 3.0" in busy
    assert "--threads 1" not in busy  # nothing to lower
    spinning = plan_threads(2, cores=2, load=1.2).warning
    assert spinning is not None and "try --threads 1" in spinning


def test_apply_sets_torch_and_prints_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    before = torch.get_num_threads()
    try:
        plan = apply_threads(2, warn=True)
        assert torch.get_num_threads() == 2 == plan.threads
        err = capsys.readouterr().err
        assert err == "" if plan.warning is None else err == f"warning: {plan.warning}\n"
    finally:
        torch.set_num_threads(before)
