#!/usr/bin/env bash
# Make an interpreter that sees only what the GPU machine's image has, to check here, without a GPU, that
# the wheelhouse (`make wheelhouse`) is complete: `bash scripts/gpu_image_python.sh PYTHON DIR` writes
# DIR/python, which runs PYTHON without its site-packages (-S) and with DIR/site on the path, where DIR/site
# links only the packages of scripts/gpu_image_packages.txt (the device README's list: torch,
# torchvision, numpy, opencv, ...) that PYTHON's environment has, and what our versions of them require.
set -euo pipefail
PY=${1:?usage: gpu_image_python.sh PYTHON DIR}
DIR=${2:?usage: gpu_image_python.sh PYTHON DIR}
LIST="$(cd "$(dirname "$0")" && pwd)/gpu_image_packages.txt"
rm -rf "$DIR"
mkdir -p "$DIR/site"
"$PY" - "$LIST" "$DIR/site" <<'PYEOF'
import importlib.metadata as md, os, re, sys, sysconfig

def norm(name):
    return re.sub(r"[-_.]+", "-", name.strip().lower())

# The image's packages and, since our versions of them may need other things than the image's versions,
# their own requirements (the image satisfies its packages' requirements).
wanted = {norm(n) for n in open(sys.argv[1]) if n.strip() and not n.startswith("#")}
dists = {norm(d.metadata["Name"]): d for d in md.distributions()}
stack, closure = list(wanted), set()
while stack:
    name = stack.pop()
    if name in closure or name not in dists:
        continue
    closure.add(name)
    for requirement in dists[name].requires or []:
        if "extra ==" not in requirement:
            stack.append(norm(re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)))
site, purelib = sys.argv[2], sysconfig.get_paths()["purelib"]
linked = 0
for name in sorted(closure):
    for top in {str(f).split("/")[0] for f in dists[name].files or [] if not str(f).startswith("..")}:
        source, target = os.path.join(purelib, top), os.path.join(site, top)
        if os.path.exists(source) and not os.path.exists(target) and not top.endswith(".pth"):
            os.symlink(source, target)
            linked += 1
extra = sorted(closure - wanted)
print(f"linked {linked} entries of {len(closure)} packages: the image's {len(wanted & closure)} found here, "
      f"and requirements of our versions of them: {', '.join(extra)}")
PYEOF
cat > "$DIR/python" <<PYWRAP
#!/usr/bin/env bash
export PYTHONPATH="\${PYTHONPATH:+\$PYTHONPATH:}$(cd "$DIR" && pwd)/site"
exec "$PY" -S "\$@"
PYWRAP
chmod +x "$DIR/python"
