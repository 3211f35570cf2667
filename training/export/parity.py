"""The parity gate: a bundle is written only when ONNX Runtime reproduces eager PyTorch
within ``PARITY_TOLERANCE`` over several clicks at several batch sizes (start, clicks with
scores before the first and after each, end), each side feeding its own outputs forward
so drift accumulates as it would in serving."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import Tensor

from bundle import GraphSpec, next_name
from models.base import SessionModel
from training.export.graphs import ExportError, example_state

PARITY_TOLERANCE = 1e-4
PARITY_STEPS = 5
PARITY_BATCH_SIZES = (1, 7, 64)
#: Top-k width compared in the parity check (clamped to n_items).
PARITY_TOP_K = 200


# ---- parity ---------------------------------------------------------------------------------
def _max_abs_diff(expected: np.ndarray, actual: np.ndarray) -> float:
    """Max |expected - actual|, where equal infinities count as 0 and NaN as infinite."""
    if expected.shape != actual.shape:
        return float("inf")
    if expected.size == 0:
        return 0.0
    left, right = expected.astype(np.float64), actual.astype(np.float64)
    same = left == right  # also true for matching infinities
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.abs(left - right))
    diff = np.where(np.isnan(diff), np.inf, diff)
    return float(diff.max())


class _ParityRecorder:
    def __init__(self, model_name: str, tolerance: float):
        self.model_name = model_name
        self.tolerance = tolerance
        self.max_diff = 0.0
        self.per_graph: dict[str, float] = {}
        self.failures: list[str] = []

    def compare(self, graph: str, what: str, expected: Tensor | np.ndarray,
                actual: np.ndarray, exact: bool = False) -> None:
        reference = expected.detach().cpu().numpy() if isinstance(expected, Tensor) else expected
        diff = _max_abs_diff(reference, actual)
        self.per_graph[graph] = max(self.per_graph.get(graph, 0.0), diff)
        self.max_diff = max(self.max_diff, diff)
        limit = 0.0 if exact else self.tolerance
        if not diff <= limit and len(self.failures) < 10:
            self.failures.append(f"{what}: max abs diff {diff:.3g} > {limit:g}"
                                 if reference.shape == actual.shape else
                                 f"{what}: shape {actual.shape} != expected {reference.shape}")


def _untied_positions(sorted_scores: np.ndarray, k: int, tolerance: float) -> np.ndarray:
    """Mask [B, k] of top-k positions whose score is separated from both neighbours in
    the full descending order by more than ``tolerance`` (so the item there is unique)."""
    gap_before = np.full(sorted_scores.shape, np.inf)
    gap_after = np.full(sorted_scores.shape, np.inf)
    with np.errstate(invalid="ignore"):
        gaps = sorted_scores[:, :-1] - sorted_scores[:, 1:]
    gaps = np.where(np.isnan(gaps), 0.0, gaps)  # -inf - -inf: a tie
    gap_before[:, 1:] = gaps
    gap_after[:, :-1] = gaps
    finite = np.isfinite(sorted_scores)
    mask: np.ndarray = ((gap_before > tolerance) & (gap_after > tolerance) & finite)[:, :k]
    return mask


def check_parity(model: SessionModel, folder: Path, graphs: dict[str, GraphSpec], *,
                 steps: int = PARITY_STEPS, batch_sizes: Sequence[int] = PARITY_BATCH_SIZES,
                 tolerance: float = PARITY_TOLERANCE, seed: int = 1) -> dict[str, Any]:
    """Run eager PyTorch and ONNX Runtime (CPU) side by side: start, ``steps`` clicks
    (scoring before the first and after each), end, at each batch size; each side feeds
    its own outputs forward so drift accumulates as it would in serving. A zero click is
    mixed in to check the no-op rule. Raises ``ExportError`` listing the mismatches."""
    if model.training:
        raise ExportError(f"{model.name}: parity must run in eval mode (call model.eval())")
    from service.engine import session_options

    options = session_options()
    sessions = {role: ort.InferenceSession(str(folder / spec.file), options,
                                           providers=["CPUExecutionProvider"])
                for role, spec in graphs.items()}
    session_spec, user_spec = model.session_spec(), model.user_spec()
    recorder = _ParityRecorder(model.name, tolerance)
    generator = torch.Generator().manual_seed(seed)
    k = min(model.n_items, PARITY_TOP_K)
    clicks = 0

    def run(role: str, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        declared = graphs[role].inputs
        outputs = sessions[role].run(None, {name: feed[name] for name in declared})
        return dict(zip(graphs[role].outputs, outputs, strict=True))

    def compare_scores(where: str, state_torch: dict[str, Tensor],
                       state_ort: dict[str, np.ndarray]) -> None:
        full = model.score(state_torch).detach().cpu().numpy()
        order = np.argsort(-full, axis=1, kind="stable")
        sorted_full = np.take_along_axis(full, order, axis=1)
        result = run("score", {**state_ort, "k": np.array(k, dtype=np.int64)})
        recorder.compare("score", f"top-{k} scores {where}", sorted_full[:, :k],
                         result["scores"])
        if result["items"].shape != (full.shape[0], k):
            recorder.failures.append(f"top-{k} items {where}: shape {result['items'].shape}")
            return
        untied = _untied_positions(sorted_full, k, 10 * tolerance)
        wrong = (order[:, :k] != result["items"]) & untied
        if wrong.any():
            recorder.failures.append(f"top-{k} items {where}: {int(wrong.sum())} untied "
                                     f"positions hold a different item")

    with torch.no_grad():
        for batch in batch_sizes:
            user = example_state(user_spec, batch, model.n_items, generator)
            state = model.start_session(user if user_spec else {}, batch)
            if "start" in graphs:
                result = run("start", {n: t.numpy() for n, t in user.items()})
                state_ort = {s.name: result[next_name(s.name)] for s in session_spec}
                for spec in session_spec:
                    recorder.compare("start", f"B={batch} start {spec.name}",
                                     state[spec.name], state_ort[spec.name],
                                     exact=spec.dtype == "int64")
            else:
                state_ort = {n: t.numpy().copy() for n, t in state.items()}
            compare_scores(f"B={batch} at session start", state, state_ort)
            for step in range(steps):
                item = torch.randint(1, model.n_items + 1, (batch,), generator=generator)
                if batch > 1 and step == 1:
                    item[batch // 2] = 0  # padding click: must leave that row unchanged
                clicks += batch
                if "advance" not in graphs:
                    continue
                state = model.advance(item, state)
                result = run("advance", {"item": item.numpy(), **state_ort})
                state_ort = {s.name: result[next_name(s.name)] for s in session_spec}
                for spec in session_spec:
                    recorder.compare("advance", f"B={batch} click {step + 1} {spec.name}",
                                     state[spec.name], state_ort[spec.name],
                                     exact=spec.dtype == "int64")
                compare_scores(f"B={batch} after click {step + 1}", state, state_ort)
            if "end" in graphs:
                new_user = model.end_session(state, user)
                result = run("end", {**state_ort, **{n: t.numpy() for n, t in user.items()}})
                for spec in user_spec:
                    recorder.compare("end", f"B={batch} end {spec.name}", new_user[spec.name],
                                     result[next_name(spec.name)], exact=spec.dtype == "int64")
    if recorder.failures:
        raise ExportError(f"{model.name}: ONNX Runtime does not match PyTorch "
                          f"(tolerance {tolerance:g}): " + "; ".join(recorder.failures))
    return {"max_abs_diff": recorder.max_diff, "clicks": clicks,
            "batch_sizes": list(batch_sizes), "steps": steps, "tolerance": tolerance,
            "per_graph": recorder.per_graph}
