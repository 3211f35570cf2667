"""service/pages.py over real HTTP: the catalogue (search, look-up, popularity order, auth,
a bundle without titles), the demo page's files and the offline docs assets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.settings import Settings
from tests.helpers import ITEMS, catalog_entries
from tests.servers import LiveServer


@pytest.fixture
def titled_server(redis_url: str, catalog_artifacts: Path, tmp_path: Path
                  ) -> Iterator[LiveServer]:
    settings = Settings(redis_url=redis_url, artifacts_dir=catalog_artifacts,
                        data_dir=tmp_path / "var", default_model="hrnn-init",
                        api_keys=["k1"])
    with LiveServer(settings) as server:
        yield server


def _get(server: LiveServer, path: str, key: str | None = "k1") -> httpx.Response:
    headers = {"X-API-Key": key} if key else {}
    return httpx.get(server.url + path, headers=headers, timeout=10)


def test_catalog_lists_searches_and_looks_up_titles(titled_server: LiveServer) -> None:
    titles = {entry.item_id: entry for entry in catalog_entries()}
    first = _get(titled_server, "/catalog?limit=5").json()
    assert first["model"]["name"] == "hrnn-init" and first["titled"] is True
    assert first["total"] == len(ITEMS)
    # most popular first (POPULAR ranks ITEMS in order), each with its title and category
    assert [item["item_id"] for item in first["items"]] == ITEMS[:5]
    assert first["items"][0] == {"item_id": "i1", "title": titles["i1"].title,
                                 "category": "Jazz album"}

    found = _get(titled_server, "/catalog?q=ESPRESSO&model=gru4rec").json()
    assert found["model"]["name"] == "gru4rec"
    assert found["total"] == 10 and all(item["category"] == "Espresso machine"
                                        for item in found["items"])

    looked_up = _get(titled_server, "/catalog?ids=i7,nope,i2").json()
    assert [(item["item_id"], item["title"]) for item in looked_up["items"]] == [
        ("i7", titles["i7"].title), ("nope", None), ("i2", titles["i2"].title)]


def test_catalog_errors_share_the_api_shape(titled_server: LiveServer) -> None:
    assert _get(titled_server, "/catalog", key=None).status_code == 401
    assert _get(titled_server, "/catalog", key="wrong").json()["error"]["code"] == \
        "unauthorized"
    unknown = _get(titled_server, "/catalog?model=nope")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_model"
    for query in ("limit=0", "limit=1000", "model=a%20b", "ids=" + ",".join(["x"] * 201)):
        response = _get(titled_server, f"/catalog?{query}")
        assert response.status_code == 422, query
        assert response.json()["error"]["code"] == "invalid_request"


def test_a_bundle_without_catalogue_answers_ids_only(live_server: LiveServer) -> None:
    body = httpx.get(live_server.url + "/catalog?q=i1&limit=3", timeout=10).json()
    assert body["titled"] is False
    assert body["total"] == 11  # i1, i10..i19
    assert all(item["title"] is None for item in body["items"])


def test_page_files_and_docs_assets_are_served_locally(titled_server: LiveServer) -> None:
    page = httpx.get(titled_server.url + "/", timeout=10)
    assert page.status_code == 200 and "static/demo.js" in page.text
    for name, kind in (("demo.js", "javascript"), ("demo.css", "text/css")):
        response = httpx.get(f"{titled_server.url}/static/{name}", timeout=10)
        assert response.status_code == 200 and kind in response.headers["content-type"]
    assert httpx.get(titled_server.url + "/static/../app.py", timeout=10).status_code == 404
    assert httpx.get(titled_server.url + "/static/index.html", timeout=10).status_code == 404

    docs = httpx.get(titled_server.url + "/docs", timeout=10).text
    redoc = httpx.get(titled_server.url + "/redoc", timeout=10).text
    assert "/static/docs/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    assert "/static/docs/redoc.standalone.js" in redoc and "cdn" not in redoc.lower()
    assert "fonts.googleapis" not in redoc
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js",
                 "favicon.png"):
        asset = httpx.get(f"{titled_server.url}/static/docs/{name}", timeout=10)
        assert asset.status_code == 200 and len(asset.content) > 1000, name
    schema = httpx.get(titled_server.url + "/openapi.json", timeout=10).json()
    assert "/catalog" in schema["paths"] and "/" not in schema["paths"]
