#!/usr/bin/env bash
# The wheel as users get it (`make wheel-test`, part of `make test`):
# installs target/wheels/wshub-*.whl into a fresh virtual environment of
# the oldest and of the newest supported CPython (3.10-3.13) found on this
# machine, with no cargo or rustc on PATH, then on each runs
#   python -c "import wshub; wshub.start(0).stop()"
# and the pytest files in WHEEL_TESTS against the installed package (the
# conftest checks that `import wshub` resolves to site-packages, not to the
# checkout's python/). With only one supported version found, it tests
# that one and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEEL_TESTS=${WHEEL_TESTS:?set by the Makefile}
VENVS=.wip/wheel-venvs
shopt -s nullglob
wheels=(target/wheels/wshub-*.whl)
[ "${#wheels[@]}" -eq 1 ] || { echo "expected one wheel in target/wheels, found ${#wheels[@]}: run make wheel" >&2; exit 1; }
wheel=${wheels[0]}

# python3.X on PATH (pyenv's shims included), else under pyenv's root.
pyenv_root=${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")}
find_python() {
    local version=$1 candidate
    for candidate in "$(command -v "python$version" 2>/dev/null || true)" \
                     "$pyenv_root"/versions/"$version".*/bin/"python$version"; do
        [ -n "$candidate" ] && [ -x "$candidate" ] || continue
        # A pyenv shim names a version that may not be installed: ask it.
        "$candidate" -c 'import sys; print(sys.executable)' 2>/dev/null && return 0
    done
    return 1
}
found=()
for version in 3.10 3.11 3.12 3.13; do
    if exe=$(find_python "$version"); then found+=("$exe"); fi
done
case ${#found[@]} in
    0) echo "wheel-test: no CPython 3.10-3.13 found" >&2; exit 1 ;;
    1) echo "wheel-test: only one supported CPython found ($("${found[0]}" --version)); testing that one"
       chosen=("${found[0]}") ;;
    *) chosen=("${found[0]}" "${found[-1]}") ;;
esac

# PATH without any directory that holds cargo or rustc.
no_rust_path=
IFS=: read -ra dirs <<<"$PATH"
for dir in "${dirs[@]}"; do
    [ -e "$dir/cargo" ] || [ -e "$dir/rustc" ] && continue
    no_rust_path=${no_rust_path:+$no_rust_path:}$dir
done

for python in "${chosen[@]}"; do
    name=$(basename "$python")
    venv=$VENVS/$name
    echo "== wheel-test on $("$python" --version) ($name)"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet "$wheel" -r requirements-test-installed.txt
    (
        export PATH="$PWD/$venv/bin:$no_rust_path"
        if command -v cargo >/dev/null || command -v rustc >/dev/null; then
            echo "wheel-test: Rust is still on PATH" >&2; exit 1
        fi
        python -c "import wshub; wshub.start(0).stop(); print('import and start(0).stop():', wshub.__file__)"
        # -p no:cacheprovider: nothing written into the checkout.
        WSHUB_EXPECT_INSTALLED=1 python -m pytest -q -p no:cacheprovider $WHEEL_TESTS
    )
done
