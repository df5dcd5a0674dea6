"""The README's FastAPI example is real code: run it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from websockets.sync.client import connect as ws_connect

from helpers import load_example

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_block(marker: str) -> str:
    text = README.read_text()
    match = re.search(re.escape(marker) + r"\n```python\n(.*?)```", text, re.S)
    assert match, f"no python block after {marker!r} in README.md"
    return match.group(1)


def test_readme_fastapi_lifespan_example_runs() -> None:
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    serve_in_thread = load_example().serve_in_thread  # uvicorn in a thread

    code = readme_block("<!-- tested by tests/test_readme.py -->")
    assert "wshub.start(8765" in code
    namespace: dict = {}
    exec(compile(code.replace("wshub.start(8765", "wshub.start(0"), "README.md", "exec"),
         namespace)
    app = namespace["app"]
    with serve_in_thread(app) as base, httpx.Client(base_url=base, timeout=5) as client:
        hub = app.state.ws_manager
        assert client.post("/odds/1", params={"home": 1.85}).json() == {"delivered": 0}
        with ws_connect(f"ws://127.0.0.1:{hub.port}/api/ws?topics=odds_updates",
                        open_timeout=5) as ws:
            assert json.loads(ws.recv(timeout=5))["topics"] == ["odds_updates"]
            assert client.post("/odds/7", params={"home": 2.5}).json() == {"delivered": 1}
            message = json.loads(ws.recv(timeout=5))
            assert message["data"] == {"match": 7, "home": 2.5}
    assert not hub.running
