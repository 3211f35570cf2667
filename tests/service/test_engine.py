"""The serving engine on real exported bundles and real ONNX Runtime.

Bundles are exported once per module from the tiny models of the parity test (one with
user state, one without); each test copies what it needs into its own artifacts folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from bundle import BundleError
from service.engine import Engine, ModelBundle
from tests.models.test_onnx_parity import TinyUserGRU, tiny_items, tiny_model
from training.export.writer import export_bundle

N_ITEMS = 30
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two versions of the user-state model, one of the session-only model."""
    root = tmp_path_factory.mktemp("exported")
    popular = [(f"item-{i}", 100 - i) for i in (5, 3, 9, 1, 2)]
    return {
        "user-old": export_bundle(tiny_model(seed=1), tiny_items(N_ITEMS), root,
                                  version="20240101T000000Z", popular=popular),
        "user": export_bundle(tiny_model(seed=0), tiny_items(N_ITEMS), root,
                              version="20250101T000000Z", popular=popular),
        "session": export_bundle(tiny_model(user_state=False), tiny_items(N_ITEMS), root,
                                 version="20250101T000000Z", popular=popular),
    }


def _deploy(artifacts: Path, *bundles: Path) -> Path:
    for bundle in bundles:
        target = artifacts / bundle.parent.name / bundle.name
        shutil.copytree(bundle, target)
    return artifacts


@pytest.fixture()
def engine(tmp_path: Path, exported: dict[str, Path]) -> Engine:
    _deploy(tmp_path, exported["user-old"], exported["user"], exported["session"])
    return Engine(tmp_path)


@pytest.fixture()
def user_bundle(engine: Engine) -> ModelBundle:
    return engine.get("tiny-user-gru")


@pytest.fixture()
def reference() -> Iterator[TinyUserGRU]:
    with torch.no_grad():
        yield tiny_model(seed=0)


def test_loads_latest_version_and_ignores_staging_dirs(tmp_path: Path,
                                                       exported: dict[str, Path]) -> None:
    _deploy(tmp_path, exported["user-old"], exported["user"], exported["session"])
    (tmp_path / "tiny-user-gru" / ".export-abc123").mkdir()  # an export in progress
    (tmp_path / "tiny-user-gru" / "zzz-no-manifest").mkdir()  # not a bundle
    engine = Engine(tmp_path)
    assert engine.errors == []
    assert sorted(engine.models) == ["tiny-session-gru", "tiny-user-gru"]
    bundle = engine.get("tiny-user-gru")
    assert bundle.version == "20250101T000000Z"
    assert bundle.key == "tiny-user-gru@20250101T000000Z"
    assert bundle.has_user_state and not engine.get("tiny-session-gru").has_user_state
    assert engine.default == "tiny-session-gru"  # none preferred: sorted first
    assert engine.get() is engine.get("tiny-session-gru")
    with pytest.raises(KeyError):
        engine.get("no-such-model")
    described = {entry["name"]: entry for entry in engine.describe(details=True)}
    assert described["tiny-session-gru"]["default"] and not described["tiny-user-gru"]["default"]
    assert described["tiny-user-gru"]["state"]["user"][0]["name"] == "c"
    assert "CPUExecutionProvider" in described["tiny-user-gru"]["providers"]


def test_default_model_setting(tmp_path: Path, exported: dict[str, Path]) -> None:
    _deploy(tmp_path, exported["user"], exported["session"])
    assert Engine(tmp_path, default_model="tiny-user-gru").default == "tiny-user-gru"
    with pytest.raises(BundleError, match="default model 'hrnn-init'"):
        Engine(tmp_path, default_model="hrnn-init")


def test_session_flow_matches_pytorch(user_bundle: ModelBundle, reference: TinyUserGRU) -> None:
    """start -> advance -> top_k -> end through the engine equals eager PyTorch."""
    user = {"c": np.random.default_rng(0).normal(size=(1, 8)).astype(np.float32)}
    clicks = [user_bundle.item_index(raw) for raw in ("item-4", "item-17", "item-4")]
    assert clicks == [4, 17, 4]
    session = user_bundle.advance(user_bundle.start_session(user), clicks)
    torch_user = {"c": torch.from_numpy(user["c"])}
    torch_session = reference.start_session(torch_user, 1)
    for item in clicks:
        torch_session = reference.advance(torch.tensor([item]), torch_session)
    np.testing.assert_allclose(session["h"], torch_session["h"].numpy(), atol=1e-5)
    assert session["clicks"].tolist() == [[3]]

    top = user_bundle.top_k(session, 5)
    scores = reference.score(torch_session)[0]
    expected = torch.topk(scores, 5)
    assert [raw for raw, _ in top] == [f"item-{i}" for i in expected.indices.tolist()]
    np.testing.assert_allclose([s for _, s in top], expected.values.numpy(), atol=1e-5)

    new_user = user_bundle.end_session(session, user)
    expected_user = reference.end_session(torch_session, torch_user)["c"].numpy()
    np.testing.assert_allclose(new_user["c"], expected_user, atol=1e-5)
    assert not np.array_equal(new_user["c"], user["c"])


def test_start_session_defaults(engine: Engine, reference: TinyUserGRU) -> None:
    bundle = engine.get("tiny-user-gru")
    fresh = bundle.start_session(None)  # a new user: zero user state through start
    expected = reference.start_session({"c": torch.zeros(1, 8)}, 1)["h"].numpy()
    np.testing.assert_allclose(fresh["h"], expected, atol=1e-6)
    assert bundle.new_user_state()["c"].shape == (1, 8)
    session_only = engine.get("tiny-session-gru")
    state = session_only.start_session(None)
    assert set(state) == {"h", "clicks"} and not state["h"].any()
    assert session_only.end_session(state, {}) == {}


def test_unknown_item_is_a_no_op(user_bundle: ModelBundle) -> None:
    assert user_bundle.item_index("never-seen") == 0
    start = user_bundle.start_session(None)
    after = user_bundle.advance(start, [user_bundle.item_index("never-seen"), 0])
    np.testing.assert_array_equal(after["h"], start["h"])
    assert after["clicks"].tolist() == [[0]]
    assert after["h"] is not start["h"], "advance must return new arrays"
    with pytest.raises(ValueError, match="outside"):
        user_bundle.advance(start, [N_ITEMS + 1])


def test_advance_does_not_write_its_input(user_bundle: ModelBundle) -> None:
    start = user_bundle.start_session(None)
    snapshot = {name: value.copy() for name, value in start.items()}
    user_bundle.advance(start, [3, 4])
    for name, value in start.items():
        np.testing.assert_array_equal(value, snapshot[name])


def test_top_k_excludes_and_clamps(user_bundle: ModelBundle) -> None:
    state = user_bundle.advance(user_bundle.start_session(None), [7, 8])
    best = user_bundle.top_k(state, 6)
    assert len(best) == 6
    assert [s for _, s in best] == sorted((s for _, s in best), reverse=True)
    excluded = [user_bundle.item_index(raw) for raw, _ in best[:3]]
    filtered = user_bundle.top_k(state, 6, exclude=excluded)
    assert len(filtered) == 6
    assert not {raw for raw, _ in filtered} & {raw for raw, _ in best[:3]}
    assert [raw for raw, _ in filtered[:3]] == [raw for raw, _ in best[3:6]]

    everything = user_bundle.top_k(state, 1000)  # k > n_items: every real item once
    assert len(everything) == N_ITEMS
    assert {raw for raw, _ in everything} == set(tiny_items(N_ITEMS))
    assert len(user_bundle.top_k(state, 1000, exclude=excluded)) == N_ITEMS - 3
    assert user_bundle.top_k(state, 0) == []


def test_popular_fallback(user_bundle: ModelBundle) -> None:
    # in the file's order, scored relative to the most clicked item (1.0): one scale
    # whatever the traffic (the counts behind these are 95, 97 and 91)
    top3 = user_bundle.popular(3)
    assert [raw for raw, _ in top3] == ["item-5", "item-3", "item-9"]
    assert top3[1][1] / top3[0][1] == pytest.approx(97 / 95)
    assert top3[2][1] / top3[0][1] == pytest.approx(91 / 95)
    assert max(score for _, score in user_bundle.popular(50)) == 1.0
    assert [raw for raw, _ in user_bundle.popular(3, exclude_ids={"item-3"})] == \
        ["item-5", "item-9", "item-1"]
    assert len(user_bundle.popular(50)) == 5


def test_encode_decode_round_trip(user_bundle: ModelBundle) -> None:
    session = user_bundle.advance(user_bundle.start_session(None), [2, 9])
    blob = user_bundle.encode_session(session)
    assert len(blob) == 8 * 4 + 1 * 8  # float32 h[8] + int64 clicks[1], little-endian
    decoded = user_bundle.decode_session(blob)
    for name in ("h", "clicks"):
        np.testing.assert_array_equal(decoded[name], session[name])
        assert decoded[name].dtype == session[name].dtype and decoded[name].flags.writeable
    assert user_bundle.top_k(decoded, 4) == user_bundle.top_k(session, 4)
    user = {"c": np.arange(8, dtype=np.float32).reshape(1, 8)}
    np.testing.assert_array_equal(user_bundle.decode_user(user_bundle.encode_user(user))["c"],
                                  user["c"])
    with pytest.raises(ValueError, match="bytes, expected 40"):
        user_bundle.decode_session(blob[:-1])
    with pytest.raises(ValueError, match="user state blob"):
        user_bundle.decode_user(blob)
    with pytest.raises(ValueError, match="shape"):
        user_bundle.encode_session({"h": np.zeros((1, 7), np.float32),
                                    "clicks": np.zeros((1, 1), np.int64)})


def test_corrupted_onnx_is_reported_and_skipped(tmp_path: Path,
                                                exported: dict[str, Path]) -> None:
    _deploy(tmp_path, exported["user"], exported["session"])
    broken = tmp_path / "tiny-user-gru" / "20250101T000000Z" / "score.onnx"
    broken.write_bytes(broken.read_bytes()[:200])
    engine = Engine(tmp_path)
    assert list(engine.models) == ["tiny-session-gru"]
    assert len(engine.errors) == 1 and str(broken) in engine.errors[0]
    assert "sha256" in engine.errors[0]


def test_onnx_that_runtime_rejects_names_the_file(tmp_path: Path,
                                                  exported: dict[str, Path]) -> None:
    """A corrupt graph whose hash was (wrongly) updated too: ONNX Runtime refuses it."""
    _deploy(tmp_path, exported["user"], exported["session"])
    bundle = tmp_path / "tiny-user-gru" / "20250101T000000Z"
    (bundle / "advance.onnx").write_bytes(b"definitely not protobuf")
    manifest = json.loads((bundle / "manifest.json").read_text())
    from bundle import sha256_file
    manifest["files"]["advance.onnx"] = sha256_file(bundle / "advance.onnx")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    engine = Engine(tmp_path)
    assert "tiny-user-gru" not in engine.models
    assert str(bundle / "advance.onnx") in engine.errors[0]
    assert "ONNX Runtime" in engine.errors[0]


def test_bad_manifest_falls_back_to_previous_version(tmp_path: Path,
                                                     exported: dict[str, Path]) -> None:
    _deploy(tmp_path, exported["user-old"], exported["user"])
    manifest = tmp_path / "tiny-user-gru" / "20250101T000000Z" / "manifest.json"
    manifest.write_text('{"model": "tiny-user-gru", ')
    engine = Engine(tmp_path)
    assert engine.get("tiny-user-gru").version == "20240101T000000Z"
    assert str(manifest) in engine.errors[0] and "invalid JSON" in engine.errors[0]


def test_only_bundle_broken_raises(tmp_path: Path, exported: dict[str, Path]) -> None:
    _deploy(tmp_path, exported["session"])
    (tmp_path / "tiny-session-gru" / "20250101T000000Z" / "items.txt").write_text("x\n")
    with pytest.raises(BundleError, match=r"items\.txt"):
        Engine(tmp_path)
    with pytest.raises(BundleError, match="does not exist"):
        Engine(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BundleError, match="no model bundle"):
        Engine(empty)


def test_reload_failure_keeps_serving_the_old_set(tmp_path: Path,
                                                  exported: dict[str, Path]) -> None:
    _deploy(tmp_path, exported["user-old"])
    engine = Engine(tmp_path)
    old_key = engine.get("tiny-user-gru").key
    shutil.rmtree(tmp_path / "tiny-user-gru")
    (tmp_path / "tiny-user-gru" / "20990101T000000Z").mkdir(parents=True)
    (tmp_path / "tiny-user-gru" / "20990101T000000Z" / "manifest.json").write_text("{}")
    with pytest.raises(BundleError, match="no model bundle could be loaded"):
        engine.reload()
    assert engine.get("tiny-user-gru").key == old_key  # still serving
    state = engine.get().advance(engine.get().start_session(None), [1])
    assert len(engine.get().top_k(state, 3)) == 3

    shutil.rmtree(tmp_path / "tiny-user-gru")
    _deploy(tmp_path, exported["user"], exported["session"])
    assert sorted(engine.reload()) == ["tiny-session-gru@20250101T000000Z",
                                       "tiny-user-gru@20250101T000000Z"]
    assert engine.get("tiny-user-gru").version == "20250101T000000Z"


def test_concurrent_calls_agree(user_bundle: ModelBundle) -> None:
    """ORT runs are thread-safe: answers from a pool equal sequential answers."""
    histories = [[1 + (i * 7 + j) % N_ITEMS for j in range(4)] for i in range(16)]

    def answer(history: list[int]) -> list[tuple[str, float]]:
        return user_bundle.top_k(user_bundle.advance(user_bundle.start_session(None), history), 5)

    sequential = [answer(h) for h in histories]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(answer, histories)) == sequential


def test_serving_imports_neither_torch_nor_training_code() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    code = ("import sys, service.engine, service.app, cli.main, cli.serve\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'training')\n"
            "assert not loaded, loaded")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_bench_engine_reports_latencies(exported: dict[str, Path]) -> None:
    from loadtest.engine_timing import bench_engine

    result = bench_engine(exported["user"], clicks=40)
    assert result["model"] == "tiny-user-gru@20250101T000000Z" and result["clicks"] == 40
    assert 0 < result["p50_ms"] <= result["p99_ms"]
    assert result["advance_p50_ms"] > 0 and result["top_k_p50_ms"] > 0


def test_provider_choice(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
                         ) -> None:
    """CUDA first where the onnxruntime build offers it, CPU always last; a requested
    provider the build lacks is dropped with a warning. (There is no GPU here: the list of
    available providers is what an onnxruntime-gpu build on a CUDA machine reports.)"""
    import onnxruntime

    from service.engine import choose_providers

    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert choose_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with caplog.at_level("WARNING"):
        chosen = choose_providers(["TensorrtExecutionProvider", "CUDAExecutionProvider"])
    assert chosen == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert "TensorrtExecutionProvider" in caplog.text
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CPUExecutionProvider"])
    assert choose_providers() == ["CPUExecutionProvider"]  # a CPU build: no warning needed
    assert choose_providers([" CUDAExecutionProvider ", ""]) == ["CPUExecutionProvider"]


def test_a_model_that_asks_for_small_score_runs_gets_the_same_lists(tmp_path: Path) -> None:
    """RUM-I asks for score runs of at most ``score_rows`` sessions (its [B, N, K] read
    outgrows the caches); a batch split into such runs answers what one run would."""
    from models import registry

    torch.manual_seed(0)
    model = registry.build("rum-item", N_ITEMS, 4)
    assert model.score_rows == 2
    bundle = ModelBundle(export_bundle(model, tiny_items(N_ITEMS), tmp_path, version="v1"))
    assert bundle.score_rows == 2
    rng = np.random.default_rng(0)
    state = bundle.start_session(None, 5)
    for _ in range(3):
        state = bundle.advance_steps(state, rng.integers(1, N_ITEMS + 1, size=(5, 1)))
    excludes = [{1, 2}, set(), {3}, set(), {4, 5, 6}]
    split = bundle.top_k_rows(state, [5, 3, 5, 7, 5], excludes)
    bundle.score_rows = None
    whole = bundle.top_k_rows(state, [5, 3, 5, 7, 5], excludes)
    assert [[item for item, _ in row] for row in split] == \
        [[item for item, _ in row] for row in whole]
    assert np.allclose([score for row in split for _, score in row],
                       [score for row in whole for _, score in row], atol=1e-6)
