"""WATCH/MULTI against a Lua compare-and-set on Redis, the two ways the service could update
a cached state without losing a concurrent update (``nextclick bench --cas``)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

_CAS_SCRIPT = """
if (redis.call('HGET', KEYS[1], 'v') or '0') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', tonumber(ARGV[1]) + 1, 'blob', ARGV[2])
return 1
"""


async def _cas_run(url: str, method: str, clients: int, updates: int, shared: bool
                   ) -> dict[str, Any]:
    """``clients`` concurrent writers each apply ``updates`` read-modify-write updates (read
    the version, write version + 1 and a 400-byte blob), to one shared key or to a key each,
    with WATCH/MULTI/EXEC or a Lua compare-and-set, retrying on conflict."""
    import redis.asyncio as aioredis
    from redis.exceptions import WatchError

    client = aioredis.Redis.from_url(url, max_connections=clients + 4)
    blob = os.urandom(400)
    sha = await client.script_load(_CAS_SCRIPT)
    keys = [f"bench:cas:{method}:{'shared' if shared else index}" for index in range(clients)]
    await client.delete(*set(keys))
    retries = 0

    async def writer(key: str) -> None:
        nonlocal retries
        for _ in range(updates):
            while True:
                if method == "lua":
                    version = await client.hget(key, "v")
                    expected = version.decode() if version else "0"
                    if await client.evalsha(sha, 1, key, expected, blob):
                        break
                else:
                    async with client.pipeline(transaction=True) as pipe:
                        try:
                            await pipe.watch(key)
                            version = await pipe.hget(key, "v")
                            pipe.multi()
                            pipe.hset(key, mapping={"v": int(version or 0) + 1, "blob": blob})
                            await pipe.execute()
                            break
                        except WatchError:
                            pass
                retries += 1

    started = time.perf_counter()
    await asyncio.gather(*(writer(key) for key in keys))
    wall = time.perf_counter() - started
    final = 0
    for key in set(keys):
        final += int(await client.hget(key, "v") or 0)
    await client.delete(*set(keys))
    await client.aclose()
    return {"method": method, "key": "shared" if shared else "one per client",
            "clients": clients, "updates_per_s": round(clients * updates / wall),
            "retries": retries, "lost_updates": clients * updates - final}


def bench_cas(clients: int, updates: int) -> list[dict[str, Any]]:
    """WATCH/MULTI against Lua compare-and-set on a Redis (NEXTCLICK_REDIS_URL, else a
    throwaway embedded server)."""
    import tempfile

    from service.embedded import EmbeddedRedis

    url = os.environ.get("NEXTCLICK_REDIS_URL")
    with tempfile.TemporaryDirectory() as folder:
        server = None
        if not url:
            server = EmbeddedRedis(Path(folder), appendonly=False)
            url = server.start()
        try:
            return [asyncio.run(_cas_run(url, method, clients, updates, shared))
                    for shared in (False, True) for method in ("watch", "lua")]
        finally:
            if server is not None:
                server.stop()
