"""Every option's default is the same wherever it is written.

The truth is the core's `Config::default()`; the C facade copies it into
`wshub_options_init()` (printed by `tests/c/print_defaults.c`). Python
writes its defaults as literals in four places (the native `Server`'s
signature and docstring, `wshub.start`'s signature and docstring), the
stubs in a fifth and the README's options table in a sixth. This test reads
each of them and compares it with C's, so that a default changed in one
place and not the others fails here.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import wshub
import wshub._native as native

from test_c_abi import _gcc, c_lib  # noqa: F401  (c_lib is a fixture)

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or shutil.which("gcc") is None,
    reason="the C side of the comparison needs Linux and gcc",
)

# Options whose value is a host object (callables, lists): their default is
# "none given", which C spells NULL and Python None.
UNSET = {"topics", "allowed_origins", "on_subscription", "authorize", "backplane"}


@pytest.fixture(scope="module")
def c_defaults(c_lib, tmp_path_factory) -> dict:  # noqa: F811
    out = tmp_path_factory.mktemp("defaults")
    program = _gcc(ROOT / "tests/c/print_defaults.c", out / "print_defaults",
                   [f"-L{c_lib}", "-lwshub", f"-Wl,-rpath,{c_lib}"])
    printed = subprocess.run([str(program)], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    defaults = json.loads(printed)
    # NULL strings in C mean "the default": only backplane_prefix does
    # that for a value that is not UNSET, and C cannot say which it is.
    assert defaults.pop("backplane_prefix") is None
    for name in UNSET:
        assert defaults[name] is None, name
        defaults[name] = None
    return defaults


def python_value(value):
    return None if value is inspect.Parameter.empty else value


def signature_defaults(callable_) -> dict:
    return {name: p.default for name, p in inspect.signature(callable_).parameters.items()
            if p.default is not inspect.Parameter.empty}


def literal(text: str):
    text = text.strip()
    if text in ("None", "False", "True"):
        return {"None": None, "False": False, "True": True}[text]
    return ast.literal_eval(text)


def docstring_signature_defaults(doc: str) -> dict:
    """Defaults of a `Server(port=0, *, host="...", ...)` line."""
    start = doc.index("Server(")
    depth, end = 0, start
    for end in range(start, len(doc)):
        depth += {"(": 1, ")": -1}.get(doc[end], 0)
        if depth == 0 and doc[end] == ")":
            break
    inner = doc[start + len("Server("):end]
    found = {}
    for item in re.split(r",\s*", inner.replace("\n", " ")):
        if "=" in item:
            name, value = item.split("=", 1)
            found[name.strip()] = literal(value)
    return found


def docstring_option_defaults(doc: str) -> dict:
    """Defaults of `name (type, default VALUE):` entries."""
    found = {}
    for name, value in re.findall(r"^\s+(\w+) \([^)]*?default ([^)]*)\):", doc, re.M):
        found[name] = literal(value)
    return found


def stub_defaults() -> dict:
    tree = ast.parse((ROOT / "python/wshub/_native.pyi").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "__new__":
            args = node.args
            positional = args.args[-len(args.defaults):] if args.defaults else []
            found = {a.arg: ast.literal_eval(d) for a, d in zip(positional, args.defaults)}
            found.update({a.arg: ast.literal_eval(d)
                          for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None})
            return found
    raise AssertionError("no Server.__new__ in the stubs")


def readme_defaults() -> dict:
    """The README's options table: | `name` | `value` [unit] | ... |"""
    text = (ROOT / "README.md").read_text()
    found = {}
    for name, value in re.findall(r"^\| `(\w+)` \| `([^`]*)`[^|]*\|", text, re.M):
        found[name] = literal(value)
    return found


def compare(source: str, seen: dict, truth: dict, *, complete: bool = True) -> None:
    seen = {k: v for k, v in seen.items() if k in truth or complete}
    if complete:
        assert set(seen) - {"backplane_prefix"} == set(truth), (
            source, sorted(set(seen) ^ set(truth)))
    wrong = {k: (v, truth[k]) for k, v in seen.items() if k in truth and v != truth[k]}
    assert wrong == {}, f"{source} disagrees with Config::default() (seen, truth): {wrong}"


def test_native_server_signature(c_defaults):
    compare("wshub._native.Server signature", signature_defaults(native.Server), c_defaults)


def test_native_server_docstring(c_defaults):
    compare("wshub._native.Server docstring",
            docstring_signature_defaults(native.Server.__doc__), c_defaults)


def test_start_signature(c_defaults):
    compare("wshub.start signature", signature_defaults(wshub.start), c_defaults)


def test_start_docstring(c_defaults):
    # Every keyword option is described with its default (port is not a
    # keyword option, so it is described in the prose above them).
    seen = docstring_option_defaults(wshub.start.__doc__)
    compare("wshub.start docstring", seen,
            {k: v for k, v in c_defaults.items() if k != "port"})


def test_stubs(c_defaults):
    compare("python/wshub/_native.pyi", stub_defaults(), c_defaults)


def test_readme_options_table(c_defaults):
    seen = readme_defaults()
    compare("README.md options table", seen,
            {k: v for k, v in c_defaults.items() if k != "port"})


def test_backplane_prefix_default_is_the_same_in_python_and_docs():
    # C leaves it NULL (meaning the default), so its value is compared
    # among the Python sources and the README only.
    values = {
        "signature": signature_defaults(native.Server)["backplane_prefix"],
        "start": signature_defaults(wshub.start)["backplane_prefix"],
        "stubs": stub_defaults()["backplane_prefix"],
        "readme": readme_defaults()["backplane_prefix"],
    }
    assert len(set(values.values())) == 1, values


def test_the_comparison_sees_a_wrong_default(c_defaults):
    # The check itself must fail on a disagreement.
    wrong = dict(c_defaults, send_queue=c_defaults["send_queue"] + 1)
    with pytest.raises(AssertionError, match="send_queue"):
        compare("a wrong source", wrong, c_defaults)
