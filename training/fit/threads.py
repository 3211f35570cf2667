"""CPU threads for torch training: a default from the cores this process may use, and a
warning when other work already keeps those cores busy (``nextclick train`` and
``nextclick benchmark`` share it).

Why this matters: torch's default is one intra-op thread per core, and its OpenMP threads
spin at every barrier. On a 2-core machine that other work also uses, one HRNN-Init epoch
of ``make run`` took 304 s with the default against 16 s with one thread, with the same
result. The models here are small (hidden sizes of 100, batches of 50-512), so a second
thread gains little even on an idle machine (docs/operations.md#training-threads has the
measurement), and more than ``MAX_DEFAULT_THREADS`` never paid off.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

#: the most threads the default picks; more is only a help for much larger models
MAX_DEFAULT_THREADS = 1


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and ``taskset``
    narrow), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_threads(cores: int | None = None) -> int:
    """The default ``--threads``: the available cores, at most ``MAX_DEFAULT_THREADS``."""
    return max(1, min(available_cores() if cores is None else cores, MAX_DEFAULT_THREADS))


@dataclass(frozen=True)
class ThreadPlan:
    """The thread count a run uses and, when the machine is busy, why it may be slow."""

    threads: int
    cores: int
    load: float | None
    warning: str | None


def plan_threads(requested: int | None, *, cores: int | None = None,
                 load: float | None = None) -> ThreadPlan:
    """``requested`` (``--threads``) or the default, checked, with a one-line warning when
    the run is oversubscribed: its threads plus the 1-minute load average of the machine
    (work already running) exceed the available cores. ``cores`` and ``load`` are for
    tests; by default they are read from the system."""
    if requested is not None and requested < 1:
        raise ValueError(f"--threads must be >= 1, got {requested}")
    cores = available_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = None
    threads = requested if requested is not None else default_threads(cores)
    warning = None
    if load is not None and threads + load > cores + 0.5:
        warning = (f"{threads} torch thread(s) on {cores} available core(s) while the "
                   f"load average is already {load:.1f}: other work competes for the cores, "
                   "so training will be slower than usual")
        if threads > 1:
            warning += " (spinning threads suffer most: try --threads 1)"
    return ThreadPlan(threads=threads, cores=cores, load=load, warning=warning)


def apply_threads(requested: int | None, *, warn: bool = True) -> ThreadPlan:
    """Set torch's intra-op thread count from ``plan_threads`` and print its warning (one
    line on stderr). Returns the plan."""
    import sys

    import torch

    plan = plan_threads(requested)
    torch.set_num_threads(plan.threads)
    if warn and plan.warning:
        print(f"warning: {plan.warning}", file=sys.stderr)
    return plan
