"""Bad input: the API fuzzed from its own OpenAPI schema (schemathesis, real HTTP against a
live server with a real Redis and real ONNX bundles), plus hand-picked extremes and a
10,000-event session."""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from service.app import create_app
from service.settings import Settings
from tests.servers import LiveServer

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


EXAMPLES = 15  # per operation and mode; the whole fuzz run stays well under a minute


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda mode: mode.value)
def test_api_fuzzed_from_its_openapi_schema(live_server: LiveServer,
                                            mode: GenerationMode) -> None:
    """No 500, every status documented, every body as the schema says, for schema-valid
    (positive) and schema-violating (negative) input to every operation. (Driven through
    hypothesis directly: with schemathesis 4.32 and pytest 9.2, the plugin's
    ``schemathesis.pytest.from_fixture`` failed with "'Function' object has no attribute
    '_nodeid'".)"""
    schema = schemathesis.openapi.from_url(f"{live_server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    calls: dict[str, int] = {}
    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=CHECKS)
            calls[case.operation.label] = calls.get(case.operation.label, 0) + 1

        try:
            fuzz()
        except Unsatisfiable:
            # Nothing in the operation can violate the schema (no parameters, no body).
            assert mode is GenerationMode.NEGATIVE and not operation.definition.raw.get(
                "parameters") and "requestBody" not in operation.definition.raw
    assert calls.get("POST /sessions/{session_id}/events", 0) >= EXAMPLES // 2
    assert calls.get("GET /recommend", 0) >= EXAMPLES // 2


ODD_REQUESTS = [
    ("unicode-session", "post", "/sessions/s%C3%A9/events", {"json": {"item_id": "i1"}}, 422),
    # An encoded slash is a path separator to the router: no such route.
    ("slash-in-session", "post", "/sessions/a%2Fb/events", {"json": {"item_id": "i1"}}, 404),
    ("nul-in-session", "get", "/sessions/a%00b", {}, 422),
    ("nul-in-item", "post", "/sessions/s/events", {"json": {"item_id": "a\x00b"}}, 422),
    ("emoji-user", "post", "/sessions/s/events", {"json": {"item_id": "i1", "user_id": "😀"}},
     422),
    ("huge-item-id", "post", "/sessions/s/events", {"json": {"item_id": "x" * 20_000}}, 422),
    ("huge-body", "post", "/sessions/s/events",
     {"content": b'{"item_id": "' + b"x" * 10_000_000 + b'"}',
      "headers": {"content-type": "application/json"}}, 413),
    ("k-negative", "get", "/recommend?k=-1", {}, 422),
    ("k-1e9", "get", "/recommend?k=1000000000", {}, 422),
    ("k-1e30", "get", "/recommend?k=1000000000000000000000000000000", {}, 422),
    ("k-zero", "get", "/recommend?k=0", {}, 422),
    ("unknown-model", "get", "/recommend?model=nope", {}, 404),
    ("unknown-model-charset", "get", "/recommend?model=..%2F..%2Fetc", {}, 422),
    ("timestamp-huge", "post", "/sessions/s/events",
     {"json": {"item_id": "i1", "timestamp": 1e300}}, 422),
    ("timestamp-negative", "post", "/sessions/s/events",
     {"json": {"item_id": "i1", "timestamp": -1}}, 422),
    ("event-type-odd", "post", "/sessions/s/events",
     {"json": {"item_id": "i1", "event_type": "a b"}}, 422),
    ("deep-json", "post", "/sessions/s/events",
     {"content": b"[" * 5000 + b"]" * 5000, "headers": {"content-type": "application/json"}},
     400),
]


@pytest.mark.parametrize(("method", "url", "kwargs", "status"),
                         [case[1:] for case in ODD_REQUESTS],
                         ids=[case[0] for case in ODD_REQUESTS])
def test_odd_input_gets_a_clear_4xx(client: TestClient, method: str, url: str,
                                    kwargs: dict[str, object], status: int) -> None:
    response = client.request(method, url, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] and error["message"]
    assert client.get("/sessions/s").status_code == 404  # nothing was recorded


def test_ten_thousand_events_in_one_session_stay_bounded(settings: Settings) -> None:
    import redis

    bounded = settings.model_copy(update={"max_session_clicks": 200})
    with TestClient(create_app(bounded)) as client:
        for batch in range(1000):
            response = client.post("/sessions/long/events", params={"k": 5}, json={"events": [
                {"item_id": f"i{(batch * 10 + n) % 40 + 1}", "user_id": "marathon",
                 "event_id": f"e{batch * 10 + n}", "timestamp": 1_700_000_000.0 + batch}
                for n in range(10)]})
            assert response.status_code == 200, response.text
            assert response.json()["accepted"] == 10
            assert len(response.json()["recommendations"]) == 5
        session = client.get("/sessions/long").json()
        assert len(session["clicks"]) == 200 and session["status"] == "open"
    assert settings.redis_url is not None
    db = redis.Redis.from_url(settings.redis_url)
    try:
        assert db.hget("nc:{s:long}:meta", "total") == b"10000"
        assert db.llen("nc:{s:long}:clicks") == 200
        assert db.zcard("nc:{s:long}:events") == settings.max_event_ids  # bounded too
        assert db.hget("nc:{s:long}:state", "hrnn-init@v1#n") == b"10000"
    finally:
        db.close()
