"""``manifest.json``: the schema of a serving bundle, validated on read.

A bundle is ``<artifacts>/<model>/<version>/``::

    start.onnx     user state -> next_<session tensor>...          (user-scoped models)
    advance.onnx   item [B] int64 + session state -> next_<session tensor>...
    score.onnx     session state + k (0-d int64) -> scores [B,k] float32, items [B,k] int64
    end.onnx       session + user state -> next_<user tensor>...   (user-scoped models)
    items.txt      raw id of item index i on line i (index 0 = padding, no line)
    popular.json   [[raw_id, count], ...] most popular first (no-session, no-user fallback)
    catalog.json   optional: title and category per item id, for display (``bundle.catalog``)
    manifest.json  this schema: state spec, graph inputs/outputs, file hashes, provenance

Every graph takes and returns a leading batch dimension of any size; a graph's output
for state tensor ``x`` is named ``next_x`` (``next_name``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
GRAPH_ROLES = ("start", "advance", "score", "end")
MANIFEST_FILE = "manifest.json"
ITEMS_FILE = "items.txt"
POPULAR_FILE = "popular.json"
#: Bytes per element of the state dtypes (state is stored as raw little-endian bytes).
DTYPE_SIZES = {"float32": 4, "int64": 8}
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_REQUIRED = ("format_version", "model", "version", "n_items", "state", "graphs", "files")

Dtype = Literal["float32", "int64"]
Scope = Literal["session", "user"]


class BundleError(Exception):
    """A bundle (or the set of bundles being served) is unusable; the message names the
    file and what is wrong with it."""


def next_name(name: str) -> str:
    """The graph output that carries the new value of state tensor ``name``."""
    return f"next_{name}"


@dataclass(frozen=True)
class StateSpec:
    """One named state tensor: declared by a model, written into the manifest by the
    exporter, stored by the service in Redis as raw little-endian bytes."""

    name: str
    shape: tuple[int, ...]  # without the batch dimension
    dtype: Dtype
    scope: Scope

    @property
    def nbytes(self) -> int:
        """Bytes of one row (batch element)."""
        count = 1
        for size in self.shape:
            count *= size
        return count * DTYPE_SIZES[self.dtype]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "scope": self.scope}

    @classmethod
    def from_json(cls, raw: Any, scope: Scope, where: str) -> StateSpec:
        if not isinstance(raw, dict):
            raise BundleError(f"{where} must be an object")
        name, shape, dtype = raw.get("name"), raw.get("shape"), raw.get("dtype")
        if not isinstance(name, str) or not name:
            raise BundleError(f"{where}.name must be a non-empty string")
        if not isinstance(shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
            raise BundleError(f"{where}.shape must be a list of positive integers")
        if dtype not in DTYPE_SIZES:
            raise BundleError(f"{where}.dtype {dtype!r} is not one of {sorted(DTYPE_SIZES)}")
        return cls(name, tuple(shape), dtype, scope)


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX graph of a bundle: its file and the names it takes and gives (as
    written: exporters drop inputs a graph does not use)."""

    file: str
    inputs: list[str]
    outputs: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "inputs": list(self.inputs), "outputs": list(self.outputs)}


@dataclass
class Manifest:
    """The parsed ``manifest.json``. ``extra`` keeps the provenance fields the engine does
    not interpret (created, config, data, metrics, parity, libraries, opset, exporter)."""

    model: str
    version: str
    n_items: int
    session_state: list[StateSpec]
    user_state: list[StateSpec]
    graphs: dict[str, GraphSpec]
    files: dict[str, str]
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.model}@{self.version}"

    def to_json(self) -> dict[str, Any]:
        return {"format_version": self.format_version, "model": self.model,
                "version": self.version, "n_items": self.n_items,
                "state": {"session": [s.to_json() for s in self.session_state],
                          "user": [s.to_json() for s in self.user_state]},
                "graphs": {role: graph.to_json() for role, graph in self.graphs.items()},
                "files": dict(self.files), **self.extra}

    def write(self, folder: Path) -> Path:
        path = Path(folder) / MANIFEST_FILE
        path.write_text(json.dumps(self.to_json(), indent=2, default=str) + "\n",
                        encoding="utf-8")
        return path

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = Path(folder) / MANIFEST_FILE
        if not path.is_file():
            raise BundleError(f"{path}: missing")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise BundleError(f"{path}: unreadable: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise BundleError(f"{path}: invalid JSON at line {exc.lineno} column "
                              f"{exc.colno}: {exc.msg}") from exc
        return cls.from_json(raw, str(path))

    @classmethod
    def from_json(cls, raw: Any, where: str) -> Manifest:
        """Validate and parse; every problem is a ``BundleError`` naming ``where``."""
        if not isinstance(raw, dict):
            raise BundleError(f"{where}: must hold a JSON object")
        missing = [name for name in _REQUIRED if name not in raw]
        if missing:
            raise BundleError(f"{where}: missing fields {missing}")
        if raw["format_version"] not in SUPPORTED_FORMAT_VERSIONS:
            raise BundleError(f"{where}: format_version {raw['format_version']!r} is not "
                              f"supported (this version reads {SUPPORTED_FORMAT_VERSIONS})")
        n_items = raw["n_items"]
        if not isinstance(n_items, int) or isinstance(n_items, bool) or n_items < 1:
            raise BundleError(f"{where}: n_items must be a positive integer")
        state = raw["state"]
        if not isinstance(state, dict):
            raise BundleError(f"{where}: state must be an object")
        specs: dict[Scope, list[StateSpec]] = {}
        for scope in ("session", "user"):
            entries = state.get(scope, [])
            if not isinstance(entries, list):
                raise BundleError(f"{where}: state.{scope} must be a list")
            specs[scope] = [StateSpec.from_json(entry, scope, f"{where}: state.{scope}[{i}]")
                            for i, entry in enumerate(entries)]
        graphs = cls._graphs(raw["graphs"], where, specs)
        files = raw["files"]
        if not isinstance(files, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise BundleError(f"{where}: files must map file name -> sha256")
        extra = {k: v for k, v in raw.items()
                 if k not in (*_REQUIRED, "state") and k != "format_version"}
        return cls(model=str(raw["model"]), version=str(raw["version"]), n_items=n_items,
                   session_state=specs["session"], user_state=specs["user"], graphs=graphs,
                   files=dict(files), format_version=int(raw["format_version"]),
                   extra=extra)

    @staticmethod
    def _graphs(raw: Any, where: str, specs: dict[Scope, list[StateSpec]]
                ) -> dict[str, GraphSpec]:
        if not isinstance(raw, dict) or "score" not in raw:
            raise BundleError(f"{where}: graphs must be an object with a 'score' graph")
        unknown = set(raw) - set(GRAPH_ROLES)
        if unknown:
            raise BundleError(f"{where}: unknown graphs {sorted(unknown)}")
        if specs["session"] and "advance" not in raw:
            raise BundleError(f"{where}: session state declared but no advance graph")
        if specs["user"] and not {"start", "end"} <= set(raw):
            raise BundleError(f"{where}: user state declared but start/end graphs are missing")
        graphs: dict[str, GraphSpec] = {}
        for role, entry in raw.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
                raise BundleError(f"{where}: graphs.{role}.file must be a file name")
            inputs, outputs = entry.get("inputs"), entry.get("outputs")
            if inputs is not None and not (isinstance(inputs, list)
                                           and all(isinstance(n, str) for n in inputs)):
                raise BundleError(f"{where}: graphs.{role}.inputs must be a list of names")
            if outputs is not None and not (isinstance(outputs, list)
                                            and all(isinstance(n, str) for n in outputs)):
                raise BundleError(f"{where}: graphs.{role}.outputs must be a list of names")
            graphs[role] = GraphSpec(entry["file"], list(inputs or []), list(outputs or []))
        return graphs
