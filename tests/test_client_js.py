"""wshub.js as shipped: served by the hub at `<path>/client.js` (type,
ETag and 304, caching, CORS), the same bytes as the file in the Python
package (`wshub.client_js_path()`), installable with npm from a checkout.
Its behaviour is tested in Node (tests/js/) and in Chromium
(test_browser_client.py)."""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess

import pytest

import wshub

CLIENT_DIR = wshub.client_js_path().parent


class Answer:
    """An HTTP response, read whole."""

    def __init__(self, response: http.client.HTTPResponse):
        self.status = response.status
        self.headers = response.headers
        self.body = response.read()

    def getheader(self, name: str) -> str | None:
        return self.headers.get(name)


def get(port: int, path: str, headers: dict[str, str] | None = None) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        return Answer(conn.getresponse())
    finally:
        conn.close()


def test_the_hub_serves_the_packaged_file(make_hub):
    hub = make_hub()
    response = get(hub.port, "/api/ws/client.js")
    assert response.status == 200
    assert response.body == wshub.client_js_path().read_bytes()
    assert response.getheader("content-type") == "text/javascript; charset=utf-8"
    assert response.getheader("cache-control") == "public, max-age=600"
    # A page on the app's origin imports it from the hub's: CORS.
    assert response.getheader("access-control-allow-origin") == "*"
    assert response.getheader("x-content-type-options") == "nosniff"
    etag = response.getheader("etag")
    assert etag and etag.startswith('"') and len(etag) == 42
    # Not a connection attempt refused: nothing counted.
    assert sum(hub.stats()["handshakes_rejected"].values()) == 0


def test_a_current_copy_gets_304(make_hub):
    hub = make_hub()
    etag = get(hub.port, "/api/ws/client.js").getheader("etag")
    for tag in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        response = get(hub.port, "/api/ws/client.js?v=2", {"If-None-Match": tag})
        assert (response.status, response.body) == (304, b""), tag
        assert response.getheader("etag") == etag
        assert response.getheader("cache-control") == "public, max-age=600"
    stale = get(hub.port, "/api/ws/client.js", {"If-None-Match": '"other"'})
    assert stale.status == 200 and stale.body


def test_the_client_follows_the_websocket_path(make_hub):
    hub = make_hub(path="/live/")
    assert get(hub.port, "/live/client.js").status == 200
    assert get(hub.port, "/api/ws/client.js").status == 404
    assert get(hub.port, "/live/client.jsx").status == 404
    root = make_hub(path="/")
    assert get(root.port, "/client.js").status == 200


def test_the_package_holds_the_module_its_types_and_a_matching_package_json():
    package = json.loads((CLIENT_DIR / "package.json").read_text())
    assert package["version"] == wshub.__version__
    assert package["type"] == "module"
    for name in package["files"]:
        assert (CLIENT_DIR / name).is_file(), name
    assert package["exports"]["."] == {"types": "./wshub.d.ts", "default": "./wshub.js"}
    assert wshub.client_js_path().name == "wshub.js"


@pytest.mark.skipif(shutil.which("npm") is None or shutil.which("node") is None,
                    reason="npm or node not installed")
def test_npm_installs_it_from_a_checkout(tmp_path):
    (tmp_path / "package.json").write_text('{"name": "app", "private": true}')
    subprocess.run(["npm", "install", "--offline", "--no-audit", "--no-fund", str(CLIENT_DIR)],
                   cwd=tmp_path, check=True, capture_output=True, timeout=120)
    script = ("import('wshub-client').then((m) => "
              "console.log(JSON.stringify([typeof m.connect, m.backoffDelay(0, 1, 1, () => 0)])))")
    out = subprocess.run(["node", "-e", script], cwd=tmp_path, check=True,
                         capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout) == ["function", 0]
