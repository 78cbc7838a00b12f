#!/usr/bin/env bash
# Build a wheelhouse of everything a GPU machine with Python, PyTorch, torchvision and the usual
# scientific stack (numpy, opencv, pillow, matplotlib, scipy, transformers, sentence-transformers, timm)
# lacks to run cxr-codet, offline: `pip install --no-index --no-deps --target DIR WHEELHOUSE/*.whl`.
#
#   bash scripts/build_wheelhouse.sh PYTHON [WHEELHOUSE=.whl] [TARGET_PYTHON_VERSION=3.12]
#
# PYTHON is an interpreter with torch and pip (it builds the pure-Python wheels of sdist-only packages,
# detectron2 as scripts/install_detectron2.sh does, and this package); binary wheels are downloaded for
# CPython TARGET_PYTHON_VERSION on manylinux x86_64. Versions are constraints.txt's. WHEELHOUSE/embeddings/
# holds the phantom class embeddings, so that the CXR-CoDet configs run without the 88 MB MiniLM model.
set -euo pipefail
PY=${1:?usage: build_wheelhouse.sh PYTHON [WHEELHOUSE] [TARGET_PYTHON_VERSION]}
OUT=${2:-.whl}
TARGET_PY=${3:-3.12}
MAX_MIB=60
cd "$(dirname "$0")/.."

# What the GPU image lacks (its package list: fvcore, iopath, pycocotools, ... are not in it).
WHEELS=(iopath yacs termcolor omegaconf hydra-core open_clip_torch ftfy wcwidth pycocotools pydicom
        pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg ensemble-boxes)
SDIST_ONLY=(fvcore antlr4-python3-runtime)  # pure Python, published as sdists only: built into wheels here
PLATFORMS=()
for tag in manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
    PLATFORMS+=(--platform "${tag}_x86_64")
done

pin() {
    local line
    line=$(grep -i "^$1==" constraints.txt) || { echo "build_wheelhouse.sh: $1 is not pinned in constraints.txt" >&2; exit 1; }
    echo "$line"
}

rm -rf "$OUT"
mkdir -p "$OUT"
for name in "${WHEELS[@]}"; do
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$TARGET_PY" \
        --implementation cp "${PLATFORMS[@]}" -d "$OUT" "$(pin "$name")"
done
for name in "${SDIST_ONLY[@]}"; do
    "$PY" -m pip wheel --quiet --no-deps -w "$OUT" "$(pin "$name")"
done
bash scripts/install_detectron2.sh "$PY" --wheel-dir "$OUT"
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$OUT" .
rm -rf build

# Class embeddings of the phantom vocabulary, as each CXR-CoDet config would encode it (MODEL.TEXT_ENCODER).
"$PY" tools/dump_text_embeddings.py --config-file configs/phantom/cxr_codet_R18_FPN_phantom.yaml \
    --vocabulary cxr_phantom_train --output "$OUT/embeddings/phantom_unelaborate.npy"
"$PY" tools/dump_text_embeddings.py --config-file configs/Base-CXR-CoDet-FPN.yaml \
    --vocabulary cxr_phantom_train --output "$OUT/embeddings/phantom_elaborate.npy"

size=$(du -sm "$OUT" | cut -f1)
ls -1 "$OUT"
echo "wheelhouse $OUT: $(ls "$OUT"/*.whl | wc -l) wheels, ${size} MiB (limit ${MAX_MIB} MiB), for CPython $TARGET_PY"
if [ "$size" -gt "$MAX_MIB" ]; then
    echo "build_wheelhouse.sh: $OUT is ${size} MiB, over the ${MAX_MIB} MiB that may travel to the GPU machine" >&2
    exit 1
fi
