"""The ONNX graphs of a serving bundle, one per serving method of ``models.base.SessionModel``
(``start``, ``advance``, ``score`` with TopK appended, ``end``), traced with a dynamic batch
dimension; the bundle layout they belong to is ``bundle.manifest``.

The serving interface is split into one graph per method so the service can keep state
between clicks in Redis and run only the work a request needs (advance on a click, score on
a recommendation). TopK is appended inside the score graph so only ``k`` rows of scores
cross the ONNX Runtime boundary per request.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from onnx import TensorProto, helper
from torch import Tensor, nn

from bundle import GraphSpec, next_name
from models.base import SessionModel, StateSpec

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


def example_state(specs: list[StateSpec], batch_size: int, n_items: int,
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
                  seed: int = 0) -> dict[str, GraphSpec]:
    """Write start/advance/score/end.onnx (those the model needs) into ``folder`` and
    return their specs (the manifest's ``graphs``). ``model`` must be in eval mode."""
    session_spec, user_spec = model.session_spec(), model.user_spec()
    session_names = [s.name for s in session_spec]
    user_names = [s.name for s in user_spec]
    generator = torch.Generator().manual_seed(seed)
    batch = 2  # trace at B=2 so no size-1 broadcasting gets baked into the graph
    session = example_state(session_spec, batch, model.n_items, generator)
    user = example_state(user_spec, batch, model.n_items, generator)
    item = torch.randint(1, model.n_items + 1, (batch,), generator=generator)
    session_args = tuple(session[name] for name in session_names)
    user_args = tuple(user[name] for name in user_names)

    plans: list[tuple[str, nn.Module, tuple[Tensor, ...], list[str], list[str]]] = []
    if user_spec:
        plans.append(("start", _StartGraph(model), user_args, user_names,
                      [next_name(n) for n in session_names]))
    if session_spec:
        plans.append(("advance", _AdvanceGraph(model), (item, *session_args),
                      ["item", *session_names], [next_name(n) for n in session_names]))
    plans.append(("score", _ScoreGraph(model), session_args, session_names, ["full_scores"]))
    if user_spec:
        plans.append(("end", _EndGraph(model), (*session_args, *user_args),
                      [*session_names, *user_names], [next_name(n) for n in user_names]))

    graphs: dict[str, GraphSpec] = {}
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
        graphs[role] = GraphSpec(path.name, inputs, outputs)
    return graphs
