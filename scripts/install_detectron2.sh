#!/usr/bin/env bash
# Install detectron2 v0.6's Python sources into the given interpreter's environment, or, with
# `--wheel-dir DIR`, build them into a pure-Python wheel in DIR (for the GPU wheelhouse, `make wheelhouse`).
#
# detectron2 is not on PyPI. `pb1-detectron2==0.6` is an sdist of the v0.6 tag's Python sources
# without the C++/CUDA sources, so a plain `pip install` fails when it tries to build `detectron2._C`.
# We build it with no extension modules instead; `cxr_codet.compat` covers what `_C` would provide.
# On a GPU machine you may instead build detectron2 from source (see README, "GPU machines"); this
# script then sees an importable detectron2 and leaves it alone.
set -euo pipefail
PY=${1:-python}
WHEEL_DIR=""
if [ "${2:-}" = "--wheel-dir" ]; then
    WHEEL_DIR=${3:?"--wheel-dir needs a folder"}
fi
VERSION=0.6

if [ -z "$WHEEL_DIR" ] && "$PY" -c "import detectron2" 2>/dev/null; then
    echo "detectron2 already installed: $("$PY" -c 'import detectron2; print(detectron2.__file__)')"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Metadata preparation runs setup.py, which imports torch: use the target environment, not an isolated one.
"$PY" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation -d "$work" "pb1-detectron2==$VERSION"
tar -xzf "$work"/pb1-detectron2-$VERSION.tar.gz -C "$work"
src="$work/pb1-detectron2-$VERSION"
grep -q 'ext_modules=get_extensions(),' "$src/setup.py" || {
    echo "install_detectron2.sh: unexpected setup.py in pb1-detectron2==$VERSION (no ext_modules line)" >&2
    exit 1
}
sed -i 's/ext_modules=get_extensions(),/ext_modules=[],/' "$src/setup.py"
if [ -n "$WHEEL_DIR" ]; then
    "$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$WHEEL_DIR" "$src"
    echo "built $(ls "$WHEEL_DIR"/*detectron2-*.whl)"
    exit 0
fi
# Dependencies come from our constraints file (setup.py's list pins an old `black` we do not need).
"$PY" -m pip install --quiet --no-deps --no-build-isolation "$src"
echo "installed detectron2 $VERSION (Python sources, no _C extension) into $("$PY" -c "import sys; print(sys.prefix)")"
