"""Pages for people: the demo page (``/`` and its files under ``/static/``), the item
catalogue behind it (``GET /catalog``), and the API docs (``/docs``, ``/redoc``) with the
Swagger UI and ReDoc assets served from the ``fastapi-offline`` package instead of a CDN,
so every page works on a machine without internet access. ``create_app`` includes
``router``; the catalogue needs the same client key as the API routes.

The catalogue of a model is its bundle's optional ``catalog.json`` (``bundle.catalog``):
titles and categories per item id. A bundle without one still answers, with the item ids
alone (``titled: false``).
"""

from __future__ import annotations

import asyncio
import functools
import mimetypes
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from bundle import (
    CATALOG_FILE,
    ITEMS_FILE,
    POPULAR_FILE,
    BundleError,
    Manifest,
    read_catalog,
    read_items,
    read_popular,
)
from service.errors import ApiError, invalid
from service.routes import reject_repeated_query
from service.security import require_client
from service.sessions import SessionService

#: the demo page's own files (service/static/)
DEMO_FILES = ("demo.css", "demo.js")
#: the docs assets taken from fastapi-offline's package data
DOCS_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
DOCS_ASSETS = "/static/docs"
MAX_CATALOG_LIMIT = 200
MAX_CATALOG_IDS = 200

router = APIRouter()


# ---- files ----------------------------------------------------------------------------
@functools.cache
def _package_file(package: str, *parts: str) -> bytes | None:
    try:
        return resources.files(package).joinpath(*parts).read_bytes()
    except (FileNotFoundError, OSError, ModuleNotFoundError):
        return None


def _file_response(body: bytes | None, name: str, cache: str) -> Response:
    if body is None:
        raise ApiError(404, "not_found", f"no file {name!r}")
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if media_type.startswith("text/") or media_type.endswith("javascript"):
        media_type += "; charset=utf-8"
    return Response(body, media_type=media_type, headers={"Cache-Control": cache})


@router.get("/", include_in_schema=False)
async def demo_page() -> HTMLResponse:
    body = _package_file("service", "static", "index.html")
    if body is None:
        return HTMLResponse("<!doctype html><title>nextclick</title>"
                            "<p>nextclick is running: see <a href='docs'>/docs</a>")
    return HTMLResponse(body, headers={"Cache-Control": "no-cache"})


@router.get("/static/{name}", include_in_schema=False)
async def demo_file(name: str) -> Response:
    body = _package_file("service", "static", name) if name in DEMO_FILES else None
    return _file_response(body, name, "no-cache")


#: ReDoc always shows the Redocly logo from a CDN (no option turns it off); the served
#: script names an empty image instead, which ReDoc's own onError handler hides, so the
#: page makes no outside request (the offline docs test would see one)
_REDOC_CDN_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"


@functools.cache
def _docs_asset(name: str) -> bytes | None:
    body = _package_file("fastapi_offline", "static", name) if name in DOCS_FILES else None
    if body is not None and name == "redoc.standalone.js":
        body = body.replace(_REDOC_CDN_LOGO, b"data:,")
    return body


@router.get(DOCS_ASSETS + "/{name}", include_in_schema=False)
async def docs_file(name: str) -> Response:
    return _file_response(_docs_asset(name), name, "public, max-age=86400")


# ---- API docs ---------------------------------------------------------------------------
def _root(request: Request) -> str:
    return str(request.scope.get("root_path", ""))


@router.get("/docs", include_in_schema=False)
async def swagger_ui(request: Request) -> HTMLResponse:
    root = _root(request)
    app = request.app
    return get_swagger_ui_html(
        openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - API docs",
        oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
        swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
        swagger_ui_parameters=app.swagger_ui_parameters)


@router.get("/docs/oauth2-redirect", include_in_schema=False)
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc", include_in_schema=False)
async def redoc(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}", title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png", with_google_fonts=False)


# ---- catalogue ----------------------------------------------------------------------------
class CatalogItem(BaseModel):
    item_id: str
    title: str | None = Field(description="null when the bundle has no catalogue entry")
    category: str | None


class CatalogModel(BaseModel):
    name: str
    version: str


class CatalogOut(BaseModel):
    model: CatalogModel
    titled: bool = Field(description="whether the model's bundle has a catalogue "
                         "(catalog.json); without one, items carry no titles")
    total: int = Field(description="items matching the query (all of them for no query)")
    items: list[CatalogItem]


@dataclass(frozen=True)
class _Catalog:
    """One bundle's items, most popular first, with their titles."""

    order: tuple[str, ...]
    entries: dict[str, tuple[str | None, str | None]]  # item id -> (title, category)
    titled: bool
    search_text: tuple[str, ...]  # lower-cased "id title category", aligned with order


@functools.lru_cache(maxsize=32)
def _load_catalog(path: Path, key: str) -> _Catalog:
    """Built once per bundle folder (``key``, name@version, keeps a re-exported folder
    apart) from its files: the item list, the popularity order and the titles. The
    engine checked every file's hash against the manifest when it loaded the bundle."""
    items = read_items(path / ITEMS_FILE, Manifest.read(path).n_items)[1:]
    rank = {item: position for position, (item, _) in enumerate(read_popular(
        path / POPULAR_FILE))}
    order = tuple(sorted(items, key=lambda item: rank.get(item, len(rank))))
    titles = read_catalog(path / CATALOG_FILE)
    entries: dict[str, tuple[str | None, str | None]] = {
        item: ((titles[item].title, titles[item].category) if item in titles
               else (None, None)) for item in order}
    search = tuple(" ".join(part for part in (item, *entries[item]) if part).lower()
                   for item in order)
    return _Catalog(order, entries, bool(titles), search)


async def _catalog_of(service: SessionService, model: str | None) -> tuple[_Catalog, str, str]:
    bundle = service.bundle(model)
    try:
        catalog = await asyncio.to_thread(_load_catalog, bundle.path, bundle.key)
    except BundleError as exc:  # a bundle edited on disk after it was loaded
        raise ApiError(503, "unavailable", f"the catalogue of {bundle.key} cannot be "
                       "read") from exc
    return catalog, bundle.name, bundle.version


@router.get("/catalog", response_model=CatalogOut, tags=["catalogue"],
            dependencies=[Depends(require_client), Depends(reject_repeated_query)],
            summary="Items of a model with their titles: search, look up, or most popular")
async def catalog(
        request: Request,
        q: Annotated[str | None, Query(max_length=100, description="case-insensitive text "
                                       "to find in the item id, title or category")] = None,
        ids: Annotated[str | None, Query(description="comma-separated item ids to look up, "
                                         f"at most {MAX_CATALOG_IDS}; answered in this "
                                         "order")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_CATALOG_LIMIT,
                                    description="most items returned")] = 50,
        model: Annotated[str | None, Query(max_length=128, description="model name "
                                           "(default: the service's default model)")] = None,
) -> CatalogOut:
    service: SessionService = request.app.state.service
    if model is not None and not all(c.isalnum() or c in "._:@-" for c in model):
        raise invalid("query.model", "use only letters, digits and . _ : @ -")
    found, name, version = await _catalog_of(service, model)
    if ids is not None:
        wanted = [part for part in ids.split(",") if part]
        if len(wanted) > MAX_CATALOG_IDS:
            raise invalid("query.ids", f"at most {MAX_CATALOG_IDS} item ids")
        chosen = wanted
    elif q:
        needle = q.strip().lower()
        chosen = [item for item, text in zip(found.order, found.search_text, strict=True)
                  if needle in text]
    else:
        chosen = list(found.order)
    items = [CatalogItem(item_id=item, title=found.entries.get(item, (None, None))[0],
                         category=found.entries.get(item, (None, None))[1])
             for item in chosen[:limit if ids is None else MAX_CATALOG_IDS]]
    return CatalogOut(model=CatalogModel(name=name, version=version), titled=found.titled,
                      total=len(chosen), items=items)
