"""Item catalogues from click log to bundle: `nextclick prepare` keeps the synthetic
sidecar, MovieLens movies.csv or a --catalog file as DATASET/catalog.csv (the dataset's
items only), and `nextclick export` puts it in the bundle, listed in the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from bundle import CATALOG_FILE, read_catalog
from cli.main import main
from models import registry
from training.data.catalog import CATALOG_CSV, read_catalog_file
from training.data.dataset import PreparedDataset
from training.data.synth import SynthConfig, generate, write
from training.fit.checkpoint import save_run

SMALL = {"users": 60, "items": 120, "clusters": 6, "sessions_per_user": 4.0}


def test_synth_sidecar_reaches_the_dataset_and_the_bundle(tmp_path: Path) -> None:
    events, catalog = generate(SynthConfig(seed=2, **SMALL))
    log = tmp_path / "synth.csv"
    assert write(events, catalog, log) == tmp_path / "synth.items.csv"
    data_dir = tmp_path / "data"
    assert main(["prepare", "--format", "csv", "--input", str(log), "--protocol",
                 "last-session", "--out", str(data_dir)]) == 0
    dataset = PreparedDataset.load(data_dir)
    kept = pl.read_csv(data_dir / CATALOG_CSV, infer_schema=False)
    assert kept.columns == ["item_id", "title", "category"]
    assert set(kept["item_id"]) == set(dataset.items)  # filtered items are left out
    assert dataset.stats["catalog"] == {"source": str(tmp_path / "synth.items.csv"),
                                        "items": dataset.n_items}
    first = catalog.filter(pl.col("item_id") == dataset.items[0]).row(0, named=True)
    assert kept.filter(pl.col("item_id") == dataset.items[0]).row(0, named=True) == {
        "item_id": first["item_id"], "title": first["title"], "category": first["category"]}

    model = registry.build("gru4rec", dataset.n_items, dataset.n_users, hidden_size=8)
    run = save_run(tmp_path / "run", model, dataset, {"epochs": 0})
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "artifacts"),
                 "--version", "v1"]) == 0
    bundle = tmp_path / "artifacts" / "gru4rec" / "v1"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert CATALOG_FILE in manifest["files"]
    titles = read_catalog(bundle / CATALOG_FILE)
    assert list(titles) == kept["item_id"].to_list()
    assert titles[first["item_id"]].title == first["title"]

    # prepared again without a catalogue, the old catalog.csv goes
    assert main(["prepare", "--format", "csv", "--input", str(log), "--protocol",
                 "last-session", "--out", str(data_dir), "--no-catalog"]) == 0
    assert not (data_dir / CATALOG_CSV).exists()
    assert "catalog" not in PreparedDataset.load(data_dir).stats


def test_movielens_titles_and_genres_next_to_the_ratings(tmp_path: Path) -> None:
    rows = ["userId,movieId,rating,timestamp"]
    for user in range(1, 5):
        for session in range(3):
            start = 1_000_000 + session * 100_000 + user * 1000
            rows += [f"{user},{movie},4.0,{start + step * 60}"
                     for step, movie in enumerate((1, 2, 3))]
    (tmp_path / "ratings.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n'
        '2,"Heat, the Director\'s Cut (1995)",Action|Crime\n3,Nothing (2000),'
        '(no genres listed)\n99,Never Rated (1990),Drama\n')
    out = tmp_path / "data"
    assert main(["prepare", "--format", "movielens", "--input", str(tmp_path / "ratings.csv"),
                 "--protocol", "last-session", "--out", str(out),
                 "--min-item-support", "1"]) == 0
    kept = pl.read_csv(out / CATALOG_CSV, infer_schema=False)
    assert kept.rows() == [("1", "Toy Story (1995)", "Adventure, Animation"),
                           ("2", "Heat, the Director's Cut (1995)", "Action, Crime"),
                           ("3", "Nothing (2000)", None)]


def test_catalog_option_and_its_errors(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    names = tmp_path / "names.tsv"
    names.write_text("id\tname\nx\tThe X\n")
    frame = read_catalog_file(names)
    assert frame.rows() == [("x", "The X", None)]
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("sku,label\n1,a\n")
    with pytest.raises(ValueError, match=r"wrong\.csv line 1: a catalogue needs an item id "
                                         r"column"):
        read_catalog_file(wrong)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("item_id,title\n1,Caf\u00e9\n".encode("latin-1"))
    code = main(["prepare", "--format", "csv", "--input", str(latin), "--protocol", "time",
                 "--out", str(tmp_path / "out"), "--catalog", str(latin)])
    assert code == 2
    assert "latin.csv: not a text file (not UTF-8" in capsys.readouterr().err
