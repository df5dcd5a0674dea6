"""The layers of src/ import one way only (the map is in src/lib.rs).

Every `crate::...` path in a module's code names a module it depends on.
From the bottom up: `protocol` (the wire format), `core` (topics,
subscriptions, the fan-out), then `net` and `scale` side by side, then
`server`, then `bindings`. A module may use its own layer and those below
it, never one above or beside it, and no two modules may depend on each
other in a circle.

Run as a script to print the dependency picture:

    python3 tests/test_layers.py            # module -> modules it uses
    python3 tests/test_layers.py --layers   # layer -> layers it uses

It reads the `src/` beside it; for another commit's picture, copy it into
that checkout (`git worktree add /tmp/old COMMIT`, then
`python3 tests/test_layers.py` run from /tmp/old with this file copied).
"""

from __future__ import annotations

import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"

# Layer of each top-level module, bottom first; equal numbers are side by
# side and may not use each other.
LAYERS = {
    "protocol": 0,
    "core": 1,
    "net": 2,
    "scale": 2,
    "server": 3,
    "bindings": 4,
}

COMMENT = re.compile(r"//[^\n]*")
CRATE_PATH = re.compile(r"\bcrate((?:::[A-Za-z_][A-Za-z0-9_]*)+)(::\{)?")


def module_of(path: pathlib.Path) -> str:
    """`src/core/hub.rs` -> `core::hub`, `src/net/mod.rs` -> `net`."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    return "::".join(parts)


def modules() -> dict[str, pathlib.Path]:
    found = {module_of(p): p for p in sorted(SRC.rglob("*.rs"))}
    found.pop("lib", None)
    return found


def group_items(text: str, start: int) -> list[str]:
    """The first path segment of each item of a `{...}` use group."""
    depth, i = 1, start
    while i < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    inner = text[start:i - 1]
    items, depth, current = [], 0, ""
    for ch in inner:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += ch
    items.append(current)
    return [item.strip().split("::")[0].strip() for item in items if item.strip()]


def dependencies() -> dict[str, set[str]]:
    """Module -> the modules of the crate its code names."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        text = COMMENT.sub("", path.read_text())
        used: set[str] = set()
        for match in CRATE_PATH.finditer(text):
            segments = match.group(1).strip(":").split("::")
            candidates = [segments]
            if match.group(2):
                candidates = [segments + [item] for item in group_items(text, match.end())]
            for segs in candidates:
                # The longest prefix that is a module of the crate.
                for n in range(len(segs), 0, -1):
                    target = "::".join(segs[:n])
                    if target in known:
                        if target != name:
                            used.add(target)
                        break
        graph[name] = used
    return graph


def layer_of(module: str) -> str:
    return module.split("::")[0]


def violations(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, used in sorted(graph.items()):
        here = layer_of(module)
        for target in sorted(used):
            there = layer_of(target)
            if there == here or here not in LAYERS or there not in LAYERS:
                # (A module outside every layer fails its own test.)
                continue
            if LAYERS[there] >= LAYERS[here]:
                wrong.append(f"{module} -> {target} ({here} may not use {there})")
    return wrong


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_is_in_a_layer():
    assert {layer_of(m) for m in modules()} <= set(LAYERS), sorted(modules())


def test_imports_run_one_way():
    assert violations(dependencies()) == []


def test_no_cycle_among_modules():
    assert cycles(dependencies()) == []


def test_the_check_sees_a_wrong_way_import():
    # The checker itself must catch what it is for: a core module naming
    # the network layer, inside a use group or as a plain path.
    graph = dependencies()
    graph["core::hub"] = graph["core::hub"] | {"net::connection"}
    assert violations(graph) == ["core::hub -> net::connection (core may not use net)"]
    graph["net::connection"] = graph["net::connection"] | {"core::hub"}
    assert any({"core::hub", "net::connection"} <= set(c) for c in cycles(graph))


def main() -> None:
    graph = dependencies()
    if "--layers" in sys.argv:
        layers: dict[str, set[str]] = {}
        for module, used in graph.items():
            layers.setdefault(layer_of(module), set()).update(
                layer_of(t) for t in used if layer_of(t) != layer_of(module))
        for layer in sorted(layers, key=lambda l: (LAYERS.get(l, -1), l)):
            print(f"{layer:10} -> {', '.join(sorted(layers[layer])) or '-'}")
    else:
        for module in sorted(graph):
            print(f"{module:28} -> {', '.join(sorted(graph[module])) or '-'}")
    problems = violations(graph) + [" <-> ".join(c) for c in cycles(graph)]
    for problem in problems:
        print("wrong:", problem)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
