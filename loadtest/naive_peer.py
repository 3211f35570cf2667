"""The service a user would write themselves, as the benchmark's peer: FastAPI + redis-py +
eager PyTorch re-running NARM over the session's last 19 clicks on every click.

Per click it appends the item to the session's list in Redis and reads back the last 19
(one pipelined round trip), runs NARM's forward over that window with torch (no ONNX, no
cached state, no batching across requests), takes the top-k and answers. The endpoint is a
plain ``def``: FastAPI runs it in its thread pool, as such services usually do. Same
catalogue size and the same NARM shape as ours (random weights: accuracy is not what is
measured), its own Redis, one worker. ``GET /sessions/{id}`` returns the stored clicks for
the benchmark's end-state check.

Run by ``nextclick bench --peer naive``, or on its own::

    python -m loadtest.naive_peer --port 8100 --redis-url redis://127.0.0.1:6379/0
"""

import argparse
from typing import Any

from pydantic import BaseModel

WINDOW = 19  # NARM's max session length (the paper's)


class Event(BaseModel):
    item_id: str
    user_id: str | None = None


def create_peer_app(n_items: int, redis_url: str, seed: int = 0) -> Any:
    import redis
    import torch
    from fastapi import FastAPI

    from models import registry

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    model = registry.build("narm", n_items, 1).eval()
    index = {f"item-{i}": i for i in range(1, n_items + 1)}
    names = ["", *index]
    client = redis.Redis.from_url(redis_url)

    app = FastAPI(title="naive peer")

    @app.post("/sessions/{session_id}/events")
    def click(session_id: str, event: Event, k: int = 20) -> dict[str, Any]:
        key = f"peer:{session_id}"
        pipe = client.pipeline()
        pipe.rpush(key, event.item_id)
        pipe.expire(key, 7 * 24 * 3600)
        pipe.lrange(key, -WINDOW, -1)
        clicked = [index.get(raw.decode(), 0) for raw in pipe.execute()[2]]
        window = torch.tensor([[0] * (WINDOW - len(clicked)) + clicked])  # [1, 19]
        with torch.no_grad():
            scores = model.score({"window": window})                       # [1, N+1]
            top = torch.topk(scores, k, dim=1)
        return {"session_id": session_id, "recommendations": [
            {"item_id": names[i], "score": float(s)}
            for i, s in zip(top.indices[0].tolist(), top.values[0].tolist(), strict=True)]}

    @app.get("/sessions/{session_id}")
    def session(session_id: str) -> dict[str, Any]:
        clicks = client.lrange(f"peer:{session_id}", 0, -1)
        return {"session_id": session_id,
                "clicks": [{"item_id": raw.decode()} for raw in clicks]}

    @app.get("/readyz")
    def ready() -> dict[str, str]:
        client.ping()
        return {"status": "ready"}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--items", type=int, default=40_000)
    args = parser.parse_args()
    uvicorn.run(create_peer_app(args.items, args.redis_url), host="127.0.0.1",
                port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
