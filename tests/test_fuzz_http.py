"""docs/openapi.yaml against the real app: the document lists exactly the routes the app serves, and Schemathesis
requests generated from it (valid and invalid) get no 5xx and only answers the document allows. The app runs on
127.0.0.1 with a scripted engine, so an answer takes microseconds rather than a model's seconds."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from daemon.app import create_app
from daemon.settings import load_settings
from tests.fakes import API_TOKEN, ScriptedEngine, Served
from tests.test_fuzz_parsers import record_counts
from tests.test_openai_protocol import ServerThread
from tests.test_sessions_api import ask
from tests.test_ws_protocol import connect

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "docs" / "openapi.yaml"
# Documented in docs/protocol.md only: the WebSocket chat and the kiosk page (its files are whatever the build has).
UNDOCUMENTED_MODULES = ("daemon.chat_ws", "daemon.kiosk_page")
CHAT = "POST /v1/chat/completions"
# The chat request's rules between fields (a tool turn answers the call before it, a named tool_choice is a declared
# tool, unique tool names, a schema llama.cpp's converter takes): what a refusal of document-valid data may name.
CROSS_FIELD_RULES = re.compile(r"messages\[\d+\]\.tool_call_id|tool_choice(\.function\.name)?|tools"
                               r"|response_format\.json_schema\.schema")

schema = schemathesis.openapi.from_path(SPEC)
COUNTS: Counter[str] = Counter()
STATUSES: Counter[str] = Counter()


# ---- the document and the app agree ----

def app_routes(tmp_path: Path) -> set[tuple[str, str]]:
    app = create_app(load_settings({"state_dir": str(tmp_path), "voice": False}, environ={}), ScriptedEngine())
    routes = set()
    for route in app.router.routes():
        handler_module = getattr(route.handler, "__module__", "")
        if route.method == "HEAD" or handler_module in UNDOCUMENTED_MODULES or route.resource is None:
            continue  # HEAD: aiohttp adds one beside every GET.
        if route.resource.canonical.startswith("/assets"):
            continue  # The page's static files.
        routes.add((route.method, route.resource.canonical))
    return routes


def test_the_document_lists_exactly_the_routes_of_the_app(tmp_path: Path) -> None:
    document = yaml.safe_load(SPEC.read_text())
    documented = {(method.upper(), path) for path, item in document["paths"].items()
                  for method in item if method in ("get", "post", "put", "patch", "delete")}
    served = app_routes(tmp_path)
    assert served - documented == set(), "routes missing from docs/openapi.yaml"
    assert documented - served == set(), "docs/openapi.yaml documents routes the app does not have"
    assert ("POST", "/v1/chat/completions") in served and ("DELETE", "/api/sessions/{id}") in served


# ---- Schemathesis ----

@pytest.fixture(scope="module")
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    failed = request.session.testsfailed
    server = ServerThread(ScriptedEngine(["Hello", ",", " world"]), {"max_tokens": 8})
    yield server.start()
    server.stop()
    record_counts("http", dict(COUNTS), crashes=request.session.testsfailed - failed,
                  statuses=dict(STATUSES))


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@schema.parametrize()
@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_generated_requests_get_documented_answers(case: Any, served: Served, http: requests.Session) -> None:
    label = case.operation.label
    COUNTS[label] += 1
    response = case.call(base_url=served.url, session=http, timeout=10)
    STATUSES[f"{label} {response.status_code}"] += 1
    assert response.status_code < 500, response.text
    # JSON Schema cannot say "the last message is the user's (or a tool's)", nor the other rules between fields that
    # docs/openapi.yaml lists in prose, so a chat request valid by the document may still be refused for one of those,
    # and only for those (checked below); any other refusal of valid data is a disagreement.
    excluded = [positive_data_acceptance] if label == CHAT else []
    case.validate_response(response, headers=dict(response.request.headers), excluded_checks=excluded)
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if label == CHAT and positive and response.status_code == 400:
        error = response.json()["error"]
        if error["param"] == "messages":
            assert case.body["messages"][-1]["role"] not in ("user", "tool"), f"valid data refused: {error}"
        else:
            assert CROSS_FIELD_RULES.fullmatch(error["param"] or ""), f"valid data refused: {error}"


def test_real_sessions_conform_to_the_document(served: Served) -> None:
    """Fuzzed ids never exist, so the success answers of the session API are checked here, on a real session."""
    async def converse() -> str:
        async with connect(served) as client:
            return await ask(client, "Where is the exit?")

    session = asyncio.run(converse())
    item = f"/api/sessions/{session}"
    calls = [("GET", "/api/sessions", "/api/sessions", None, 200), ("GET", "/api/sessions/{id}", item, None, 200),
             ("PATCH", "/api/sessions/{id}", item, {"title": " Exit \n"}, 200),
             ("DELETE", "/api/sessions/{id}", item, None, 204), ("GET", "/api/sessions/{id}", item, None, 404)]
    for method, template, path, body, status in calls:
        response = requests.request(method, served.url + path, json=body, timeout=5, headers=AUTH)
        assert response.status_code == status, response.text
        schema[template][method].validate_response(response)
        COUNTS[f"{method} {template} (real session)"] += 1
