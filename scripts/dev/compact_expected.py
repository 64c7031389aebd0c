"""Dev-time: copy the reference's expected.safetensors into tests/fixtures, storing the
preprocessed pixels as the 8-bit levels they came from (lossless: checked below) to keep the
committed fixtures small. Usage: python3 scripts/dev/compact_expected.py ../shared/fixtures"""
import sys
import numpy as np
from safetensors.numpy import load_file, save_file

src = sys.argv[1]
t = load_file(f"{src}/expected.safetensors")
mean = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32).reshape(1, 3, 1, 1)
std = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32).reshape(1, 3, 1, 1)
out = {}
for k, v in t.items():
    if k.startswith("pixels_"):
        levels = np.rint((v * std + mean) * 255.0).astype(np.float32)
        assert levels.min() >= 0 and levels.max() <= 255
        back = ((levels / np.float32(255.0)) - mean) / std
        err = np.abs(back.astype(np.float32) - v).max()
        assert err < 1e-6, (k, err)
        out[k + "_u8"] = levels.astype(np.uint8)
    else:
        out[k] = v
save_file(out, "tests/fixtures/expected.safetensors")
print({k: (v.dtype, v.shape) for k, v in out.items()})
