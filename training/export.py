"""Export a trained model to an ONNX serving bundle, gated by a parity check.

A bundle is the only thing the service needs (it never imports torch)::

    artifacts/<model>/<version>/
        start.onnx     user state -> next_<session tensor>...          (user-scoped models)
        advance.onnx   item [B] int64 + session state -> next_<session tensor>...
        score.onnx     session state + k (0-d int64) -> scores [B,k] float32, items [B,k] int64
        end.onnx       session + user state -> next_<user tensor>...   (user-scoped models)
        items.txt      raw id of item index i on line i (index 0 = padding, no line)
        popular.json   [[raw_id, count], ...] most popular first (no-session, no-user fallback)
        manifest.json  what the engine reads: state spec, graph inputs/outputs, parity, hashes

The serving interface of ``models.base.SessionModel`` is split into one graph per method
so the service can keep state between clicks in Redis and run only the work a request
needs (advance on a click, score on a recommendation). TopK is appended inside the score
graph so only ``k`` rows of scores cross the ONNX Runtime boundary per request.

Export fails (``ExportError``) unless ONNX Runtime reproduces eager PyTorch within
``PARITY_TOLERANCE`` over several clicks at two batch sizes; the bundle is written into a
hidden temporary folder and renamed into place only after the check passes, so a failed
or interrupted export never leaves a half-written bundle the engine could pick up.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import re
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper
from torch import Tensor, nn

from models import registry
from models.base import SessionModel, StateSpec
from service.engine import sha256_file

FORMAT_VERSION = 1
#: ONNX opset of every graph: 18, the dynamo exporter's native opset (at 17 it writes
#: ``Split(num_outputs=...)``, an opset-18 attribute, and the graph fails validation);
#: ONNX Runtime >= 1.14 runs it.
OPSET = 18
#: Which ``torch.onnx.export`` path builds the graphs. Pinned to the TorchScript exporter
#: (``dynamo=False``): the dynamo exporter of torch 2.13 / onnxscript 0.7 writes ``nn.GRU``
#: with ``linear_before_reset=0`` while PyTorch computes the ``=1`` form, a silent numeric
#: error (pytorch/pytorch#189225, microsoft/onnxscript#2852); the TorchScript exporter gets
#: it right and exports our small per-click graphs ~10x faster (0.15 s vs 1.5 s a graph).
#: ``"dynamo"`` stays selectable (``--exporter``); the parity gate judges either way.
EXPORTER = "torchscript"
PARITY_TOLERANCE = 1e-4
PARITY_STEPS = 5
PARITY_BATCH_SIZES = (1, 3)
#: Top-k width compared in the parity check (clamped to n_items).
PARITY_TOP_K = 200
POPULAR_LIMIT = 1000
_VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_BATCH_AXIS = "batch"


class ExportError(ValueError):
    """The model cannot be exported faithfully (parity failure, bad input, name clash).

    A ``ValueError`` so the CLI dispatcher reports it as a one-line user-facing error."""


# ---- graph wrappers: one nn.Module per serving method, tensors in / tuple out ------------
class _GraphWrapper(nn.Module):
    """Base of the wrappers. A fresh nn.Module starts in training mode, and the exporter
    restores the *wrapper's* mode recursively after tracing, which would silently switch
    the wrapped model back to training (dropout on) for the parity check. So a wrapper
    always mirrors the model's mode."""

    def __init__(self, model: SessionModel):
        super().__init__()
        self.model = model
        self.train(model.training)


class _StartGraph(_GraphWrapper):
    """user state tensors -> session state tensors (HRNN: h_s0 = tanh(W_init c_u + b))."""

    def __init__(self, model: SessionModel):
        super().__init__(model)
        self.user_names = [s.name for s in model.user_spec()]
        self.session_names = [s.name for s in model.session_spec()]

    def forward(self, *user_tensors: Tensor) -> tuple[Tensor, ...]:
        user = dict(zip(self.user_names, user_tensors, strict=True))
        state = self.model.start_session(user, user_tensors[0].shape[0])
        return tuple(state[name] for name in self.session_names)


class _AdvanceGraph(_GraphWrapper):
    """item [B] + session state -> next session state (one click per row; 0 = no-op)."""

    def __init__(self, model: SessionModel):
        super().__init__(model)
        self.session_names = [s.name for s in model.session_spec()]

    def forward(self, item: Tensor, *session_tensors: Tensor) -> tuple[Tensor, ...]:
        state = dict(zip(self.session_names, session_tensors, strict=True))
        new_state = self.model.advance(item, state)
        return tuple(new_state[name] for name in self.session_names)


class _ScoreGraph(_GraphWrapper):
    """session state -> full score matrix; TopK is appended afterwards in ONNX (see
    ``_append_top_k``) because a runtime ``k`` cannot be traced through ``torch.topk``."""

    def __init__(self, model: SessionModel):
        super().__init__(model)
        self.session_names = [s.name for s in model.session_spec()]

    def forward(self, *session_tensors: Tensor) -> Tensor:
        state = dict(zip(self.session_names, session_tensors, strict=True))
        return self.model.score(state)


class _EndGraph(_GraphWrapper):
    """session + user state -> next user state (HRNN's GRU_usr update)."""

    def __init__(self, model: SessionModel):
        super().__init__(model)
        self.session_names = [s.name for s in model.session_spec()]
        self.user_names = [s.name for s in model.user_spec()]

    def forward(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        n_session = len(self.session_names)
        session = dict(zip(self.session_names, tensors[:n_session], strict=True))
        user = dict(zip(self.user_names, tensors[n_session:], strict=True))
        new_user = self.model.end_session(session, user)
        return tuple(new_user[name] for name in self.user_names)


# ---- helpers -------------------------------------------------------------------------------
def _next(name: str) -> str:
    return f"next_{name}"


def _example_state(specs: list[StateSpec], batch_size: int, n_items: int,
                   generator: torch.Generator) -> dict[str, Tensor]:
    """Non-trivial state for tracing and parity: zeros would hide wiring mistakes (a
    graph that ignores its input state would still match)."""
    state: dict[str, Tensor] = {}
    for spec in specs:
        shape = (batch_size, *spec.shape)
        if spec.dtype == "float32":
            state[spec.name] = 0.5 * torch.randn(shape, generator=generator)
        else:
            state[spec.name] = torch.randint(0, n_items + 1, shape, generator=generator)
    return state


def _torch_export(module: nn.Module, args: tuple[Tensor, ...], path: Path,
                  input_names: list[str], output_names: list[str], exporter: str) -> None:
    """Trace ``module`` to ``path`` with a dynamic batch dimension on every tensor."""
    if exporter == "torchscript":
        axes: dict[str, dict[int, str]] = {name: {0: _BATCH_AXIS}
                                           for name in (*input_names, *output_names)}
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated upstream; we pin it deliberately (see
            # EXPORTER), so its DeprecationWarning and tracer warnings are noise here.
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, str(path), dynamo=False, opset_version=OPSET,
                              input_names=input_names, output_names=output_names,
                              dynamic_axes=axes, do_constant_folding=True)
    elif exporter == "dynamo":
        batch = torch.export.Dim(_BATCH_AXIS, min=1)
        shapes = _dynamic_shapes(module, len(args), {0: batch})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, args, dynamo=True, opset_version=OPSET,
                                        input_names=input_names, output_names=output_names,
                                        dynamic_shapes=shapes, verbose=False)
        if program is None:  # pragma: no cover - torch returns the program when f is None
            raise ExportError(f"dynamo exporter returned nothing for {path.name}")
        program.save(str(path))
    else:
        raise ExportError(f"unknown exporter {exporter!r}; use 'torchscript' or 'dynamo'")


def _dynamic_shapes(module: nn.Module, n_args: int, axis: dict[int, Any]) -> tuple[Any, ...]:
    """torch.export wants ``dynamic_shapes`` shaped like ``forward``'s signature: one
    entry per named parameter and one nested tuple for ``*args``."""
    shapes: list[Any] = []
    remaining = n_args
    for parameter in inspect.signature(module.forward).parameters.values():
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            shapes.append(tuple(axis for _ in range(remaining)))
            remaining = 0
        elif remaining:
            shapes.append(axis)
            remaining -= 1
    return tuple(shapes)


def _append_top_k(path: Path, scores_name: str) -> None:
    """Rewrite the score graph in place: add a 0-d int64 input ``k`` and replace the full
    score output by ``TopK(largest, sorted)`` -> ``scores`` [B,k] float32, ``items`` [B,k]
    int64. Padding column 0 is -inf in every model, so it is never chosen while
    k <= n_items."""
    model = onnx.load(str(path))
    graph = model.graph
    k_input = helper.make_tensor_value_info("k", TensorProto.INT64, [])
    graph.input.append(k_input)
    shape_1 = helper.make_tensor("topk_k_shape", TensorProto.INT64, [1], [1])
    graph.initializer.append(shape_1)
    graph.node.append(helper.make_node("Reshape", ["k", "topk_k_shape"], ["topk_k"],
                                       name="topk_k_reshape"))
    graph.node.append(helper.make_node("TopK", [scores_name, "topk_k"], ["scores", "items"],
                                       name="topk", axis=-1, largest=1, sorted=1))
    kept = [out for out in graph.output if out.name != scores_name]
    del graph.output[:]
    graph.output.extend(kept)
    graph.output.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT,
                                                      [_BATCH_AXIS, "k"]))
    graph.output.append(helper.make_tensor_value_info("items", TensorProto.INT64,
                                                      [_BATCH_AXIS, "k"]))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _graph_io(path: Path) -> tuple[list[str], list[str]]:
    """Input and output names as written (exporters drop inputs a graph does not use)."""
    model = onnx.load(str(path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    return inputs, [o.name for o in model.graph.output]


def export_graphs(model: SessionModel, folder: Path, *, exporter: str = EXPORTER,
                  seed: int = 0) -> dict[str, dict[str, Any]]:
    """Write start/advance/score/end.onnx (those the model needs) into ``folder`` and
    return the manifest's ``graphs`` section. ``model`` must be in eval mode."""
    session_spec, user_spec = model.session_spec(), model.user_spec()
    session_names = [s.name for s in session_spec]
    user_names = [s.name for s in user_spec]
    generator = torch.Generator().manual_seed(seed)
    batch = 2  # trace at B=2 so no size-1 broadcasting gets baked into the graph
    session = _example_state(session_spec, batch, model.n_items, generator)
    user = _example_state(user_spec, batch, model.n_items, generator)
    item = torch.randint(1, model.n_items + 1, (batch,), generator=generator)
    session_args = tuple(session[name] for name in session_names)
    user_args = tuple(user[name] for name in user_names)

    plans: list[tuple[str, nn.Module, tuple[Tensor, ...], list[str], list[str]]] = []
    if user_spec:
        plans.append(("start", _StartGraph(model), user_args, user_names,
                      [_next(n) for n in session_names]))
    if session_spec:
        plans.append(("advance", _AdvanceGraph(model), (item, *session_args),
                      ["item", *session_names], [_next(n) for n in session_names]))
    plans.append(("score", _ScoreGraph(model), session_args, session_names, ["full_scores"]))
    if user_spec:
        plans.append(("end", _EndGraph(model), (*session_args, *user_args),
                      [*session_names, *user_names], [_next(n) for n in user_names]))

    graphs: dict[str, dict[str, Any]] = {}
    for role, module, args, input_names, output_names in plans:
        path = folder / f"{role}.onnx"
        try:
            with torch.no_grad():
                _torch_export(module, args, path, input_names, output_names, exporter)
            if role == "score":
                _append_top_k(path, "full_scores")
            onnx.checker.check_model(str(path))
        except ExportError:
            raise
        except Exception as exc:  # exporter errors are long; keep the cause chained
            raise ExportError(f"{model.name}: exporting {role}.onnx failed: "
                              f"{type(exc).__name__}: {exc}") from exc
        inputs, outputs = _graph_io(path)
        graphs[role] = {"file": path.name, "inputs": inputs, "outputs": outputs}
    return graphs


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


def check_parity(model: SessionModel, folder: Path, graphs: dict[str, dict[str, Any]], *,
                 steps: int = PARITY_STEPS, batch_sizes: Sequence[int] = PARITY_BATCH_SIZES,
                 tolerance: float = PARITY_TOLERANCE, seed: int = 1) -> dict[str, Any]:
    """Run eager PyTorch and ONNX Runtime (CPU) side by side: start, ``steps`` clicks
    (scoring before the first and after each), end, at each batch size; each side feeds
    its own outputs forward so drift accumulates as it would in serving. A zero click is
    mixed in to check the no-op rule. Raises ``ExportError`` listing the mismatches."""
    if model.training:
        raise ExportError(f"{model.name}: parity must run in eval mode (call model.eval())")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sessions = {role: ort.InferenceSession(str(folder / spec["file"]), options,
                                           providers=["CPUExecutionProvider"])
                for role, spec in graphs.items()}
    session_spec, user_spec = model.session_spec(), model.user_spec()
    recorder = _ParityRecorder(model.name, tolerance)
    generator = torch.Generator().manual_seed(seed)
    k = min(model.n_items, PARITY_TOP_K)
    clicks = 0

    def run(role: str, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        declared = graphs[role]["inputs"]
        outputs = sessions[role].run(None, {name: feed[name] for name in declared})
        return dict(zip(graphs[role]["outputs"], outputs, strict=True))

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
            user = _example_state(user_spec, batch, model.n_items, generator)
            state = model.start_session(user if user_spec else {}, batch)
            if "start" in graphs:
                result = run("start", {n: t.numpy() for n, t in user.items()})
                state_ort = {s.name: result[_next(s.name)] for s in session_spec}
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
                state_ort = {s.name: result[_next(s.name)] for s in session_spec}
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
                                     result[_next(spec.name)], exact=spec.dtype == "int64")
    if recorder.failures:
        raise ExportError(f"{model.name}: ONNX Runtime does not match PyTorch "
                          f"(tolerance {tolerance:g}): " + "; ".join(recorder.failures))
    return {"max_abs_diff": recorder.max_diff, "clicks": clicks,
            "batch_sizes": list(batch_sizes), "steps": steps, "tolerance": tolerance,
            "per_graph": recorder.per_graph}


# ---- bundle ---------------------------------------------------------------------------------
def _default_version() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _library_versions() -> dict[str, str]:
    return {"torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": ort.__version__, "python": platform.python_version()}


def _write_items(path: Path, items: list[str]) -> None:
    for line, raw in enumerate(items, start=1):
        if not raw or "\n" in raw or "\r" in raw:
            raise ExportError(f"item vocabulary line {line}: id {raw!r} is empty or "
                              f"contains a line break")
    path.write_text("".join(f"{raw}\n" for raw in items), encoding="utf-8")


def export_bundle(model: SessionModel, items: list[str], out_root: Path, *,
                  version: str | None = None, popular: list[tuple[str, int]] | None = None,
                  metrics: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
                  exporter: str = EXPORTER) -> Path:
    """Export ``model`` to ``out_root/<model.name>/<version>/`` and return that path.

    ``items[i - 1]`` is the raw id of item index ``i``; ``popular`` is (raw id, count),
    most popular first (at most ``POPULAR_LIMIT`` kept); ``data`` is ``{"path",
    "fingerprint", "stats"}`` of the training dataset. Raises ``ExportError`` on a parity
    failure, a vocabulary that does not match the model, or an existing explicit version;
    nothing is left behind on failure."""
    if len(items) != model.n_items:
        raise ExportError(f"{model.name}: vocabulary has {len(items)} items but the model "
                          f"was built for n_items={model.n_items}")
    if version is not None and not _VERSION_PATTERN.match(version):
        raise ExportError(f"version {version!r}: use letters, digits, '.', '_' or '-' "
                          f"(not starting with '.' or '-', at most 100 characters)")
    model_root = Path(out_root) / model.name
    model_root.mkdir(parents=True, exist_ok=True)
    if version is not None and (model_root / version).exists():
        raise ExportError(f"{model_root / version} already exists; choose another --version")

    was_training = model.training
    model.eval()
    # Hidden (dot) folder next to the target: the engine ignores it, and the final rename
    # stays on one filesystem, so it is atomic.
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=model_root))
    try:
        graphs = export_graphs(model, staging, exporter=exporter)
        model.eval()  # belt and braces: exporters restore modes on their own terms
        parity = check_parity(model, staging, graphs)
        _write_items(staging / "items.txt", items)
        popular_rows = [[str(raw), int(count)] for raw, count in (popular or [])[:POPULAR_LIMIT]]
        (staging / "popular.json").write_text(json.dumps(popular_rows) + "\n", encoding="utf-8")
        files = {path.name: sha256_file(path) for path in sorted(staging.iterdir())}
        version_name = version or _default_version()
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "model": model.name,
            "version": version_name,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "n_items": model.n_items,
            "config": model.config.to_dict(),
            "state": {"session": [s.to_json() for s in model.session_spec()],
                      "user": [s.to_json() for s in model.user_spec()]},
            "graphs": graphs,
            "opset": OPSET,
            "exporter": exporter,
            "data": data or {},
            "metrics": metrics or {},
            "parity": parity,
            "libraries": _library_versions(),
            "files": files,
        }
        target = _claim_target(model_root, version_name, explicit=version is not None)
        manifest["version"] = target.name
        (staging / "manifest.json").write_text(
            json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
        try:
            os.rename(staging, target)
        except OSError as exc:
            raise ExportError(f"cannot move the bundle into {target}: {exc}") from exc
        return target
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        model.train(was_training)


def _claim_target(model_root: Path, version: str, *, explicit: bool) -> Path:
    """The final bundle path: ``version`` itself, or with ``-02``, ``-03``... appended when
    an automatic (timestamp) version is already taken (two exports in one second)."""
    target = model_root / version
    if not target.exists():
        return target
    if explicit:
        raise ExportError(f"{target} already exists; choose another --version")
    for suffix in range(2, 1000):
        candidate = model_root / f"{version}-{suffix:02d}"
        if not candidate.exists():
            return candidate
    raise ExportError(f"too many bundles named {version}-* under {model_root}")


def export_random_bundle(model_name: str, n_items: int, out_root: Path, *, n_users: int = 1,
                         version: str | None = None, seed: int = 0,
                         **config: Any) -> Path:
    """Export an untrained ``model_name`` with random weights and synthetic item ids
    (``item-1`` ...): a realistically sized bundle for latency benchmarks and load tests
    without training data. Non-neural models are fitted on random sessions."""
    torch.manual_seed(seed)
    model = registry.build(model_name, n_items, n_users, **config)
    if model.batching == "counts":
        generator = torch.Generator().manual_seed(seed)
        model.fit_counts([torch.randint(1, n_items + 1, (8,), generator=generator).tolist()
                          for _ in range(max(100, n_items // 10))])
    items = [f"item-{index}" for index in range(1, n_items + 1)]
    popular = [(items[index], n_items - index) for index in range(min(POPULAR_LIMIT, n_items))]
    return export_bundle(model, items, out_root, version=version, popular=popular,
                         data={"path": None, "fingerprint": "random", "stats": {}},
                         metrics={"note": "random weights, not trained"})


def popular_items(train_items: Sequence[int], items: list[str],
                  limit: int = POPULAR_LIMIT) -> list[tuple[str, int]]:
    """(raw id, click count) of the ``limit`` most clicked training items, most popular
    first, ties by item index (deterministic across exports of the same data)."""
    counts = np.bincount(np.asarray(train_items, dtype=np.int64), minlength=len(items) + 1)
    counts[0] = 0
    order = np.lexsort((np.arange(len(counts)), -counts))
    return [(items[index - 1], int(counts[index])) for index in order[:limit]
            if counts[index] > 0]


# ---- CLI ------------------------------------------------------------------------------------
def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export", help="export a trained run to an ONNX bundle (parity-checked)",
        description="Export RUN to OUT/<model>/<version>/ (start/advance/score/end.onnx, "
                    "items.txt, popular.json, manifest.json). Fails, writing nothing, unless "
                    "ONNX Runtime matches PyTorch within 1e-4.")
    parser.add_argument("--run", required=True, type=Path, help="training run folder")
    parser.add_argument("--out", type=Path, default=Path("artifacts"),
                        help="artifacts root (default: artifacts/)")
    parser.add_argument("--version", default=None,
                        help="bundle version (default: UTC time YYYYMMDDTHHMMSSZ)")
    parser.add_argument("--exporter", choices=["torchscript", "dynamo"], default=EXPORTER,
                        help=f"torch.onnx exporter (default: {EXPORTER}; see training/export.py)")
    parser.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from training.checkpoint import load_run  # lazy: owned by the training package
    from training.dataset import PreparedDataset

    run_dir = Path(args.run)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    model, info = load_run(run_dir)
    dataset_path = info.get("dataset")
    if not dataset_path:
        raise ExportError(f"{run_dir}: run info names no dataset (field 'dataset')")
    dataset = PreparedDataset.load(dataset_path)
    popular = popular_items(dataset.train["item"].to_list(), dataset.items)
    metrics: dict[str, Any] = {}
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists():
        try:
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ExportError(f"{metrics_path}: not valid JSON (line {exc.lineno}: "
                              f"{exc.msg})") from exc
    data = {"path": str(dataset_path), "fingerprint": dataset.fingerprint,
            "stats": dataset.stats}
    bundle = export_bundle(model, dataset.items, Path(args.out), version=args.version,
                           popular=popular, metrics=metrics, data=data,
                           exporter=args.exporter)
    parity = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))["parity"]
    print(bundle)
    print(f"parity: max abs diff {parity['max_abs_diff']:.3g} (tolerance "
          f"{parity['tolerance']:g}) over {parity['clicks']} clicks at batch sizes "
          f"{parity['batch_sizes']}; per graph: "
          + ", ".join(f"{g}={d:.3g}" for g, d in parity["per_graph"].items()))
    return 0
