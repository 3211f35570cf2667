"""Who may call what: client and admin API keys, the refusal to serve a network without
keys, the Host allow-list and JSON-only state changes.

Roles. Client keys (``NEXTCLICK_API_KEYS``) open the client routes (events,
recommendations, sessions, models, metrics); admin keys (``NEXTCLICK_ADMIN_API_KEYS``)
open the admin routes (``DELETE /users/{id}``, ``/admin/*``) and every client route. A
client key on an admin route is 403, a missing or unknown key 401.

Without keys. Client routes are open only when the server listens on loopback, unless the
operator says ``--insecure`` (``NEXTCLICK_ALLOW_INSECURE=true``); admin routes without admin
keys are open only on loopback and only while no client keys are set either: configured
client keys mean someone may be reaching this loopback server through a proxy, and an
open admin route would then be open to them.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from typing import Annotated, Literal

from fastapi import Request, Security
from fastapi.security import APIKeyHeader
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ApiError, error_body
from service.settings import Settings

log = logging.getLogger(__name__)

Role = Literal["client", "admin"]

#: Host names a loopback-bound server answers to by default ("testserver" is the name
#: Starlette's TestClient sends).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]", "testserver")

#: Routes answered whatever the Host header: orchestrators probe them by pod address.
HEALTH_PATHS = frozenset({"/healthz", "/readyz"})

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (``0.0.0.0`` and ``::`` are not)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it resolves to whatever DNS says


def check_exposure(settings: Settings) -> None:
    """Refuse, in words, to serve a network address with the client routes open."""
    if is_loopback(settings.host) or settings.api_keys:
        return
    if not settings.allow_insecure:
        raise ValueError(
            f"refusing to serve on {settings.host} without API keys: anyone who can reach "
            f"it could read and write sessions and users. Set NEXTCLICK_API_KEYS (and "
            f"NEXTCLICK_ADMIN_API_KEYS), serve on 127.0.0.1, or pass --insecure "
            f"(NEXTCLICK_ALLOW_INSECURE=true) for a demo on a network only you reach")
    log.warning("serving on %s WITHOUT API keys (--insecure): the client routes are open to "
                "anyone who can reach this address", settings.host)


def allowed_hosts(settings: Settings) -> list[str]:
    """The Host allow-list in force: the setting, else the loopback names on loopback (a
    web page elsewhere cannot reach a local server through DNS rebinding), else any."""
    if settings.allowed_hosts is not None:
        return settings.allowed_hosts
    return list(LOOPBACK_HOSTS) if is_loopback(settings.host) else ["*"]


def _matches(presented: bytes, keys: list[str] | None) -> bool:
    # Compare with every key, without stopping at the first match, in constant time each.
    found = False
    for key in keys or ():
        found |= hmac.compare_digest(presented, key.encode())
    return found


def identify(settings: Settings, api_key: str | None) -> Role | None:
    """The role of a presented key, or None for no key or an unknown one."""
    if not api_key:
        return None
    presented = api_key.encode()
    if _matches(presented, settings.admin_api_keys):
        return "admin"
    if _matches(presented, settings.api_keys):
        return "client"
    return None


def _unauthorized() -> ApiError:
    return ApiError(401, "unauthorized", "missing or invalid X-API-Key header",
                    headers={"WWW-Authenticate": "APIKey"})


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def require_client(request: Request,
                         api_key: Annotated[str | None, Security(api_key_header)] = None
                         ) -> None:
    """Client routes: open without client keys (startup made sure that is on loopback or
    explicitly insecure), else a client or an admin key."""
    settings = _settings(request)
    if settings.api_keys and identify(settings, api_key) is None:
        raise _unauthorized()


async def require_admin(request: Request,
                        api_key: Annotated[str | None, Security(api_key_header)] = None
                        ) -> None:
    """Admin routes: an admin key; without admin keys, only a loopback server with no
    client keys answers them."""
    settings = _settings(request)
    if settings.admin_api_keys:
        role = identify(settings, api_key)
        if role is None:
            raise _unauthorized()
        if role != "admin":
            raise ApiError(403, "forbidden", "this route needs an admin key")
        return
    if settings.api_keys or not is_loopback(settings.host):
        raise ApiError(403, "forbidden", "admin routes are off: the server has no admin keys "
                       "(NEXTCLICK_ADMIN_API_KEYS)")


_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def require_json_body(request: Request) -> None:
    """State-changing requests take JSON only, and never come from another site's page.

    A browser page elsewhere may send a "simple" cross-origin POST (form or text/plain
    body, no preflight) to a server it can reach, such as one on the user's loopback;
    requiring ``application/json`` forces a preflight this API never grants, and browsers
    mark such requests ``Sec-Fetch-Site: cross-site`` (also the body-less ones)."""
    if request.method not in _STATE_CHANGING:
        return
    if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
        raise ApiError(403, "forbidden", "state-changing requests from another site's page "
                       "are refused")
    has_body = (request.headers.get("content-length", "0").strip() not in ("", "0")
                or "transfer-encoding" in request.headers)
    if not has_body:
        return
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise ApiError(415, "unsupported_media_type",
                       "the body must be JSON sent with the header Content-Type: "
                       f"application/json (got {media_type or 'no Content-Type'})")


class HostAllowList:
    """Starlette's ``TrustedHostMiddleware`` (the DNS-rebinding defence) with its refusal
    rendered in the API's error shape; health routes are answered for any Host."""

    _ALLOWED = "nextclick.host_allowed"

    def __init__(self, app: ASGIApp, hosts: list[str]) -> None:
        self.app = app
        self.allow_any = "*" in hosts
        self.check = TrustedHostMiddleware(self._allowed, allowed_hosts=hosts,
                                           www_redirect=False)

    async def _allowed(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[self._ALLOWED] = True
        await self.app(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (self.allow_any or scope["type"] != "http"
                or scope.get("path") in HEALTH_PATHS):
            await self.app(scope, receive, send)
            return

        async def send_or_refuse(message: Message) -> None:
            if scope.get(self._ALLOWED):
                await send(message)
            elif message["type"] == "http.response.start":
                body = error_body("invalid_host", "the Host header names a host this server "
                                  "does not answer to (NEXTCLICK_ALLOWED_HOSTS)")
                await send({"type": "http.response.start", "status": 400,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})

        await self.check(scope, receive, send_or_refuse)
