"""The README's FastAPI example is real code: run it, as written, and run
the README's test of it with the pytest plugin."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from websockets.sync.client import connect as ws_connect

from helpers import load_example

pytest_plugins = ["pytester"]

README = Path(__file__).resolve().parent.parent / "README.md"
APP_MARKER = "<!-- tested by tests/test_readme.py -->"
TEST_MARKER = "<!-- tested by tests/test_readme.py, with the app above as myapp.py -->"


def readme_block(marker: str) -> str:
    text = README.read_text()
    match = re.search(re.escape(marker) + r"\n```python\n(.*?)```", text, re.S)
    assert match, f"no python block after {marker!r} in README.md"
    return match.group(1)


def test_readme_fastapi_lifespan_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    serve_in_thread = load_example().serve_in_thread  # uvicorn in a thread

    monkeypatch.setenv("WSHUB_WS_PORT", "0")  # the app's own configuration
    namespace: dict = {}
    exec(compile(readme_block(APP_MARKER), "README.md", "exec"), namespace)
    app = namespace["app"]
    with serve_in_thread(app) as base, httpx.Client(base_url=base, timeout=5) as client:
        hub = app.state.ws_manager
        assert hub.port != 8765
        assert client.post("/odds/1", params={"home": 1.85}).json() == {"delivered": 0}
        with ws_connect(f"ws://127.0.0.1:{hub.port}/api/ws?topics=odds_updates",
                        open_timeout=5) as ws:
            assert json.loads(ws.recv(timeout=5))["topics"] == ["odds_updates"]
            assert client.post("/odds/7", params={"home": 2.5}).json() == {"delivered": 1}
            message = json.loads(ws.recv(timeout=5))
            assert message["data"] == {"match": 7, "home": 2.5}
    assert not hub.running


def test_readme_test_of_the_fastapi_app_passes_while_its_port_is_taken(
        pytester: pytest.Pytester) -> None:
    """The README's test of its FastAPI app, in a fresh pytest process with
    the plugin, while something (say, the running demo) holds port 8765."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    pytester.makepyfile(myapp=readme_block(APP_MARKER),
                        test_myapp=readme_block(TEST_MARKER))
    # No filterwarnings = error: starlette's TestClient may warn about the
    # installed httpx, which is not what this checks.
    blocker = socket.socket()
    try:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            blocker.bind(("127.0.0.1", 8765))
            blocker.listen()
        except OSError:
            pass  # already taken by something else: the same situation
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    finally:
        blocker.close()
    result.assert_outcomes(passed=1)
