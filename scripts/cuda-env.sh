# Sourced by gpu-check.sh and gpu-bench.sh: puts the CUDA 13 runtime libraries that come with
# the local PyTorch installation (its nvidia-* wheels) on LD_LIBRARY_PATH for our binary.
libs=$(python3 - <<'PY' 2>/dev/null || true
import glob, os, site, sys
roots = set(site.getsitepackages() + [site.getusersitepackages()] + sys.path)
try:
    import torch
    roots.add(os.path.dirname(os.path.dirname(torch.__file__)))
    roots.add(os.path.join(os.path.dirname(torch.__file__), "lib"))
except Exception:
    pass
dirs = set()
for r in roots:
    if not isinstance(r, str) or not os.path.isdir(r):
        continue
    dirs.update(d for d in glob.glob(os.path.join(r, "nvidia", "*", "lib")) if os.path.isdir(d))
    dirs.update(d for d in glob.glob(os.path.join(r, "nvidia", "cu13", "lib")) if os.path.isdir(d))
    if os.path.basename(r) == "lib" and glob.glob(os.path.join(r, "libc10*.so")):
        dirs.add(r)
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH=${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "CUDA libraries from: ${libs:-<none found; relying on the system>}"
