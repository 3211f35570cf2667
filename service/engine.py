"""The serving engine: exported ONNX bundles run on ONNX Runtime (numpy + onnxruntime only,
never torch).

A bundle (``artifacts/<model>/<version>/``, written by ``training.export``; its contract is
``bundle``) holds up to four graphs — ``start`` (user state -> session state), ``advance``
(one click), ``score`` (TopK inside) and ``end`` (session + user state -> user state) —
plus the item vocabulary, a popularity fallback and a manifest declaring the state
tensors. The engine is generic over that manifest: the service stores whatever state
tensors a model declares as raw bytes in Redis and never needs model-specific code.

All methods are synchronous and thread-safe (``InferenceSession.run`` is), so the service
calls them from a thread pool. States are ``dict[name, ndarray]`` with a leading batch
dimension; the click path stacks the rows of concurrent requests (micro-batching).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from bundle import (
    ITEMS_FILE,
    MANIFEST_FILE,
    POPULAR_FILE,
    BundleError,
    GraphSpec,
    Manifest,
    StateSpec,
    next_name,
    read_items,
    read_popular,
    verify_files,
    versions_newest_first,
)

logger = logging.getLogger(__name__)

State = dict[str, np.ndarray]

#: Default model when several are deployed and none is configured: the most personalised.
DEFAULT_PREFERENCE = ("hrnn-init", "hrnn-all", "gru4rec", "pop")
_DTYPES: dict[str, np.dtype[Any]] = {"float32": np.dtype("<f4"), "int64": np.dtype("<i8")}


def _zeros(spec: StateSpec, rows: int = 1) -> np.ndarray:
    return np.zeros((rows, *spec.shape), dtype=_DTYPES[spec.dtype])


def _rows(state: State, specs: list[StateSpec]) -> int:
    """The batch size of a state (its first tensor's leading dimension)."""
    return int(state[specs[0].name].shape[0]) if specs else 0


def stack_states(states: Sequence[State]) -> State:
    """Rows of several states (same spec) as one batch."""
    if len(states) == 1:
        return dict(states[0])
    return {name: np.concatenate([state[name] for state in states]) for name in states[0]}


def state_rows(state: State, rows: np.ndarray | Sequence[int]) -> State:
    """The given rows of a batch of states (a copy)."""
    index = np.asarray(rows, dtype=np.int64)
    return {name: value[index] for name, value in state.items()}


def session_options(intra_op_threads: int | None = 1) -> ort.SessionOptions:
    """The ONNX Runtime options every served graph runs with (the export parity check
    uses them too, so it checks what is served)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # One thread per run by default: the service runs many requests concurrently from a
    # thread pool, and per-click graphs are too small to gain from intra-op parallelism.
    options.intra_op_num_threads = 1 if intra_op_threads is None else intra_op_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Not "session.set_denormal_as_zero": it sets the calling thread's FTZ/DAZ flags, which
    # then change every float computation of that thread (Python's too). Graphs avoid
    # denormals themselves (see models/rum.py, _item_read).
    return options


def choose_providers(requested: Sequence[str] | None = None) -> list[str]:
    """Execution providers in priority order: ``requested`` filtered by what this
    onnxruntime build offers; by default CUDA first when available, then CPU. CPU is
    always appended as the last resort so a GPU-less host still serves."""
    available = ort.get_available_providers()
    if requested is None:
        wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    else:
        wanted = [p.strip() for p in requested if p.strip()]
    chosen = [p for p in wanted if p in available]
    dropped = [p for p in wanted if p not in available]
    if dropped and requested is not None:
        logger.warning("execution providers %s are not available in this onnxruntime build "
                       "(available: %s)", dropped, available)
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


class _Graph:
    """One ONNX Runtime session plus the names it takes and gives, from the manifest."""

    def __init__(self, path: Path, declared: GraphSpec, options: ort.SessionOptions,
                 providers: list[str]):
        self.path = path
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types for corrupt files
            raise BundleError(f"{path}: cannot be loaded by ONNX Runtime: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                              ) from exc
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        manifest_inputs = declared.inputs or self.inputs
        if sorted(manifest_inputs) != sorted(self.inputs):
            raise BundleError(f"{path}: graph inputs {self.inputs} differ from the manifest's "
                              f"{manifest_inputs}")

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.session.run(self.outputs, {name: feed[name] for name in self.inputs})
        return {name: np.asarray(value) for name, value in zip(self.outputs, outputs,
                                                                strict=True)}


class ModelBundle:
    """One exported model version, ready to serve."""

    def __init__(self, path: Path, providers: Sequence[str] | None = None,
                 intra_op_threads: int | None = None):
        self.path = Path(path)
        where = str(self.path / MANIFEST_FILE)
        self.manifest = Manifest.read(self.path)
        self.name: str = self.manifest.model
        self.version: str = self.manifest.version
        self.key = self.manifest.key
        self.n_items: int = self.manifest.n_items
        self.session_spec = self.manifest.session_state
        self.user_spec = self.manifest.user_state
        self.has_user_state = bool(self.user_spec)
        serving = self.manifest.extra.get("serving")
        rows = serving.get("score_rows") if isinstance(serving, dict) else None
        #: at most this many sessions per score run (the model's hint; None: any)
        self.score_rows: int | None = rows if isinstance(rows, int) and rows > 0 else None
        verify_files(self.path, self.manifest.files, where)

        self.providers = choose_providers(providers)
        options = session_options(intra_op_threads)
        self._graphs: dict[str, _Graph] = {}
        for role, declared in self.manifest.graphs.items():
            graph_path = self.path / declared.file
            if not graph_path.is_file():
                raise BundleError(f"{graph_path}: missing (named by {where})")
            self._graphs[role] = _Graph(graph_path, declared, options, self.providers)
        self.providers = list(self._graphs["score"].session.get_providers())

        self._items = read_items(self.path / ITEMS_FILE, self.n_items)  # [0] = padding
        self._index = {raw: index for index, raw in enumerate(self._items) if index > 0}
        popular = read_popular(self.path / POPULAR_FILE)
        # Scored relative to the most clicked item (1.0), not raw counts: a list's scores
        # then read on one scale whatever the catalogue's traffic.
        top = max((count for _, count in popular), default=1.0) or 1.0
        self._popular = [(raw, count / top) for raw, count in popular]
        self._session_bytes = sum(spec.nbytes for spec in self.session_spec)
        self._user_bytes = sum(spec.nbytes for spec in self.user_spec)

    # ---- vocabulary ----------------------------------------------------------------------
    def item_index(self, raw_id: str) -> int:
        """Model index of a raw item id; 0 (a no-op click) for items the model never saw."""
        return self._index.get(raw_id, 0)

    def item_id(self, index: int) -> str:
        if not 1 <= index <= self.n_items:
            raise ValueError(f"item index {index} outside 1..{self.n_items}")
        return self._items[index]

    # ---- state ---------------------------------------------------------------------------
    # Every state is ``dict[name, ndarray]`` with a leading batch dimension of any size B:
    # the micro-batched click path stacks the rows of concurrent requests, and the graphs
    # accept any batch size. The single-session methods are the B = 1 case.
    def new_user_state(self, rows: int = 1) -> State:
        return {spec.name: _zeros(spec, rows) for spec in self.user_spec}

    def new_session_state(self, rows: int = 1) -> State:
        return {spec.name: _zeros(spec, rows) for spec in self.session_spec}

    def start_session(self, user_state: State | None, rows: int = 1) -> State:
        """Session state at a session start, [rows, ...]: from the user state through
        ``start`` for user-scoped models (a new user's zero state when ``user_state`` is
        None), zeros otherwise."""
        if "start" not in self._graphs:
            return self.new_session_state(rows)
        user = self.new_user_state(rows) if user_state is None else user_state
        self._check_state(user, self.user_spec, "user")
        out = self._graphs["start"].run(user)
        return {spec.name: out[next_name(spec.name)] for spec in self.session_spec}

    def advance(self, state: State, items: Sequence[int]) -> State:
        """Fold one session's clicks (item indices) into its state in order; 0 is a no-op.
        Returns new arrays; ``state`` is never written to."""
        return self.advance_steps(state, np.asarray(list(items), dtype=np.int64).reshape(1, -1))

    def advance_steps(self, state: State, items: np.ndarray) -> State:
        """Fold clicks into a batch of session states: ``items`` [B, T] int64, column t is
        every row's t-th click (0 = no click: that row is left unchanged, the models'
        padding rule). One graph run per column that has any click."""
        self._check_state(state, self.session_spec, "session")
        rows = _rows(state, self.session_spec)
        if items.ndim != 2 or (self.session_spec and items.shape[0] != rows):
            raise ValueError(f"{self.key}: items must be [B, T] for a batch of {rows} "
                             f"states, got {items.shape}")
        if items.size and (int(items.min()) < 0 or int(items.max()) > self.n_items):
            raise ValueError(f"item index outside 0..{self.n_items}")
        current = dict(state)
        graph = self._graphs.get("advance")
        clicked = False
        if graph is not None:
            for column in range(items.shape[1]):
                step = np.ascontiguousarray(items[:, column])
                if not step.any():
                    continue
                out = graph.run({"item": step, **current})
                current = {spec.name: out[next_name(spec.name)] for spec in self.session_spec}
                clicked = True
        if not clicked:
            current = {name: value.copy() for name, value in current.items()}
        return current

    def end_session(self, session_state: State, user_state: State) -> State:
        """User state after the session closes (HRNN's user-level GRU); a copy of
        ``user_state`` for models without an ``end`` graph."""
        if "end" not in self._graphs:
            return {name: value.copy() for name, value in user_state.items()}
        self._check_state(session_state, self.session_spec, "session")
        self._check_state(user_state, self.user_spec, "user")
        out = self._graphs["end"].run({**session_state, **user_state})
        return {spec.name: out[next_name(spec.name)] for spec in self.user_spec}

    # ---- recommendations -----------------------------------------------------------------
    def top_k(self, state: State, k: int, exclude: Collection[int] = ()) -> list[tuple[str, float]]:
        """Up to ``k`` (raw id, score) pairs for one session, best first, skipping item
        indices in ``exclude`` (e.g. the session's clicks)."""
        return self.top_k_rows(state, [k], [exclude])[0]

    def top_k_rows(self, state: State, ks: Sequence[int],
                   excludes: Sequence[Collection[int]]) -> list[list[tuple[str, float]]]:
        """``top_k`` for every row of a batch of states with one score run: the graph is
        asked for the largest ``k + |exclude|`` of any row (clamped to n_items), so
        filtering still leaves each row its ``k`` where the catalogue allows."""
        rows = _rows(state, self.session_spec) if self.session_spec else len(ks)
        if len(ks) != rows or len(excludes) != rows:
            raise ValueError(f"{self.key}: {rows} states, {len(ks)} ks, {len(excludes)} "
                             f"exclusion sets")
        excluded = [{int(i) for i in exclude} for exclude in excludes]
        wanted = min(self.n_items, max((k + len(skip) for k, skip in zip(ks, excluded,
                                                                         strict=True)
                                        if k > 0), default=0))
        if wanted <= 0:
            return [[] for _ in ks]
        self._check_state(state, self.session_spec, "session")
        out = self._score(state, rows, np.array(wanted, dtype=np.int64))
        results: list[list[tuple[str, float]]] = []
        for row, (k, skip) in enumerate(zip(ks, excluded, strict=True)):
            result: list[tuple[str, float]] = []
            if k > 0:
                for index, score in zip(out["items"][row].tolist(), out["scores"][row].tolist(),
                                        strict=True):
                    # -inf is the models' "never recommend" (padding); NaN would be a bug.
                    if index == 0 or index in skip or not math.isfinite(score):
                        continue
                    result.append((self._items[index], score))
                    if len(result) == k:
                        break
            results.append(result)
        return results

    def _score(self, state: State, rows: int, k: np.ndarray) -> dict[str, np.ndarray]:
        """One ``score`` run, or runs of ``score_rows`` sessions when the bundle asks for
        them (its score outgrows the caches on larger batches), concatenated."""
        step = self.score_rows
        if not step or rows <= step or not self.session_spec:
            return self._graphs["score"].run({**state, "k": k})
        spans = [range(start, min(rows, start + step)) for start in range(0, rows, step)]
        parts = [self._graphs["score"].run({**state_rows(state, span), "k": k})
                 for span in spans]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def popular(self, k: int, exclude_ids: Collection[str] = ()) -> list[tuple[str, float]]:
        """The training set's most clicked items (for requests with no session and no
        user), best first, without ``exclude_ids`` (raw ids)."""
        if k <= 0:
            return []
        excluded = set(exclude_ids)
        result: list[tuple[str, float]] = []
        for raw, count in self._popular:
            if raw in excluded:
                continue
            result.append((raw, count))
            if len(result) == k:
                break
        return result

    # ---- (de)serialisation for Redis -----------------------------------------------------
    def encode_session(self, state: State) -> bytes:
        return self.encode_sessions(state)[0]

    def decode_session(self, blob: bytes) -> State:
        return self.decode_sessions([blob])

    def encode_sessions(self, state: State) -> list[bytes]:
        """One blob per row of a batch of session states."""
        return self._encode(state, self.session_spec, "session")

    def decode_sessions(self, blobs: Sequence[bytes]) -> State:
        """A batch of session states from one blob per row (each checked for its size)."""
        return self._decode(blobs, self.session_spec, self._session_bytes, "session")

    def encode_user(self, state: State) -> bytes:
        return self._encode(state, self.user_spec, "user")[0]

    def decode_user(self, blob: bytes) -> State:
        return self._decode([blob], self.user_spec, self._user_bytes, "user")

    def _encode(self, state: State, specs: list[StateSpec], scope: str) -> list[bytes]:
        self._check_state(state, specs, scope)
        if not specs:
            return [b""]
        rows = _rows(state, specs)
        flat = [np.ascontiguousarray(state[spec.name], dtype=_DTYPES[spec.dtype])
                .reshape(rows, -1).view(np.uint8) for spec in specs]
        joined = np.concatenate(flat, axis=1)  # [rows, bytes per row]
        return [row.tobytes() for row in joined]

    def _decode(self, blobs: Sequence[bytes], specs: list[StateSpec], expected: int,
                scope: str) -> State:
        for blob in blobs:
            if len(blob) != expected:
                raise ValueError(f"{self.key}: {scope} state blob has {len(blob)} bytes, "
                                 f"expected {expected}")
        rows = len(blobs)
        data = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(rows, expected)
        state: State = {}
        offset = 0
        for spec in specs:
            part = data[:, offset:offset + spec.nbytes].copy()  # owned, writable, C-order
            state[spec.name] = part.view(_DTYPES[spec.dtype]).reshape((rows, *spec.shape))
            offset += spec.nbytes
        return state

    def _check_state(self, state: State, specs: list[StateSpec], scope: str) -> None:
        rows = None
        for spec in specs:
            value = state.get(spec.name)
            if value is None:
                raise ValueError(f"{self.key}: {scope} state lacks tensor {spec.name!r}")
            if (value.ndim != len(spec.shape) + 1 or value.shape[1:] != spec.shape
                    or value.dtype != _DTYPES[spec.dtype]
                    or (rows is not None and value.shape[0] != rows)):
                raise ValueError(f"{self.key}: {scope} tensor {spec.name!r} has shape "
                                 f"{value.shape} {value.dtype}, expected (B, *{spec.shape}) "
                                 f"{spec.dtype}")
            rows = value.shape[0]

    def describe(self, details: bool = False) -> dict[str, Any]:
        """What ``GET /models`` says: the essentials and the headline offline accuracy;
        with ``details`` the state spec, the graphs and every metric the export recorded."""
        metrics = self.manifest.extra.get("metrics", {})
        headline = {name: metrics[name] for name in ("recall@20", "mrr@20", "n")
                    if isinstance(metrics, dict) and name in metrics}
        summary: dict[str, Any] = {
            "name": self.name, "version": self.version, "key": self.key,
            "n_items": self.n_items, "created": self.manifest.extra.get("created"),
            "user_state": self.has_user_state, "providers": list(self.providers),
            "accuracy": headline or None}
        if details:
            summary.update({"state": {"session": [spec.to_json() for spec in self.session_spec],
                                      "user": [spec.to_json() for spec in self.user_spec]},
                            "graphs": sorted(self._graphs), "metrics": metrics})
        return summary


class Engine:
    """Every model under ``artifacts_dir`` at its latest loadable version."""

    def __init__(self, artifacts_dir: Path, providers: Sequence[str] | None = None,
                 default_model: str | None = None, intra_op_threads: int | None = None):
        self.artifacts_dir = Path(artifacts_dir)
        self._requested_providers = None if providers is None else list(providers)
        self._default_model = default_model
        self._intra_op_threads = intra_op_threads
        self.providers = choose_providers(self._requested_providers)
        self._lock = threading.Lock()
        # (models, default, errors) swapped as one object so a reader never sees the new
        # models with the old default.
        self._snapshot: tuple[dict[str, ModelBundle], str, list[str]] = self._load_all()

    @property
    def models(self) -> dict[str, ModelBundle]:
        return self._snapshot[0]

    @property
    def default(self) -> str:
        return self._snapshot[1]

    @property
    def errors(self) -> list[str]:
        """Messages of the bundles skipped by the last successful (re)load."""
        return self._snapshot[2]

    def _load_all(self) -> tuple[dict[str, ModelBundle], str, list[str]]:
        """Load a fresh set. Per model, versions are tried newest first (by the manifest's
        creation time, ``bundle.versions_newest_first``); a broken one is logged, recorded in
        ``errors`` and skipped, so one bad deploy falls back to the previous version and
        does not take the other models down. Raises BundleError when nothing loads."""
        root = self.artifacts_dir
        if not root.is_dir():
            raise BundleError(f"{root}: artifacts folder does not exist; export a model "
                              f"first (`nextclick export --run RUN --out {root}`)")
        models: dict[str, ModelBundle] = {}
        errors: list[str] = []
        for model_dir in sorted(p for p in root.iterdir()
                                if p.is_dir() and not p.name.startswith(".")):
            for version_dir in versions_newest_first(model_dir):
                try:
                    bundle = ModelBundle(version_dir, self._requested_providers,
                                         self._intra_op_threads)
                except BundleError as exc:
                    logger.error("skipping bundle: %s", exc)
                    errors.append(str(exc))
                    continue
                if bundle.name in models:
                    message = (f"{version_dir}: model {bundle.name!r} is also served from "
                               f"{models[bundle.name].path}; skipped")
                    logger.error(message)
                    errors.append(message)
                else:
                    models[bundle.name] = bundle
                break
        if not models:
            detail = "; ".join(errors) if errors else "no <model>/<version>/manifest.json found"
            raise BundleError(f"{root}: no model bundle could be loaded: {detail}")
        if self._default_model is not None:
            if self._default_model not in models:
                raise BundleError(f"{root}: default model {self._default_model!r} is not "
                                  f"loaded (loaded: {sorted(models)})")
            default = self._default_model
        else:
            default = next((n for n in DEFAULT_PREFERENCE if n in models), sorted(models)[0])
        return models, default, errors

    def get(self, name: str | None = None) -> ModelBundle:
        models, default, _ = self._snapshot  # one read: reload swaps it whole
        key = default if name is None else name
        try:
            return models[key]
        except KeyError:
            raise KeyError(key) from None

    def reload(self) -> list[str]:
        """Load a fresh set and swap it in; on failure raise BundleError and keep serving
        the current set. Returns the loaded ``name@version`` keys."""
        with self._lock:
            snapshot = self._load_all()
            self._snapshot = snapshot
        return [bundle.key for bundle in snapshot[0].values()]

    def describe(self, details: bool = False) -> list[dict[str, Any]]:
        models, default, _ = self._snapshot
        return [{**bundle.describe(details), "default": name == default}
                for name, bundle in sorted(models.items())]
