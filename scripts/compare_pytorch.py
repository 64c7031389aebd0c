"""Side-by-side CPU throughput: pyramidclip against the same architectures in PyTorch.

Two PyTorch models, both written from docs/reference (the checkpoint layout and the math of
reference sections 3-5) and both checked against the fixtures' reference features before timing,
so every side computes the same thing: "ref" is built from nn.Modules the way the published code
computes (nn.MultiheadAttention on sequence-first activations, BatchNorm modules, LEFF through
permutes), the brief's baseline; "lean" is a functional formulation (batch-first attention, BN as
arithmetic), usually faster, a stricter baseline. PyTorch is a dev-time tool here, not a
dependency of the product.

    python3 scripts/compare_pytorch.py [--bin target/release/pyramidclip] [--threads 2]
        [--batch 16] [--text-batch 16 80] [--seconds 10] [--repeat 3] [--check-full]
        [--models RN50 ViT-B-32 ViT-B-16] [--bf16]
--bf16 adds bf16 rows from the same run: PyTorch under torch.autocast("cpu", dtype=torch.bfloat16)
(one line for a PyTorch user), ours with --precision bf16.
--avx2 limits both sides to AVX2 + FMA on an AVX-512 machine (PyTorch's ATen, oneDNN and MKL,
and our kernels), as on a machine without AVX-512.
Needs torch, numpy, safetensors (e.g. a venv with `pip install torch numpy safetensors`).
"""
import argparse, json, math, os, statistics, subprocess, sys, tempfile, time

if "--avx2" in sys.argv:
    # Both sides limited to AVX2 + FMA (the brief's machine has no AVX-512); PyTorch reads
    # these when its libraries load, so they are set before the import.
    os.environ.update(ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2",
                      MKL_ENABLE_INSTRUCTIONS="AVX2", PYRAMIDCLIP_GEMM="avx2")

import numpy as np
import torch
import torch.nn.functional as F
from collections import OrderedDict
from torch import nn
try:
    from safetensors.numpy import load_file
except ImportError:  # a GPU machine with torch but without the safetensors package
    def load_file(path):
        """Minimal safetensors reader (header length, JSON header, little-endian data)."""
        kinds = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4", "U8": "u1", "BOOL": "?"}
        raw = open(path, "rb").read()
        n = int.from_bytes(raw[:8], "little")
        head = json.loads(raw[8:8 + n])
        out = {}
        for k, v in head.items():
            if k == "__metadata__":
                continue
            a, b = v["data_offsets"]
            out[k] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=kinds[v["dtype"]]).reshape(v["shape"]).copy()
        return out

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def qgelu(x):
    return x * torch.sigmoid(1.702 * x)


def ln(x, sd, p):
    return F.layer_norm(x, (x.shape[-1],), sd[p + ".weight"], sd[p + ".bias"], 1e-5)


def bn(x, sd, p, dim):
    shape = [1] * x.dim()
    shape[dim] = -1
    scale = sd[p + ".weight"] / torch.sqrt(sd[p + ".running_var"] + 1e-5)
    return (x - sd[p + ".running_mean"].view(shape)) * scale.view(shape) + sd[p + ".bias"].view(shape)


def mha(x, sd, p, heads, causal):
    n, l, d = x.shape
    qkv = F.linear(x, sd[p + ".in_proj_weight"], sd[p + ".in_proj_bias"]).view(n, l, 3, heads, d // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    att = (q / math.sqrt(d // heads)) @ k.transpose(-1, -2)
    if causal:
        att = att + torch.full((l, l), float("-inf")).triu(1)
    out = (att.softmax(-1) @ v).transpose(1, 2).reshape(n, l, d)
    return F.linear(out, sd[p + ".out_proj.weight"], sd[p + ".out_proj.bias"])


def leff(y, sd, p, g):
    cls, t = y[:, :1], y[:, 1:]
    n = t.shape[0]
    h = qgelu(bn(F.linear(t, sd[p + ".linear1.weight"], sd[p + ".linear1.bias"]), sd, p + ".ac1.bn", 2))
    c = h.shape[-1]
    h = h.transpose(1, 2).reshape(n, c, g, g)
    h = F.conv2d(h, sd[p + ".depConv.depconv.weight"], padding=1, groups=c)
    h = qgelu(bn(h, sd, p + ".depConv.bn", 1)).flatten(2).transpose(1, 2)
    h = qgelu(bn(F.linear(h, sd[p + ".linear2.weight"], sd[p + ".linear2.bias"]), sd, p + ".ac2.bn", 2))
    return torch.cat([cls, h], 1)


def transformer(x, sd, p, layers, heads, causal, grid=None):
    for i in range(layers):
        b = f"{p}.resblocks1.{i}" if i < 9 else f"{p}.resblocks2.{i - 9}"
        x = x + mha(ln(x, sd, b + ".ln_1"), sd, b + ".attn", heads, causal)
        y = ln(x, sd, b + ".ln_2")
        if grid is not None and i < 9:
            x = x + leff(y, sd, b + ".mlp", grid)
        else:
            x = x + F.linear(qgelu(F.linear(y, sd[b + ".mlp.c_fc.weight"], sd[b + ".mlp.c_fc.bias"])),
                             sd[b + ".mlp.c_proj.weight"], sd[b + ".mlp.c_proj.bias"])
    return x


def encode_image(x, sd, cfg):
    if isinstance(cfg["vision_layers"], int):
        p, w = cfg["vision_patch_size"], cfg["vision_width"]
        g = cfg["image_resolution"] // p
        x = F.conv2d(x, sd["visual.conv1.weight"], stride=p).flatten(2).transpose(1, 2)
        cls = sd["visual.class_embedding"].expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], 1) + sd["visual.positional_embedding"]
        x = transformer(ln(x, sd, "visual.ln_pre"), sd, "visual.transformer", cfg["vision_layers"], w // 64 or 1, False, g)
        return ln(x[:, 0], sd, "visual.ln_post") @ sd["visual.proj"]
    w = cfg["vision_width"]
    for i, s in zip((1, 2, 3), (2, 1, 1)):
        x = F.relu(bn(F.conv2d(x, sd[f"visual.conv{i}.weight"], stride=s, padding=1), sd, f"visual.bn{i}", 1))
    x = F.avg_pool2d(x, 2)
    inp = w
    for li, depth in enumerate(cfg["vision_layers"]):
        planes = w * 2 ** li
        for bi in range(depth):
            b = f"visual.layer{li + 1}.{bi}"
            stride = 2 if li > 0 and bi == 0 else 1
            out = F.relu(bn(F.conv2d(x, sd[b + ".conv1.weight"]), sd, b + ".bn1", 1))
            out = F.relu(bn(F.conv2d(out, sd[b + ".conv2.weight"], padding=1), sd, b + ".bn2", 1))
            if stride > 1:
                out = F.avg_pool2d(out, stride)
            out = bn(F.conv2d(out, sd[b + ".conv3.weight"]), sd, b + ".bn3", 1)
            idn = x
            if stride > 1 or inp != planes * 4:
                idn = F.avg_pool2d(x, stride) if stride > 1 else x
                idn = bn(F.conv2d(idn, sd[b + ".downsample.0.weight"]), sd, b + ".downsample.1", 1)
            x = F.relu(out + idn)
            inp = planes * 4
    n, c, h, ww = x.shape
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([x.mean(1, keepdim=True), x], 1) + sd["visual.attnpool.positional_embedding"]
    heads = w * 32 // 64
    q = F.linear(x[:, :1], sd["visual.attnpool.q_proj.weight"], sd["visual.attnpool.q_proj.bias"])
    k = F.linear(x, sd["visual.attnpool.k_proj.weight"], sd["visual.attnpool.k_proj.bias"])
    v = F.linear(x, sd["visual.attnpool.v_proj.weight"], sd["visual.attnpool.v_proj.bias"])
    hd = c // heads
    q, k, v = (t.view(n, -1, heads, hd).transpose(1, 2) for t in (q, k, v))
    out = (((q / math.sqrt(hd)) @ k.transpose(-1, -2)).softmax(-1) @ v).transpose(1, 2).reshape(n, c)
    return F.linear(out, sd["visual.attnpool.c_proj.weight"], sd["visual.attnpool.c_proj.bias"])


def encode_text(tokens, sd, cfg):
    x = sd["token_embedding.weight"][tokens] + sd["positional_embedding"]
    x = transformer(x, sd, "transformer", cfg["transformer_layers"], cfg["transformer_heads"], True)
    return ln(x, sd, "ln_final").max(1).values @ sd["text_projection"]


# --- The same network as nn.Modules, computed the way the published code computes it --------------
# (reference sections 3-5: nn.MultiheadAttention on sequence-first [L, N, d] activations, BatchNorm
# and LayerNorm modules in eval mode, LEFF through permutes). Module names follow the checkpoint keys
# so the state dict loads as is. This is the brief's baseline ("the published PyTorch code"); the
# functions above are a leaner PyTorch formulation of the same math, kept as a stricter baseline.


class Fp32LayerNorm(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.float()).to(x.dtype)


class QuickGelu(nn.Module):
    def forward(self, x):
        return qgelu(x)


def bn_gelu(bn_cls, c):
    return nn.Sequential(OrderedDict(bn=bn_cls(c), gelu=QuickGelu()))


class Leff(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.linear1 = nn.Linear(d, 4 * d)
        self.ac1 = bn_gelu(nn.BatchNorm1d, 4 * d)
        self.depConv = nn.Sequential(OrderedDict(
            depconv=nn.Conv2d(4 * d, 4 * d, 3, padding=1, groups=4 * d, bias=False),
            bn=nn.BatchNorm2d(4 * d), gelu=QuickGelu()))
        self.linear2 = nn.Linear(4 * d, d)
        self.ac2 = bn_gelu(nn.BatchNorm1d, d)

    def forward(self, y):  # y: [1 + g*g, N, d]
        h = self.ac1(self.linear1(y[1:]).permute(1, 2, 0))  # [N, 4d, g*g]
        g = math.isqrt(h.shape[2])
        h = self.depConv(h.reshape(h.shape[0], h.shape[1], g, g)).flatten(2)
        h = self.ac2(self.linear2(h.transpose(1, 2)).transpose(1, 2))  # [N, d, g*g]
        return torch.cat([y[:1], h.permute(2, 0, 1)], 0)


class Block(nn.Module):
    def __init__(self, d, heads, leff, mask):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads)
        self.ln_1, self.ln_2 = Fp32LayerNorm(d), Fp32LayerNorm(d)
        self.mlp = Leff(d) if leff else nn.Sequential(OrderedDict(
            c_fc=nn.Linear(d, 4 * d), gelu=QuickGelu(), c_proj=nn.Linear(4 * d, d)))
        self.mask = mask

    def forward(self, x):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=self.mask)[0]
        return x + self.mlp(self.ln_2(x))


class Tower(nn.Module):
    def __init__(self, d, layers, heads, leff=False, mask=None):
        super().__init__()
        self.resblocks1 = nn.ModuleList(Block(d, heads, leff, mask) for _ in range(min(layers, 9)))
        self.resblocks2 = nn.ModuleList(Block(d, heads, False, mask) for _ in range(layers - 9))

    def forward(self, x):
        for b in [*self.resblocks1, *self.resblocks2]:
            x = b(x)
        return x


class Vit(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        w, p, r = cfg["vision_width"], cfg["vision_patch_size"], cfg["image_resolution"]
        self.conv1 = nn.Conv2d(3, w, p, stride=p, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(w))
        self.positional_embedding = nn.Parameter(torch.zeros((r // p) ** 2 + 1, w))
        self.ln_pre, self.ln_post = Fp32LayerNorm(w), Fp32LayerNorm(w)
        self.transformer = Tower(w, cfg["vision_layers"], w // 64 or 1, leff=True)
        self.proj = nn.Parameter(torch.zeros(w, cfg["embed_dim"]))

    def forward(self, x):
        x = self.conv1(x).flatten(2).transpose(1, 2)
        cls = self.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1])
        x = self.ln_pre(torch.cat([cls, x], 1) + self.positional_embedding)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_post(x[:, 0]) @ self.proj


class Bottleneck(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False), nn.BatchNorm2d(planes)
        self.pool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3, self.bn3 = nn.Conv2d(planes, 4 * planes, 1, bias=False), nn.BatchNorm2d(4 * planes)
        self.downsample = None
        if stride > 1 or cin != 4 * planes:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)), ("0", nn.Conv2d(cin, 4 * planes, 1, bias=False)),
                ("1", nn.BatchNorm2d(4 * planes))]))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.pool(F.relu(self.bn2(self.conv2(out))))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class AttnPool(nn.Module):
    def __init__(self, grid, c, heads, out):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.zeros(grid * grid + 1, c))
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(c, c), nn.Linear(c, c), nn.Linear(c, c)
        self.c_proj = nn.Linear(c, out)
        self.heads = heads

    def forward(self, x):
        x = x.flatten(2).permute(2, 0, 1)  # [HW, N, C]
        x = torch.cat([x.mean(0, keepdim=True), x], 0) + self.positional_embedding[:, None]
        y, _ = F.multi_head_attention_forward(
            x, x, x, x.shape[-1], self.heads, None,
            torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]), None, None, False, 0.0,
            self.c_proj.weight, self.c_proj.bias, training=False, need_weights=False,
            use_separate_proj_weight=True, q_proj_weight=self.q_proj.weight,
            k_proj_weight=self.k_proj.weight, v_proj_weight=self.v_proj.weight)
        return y[0]


class ResNet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        w = cfg["vision_width"]
        for i, (cin, cout) in enumerate(((3, w // 2), (w // 2, w // 2), (w // 2, w)), 1):
            setattr(self, f"conv{i}", nn.Conv2d(cin, cout, 3, stride=2 if i == 1 else 1, padding=1, bias=False))
            setattr(self, f"bn{i}", nn.BatchNorm2d(cout))
        cin = w
        for li, depth in enumerate(cfg["vision_layers"]):
            planes, blocks = w * 2 ** li, []
            for bi in range(depth):
                blocks.append(Bottleneck(cin, planes, 2 if li > 0 and bi == 0 else 1))
                cin = 4 * planes
            setattr(self, f"layer{li + 1}", nn.Sequential(*blocks))
        self.attnpool = AttnPool(cfg["image_resolution"] // 32, 32 * w, 32 * w // 64, cfg["embed_dim"])

    def forward(self, x):
        for i in (1, 2, 3):
            x = F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))
        x = F.avg_pool2d(x, 2)
        for li in range(4):
            x = getattr(self, f"layer{li + 1}")(x)
        return self.attnpool(x)


class RefModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.visual = Vit(cfg) if isinstance(cfg["vision_layers"], int) else ResNet(cfg)
        w, ctx = cfg["transformer_width"], cfg["context_length"]
        mask = torch.full((ctx, ctx), float("-inf")).triu(1)
        self.transformer = Tower(w, cfg["transformer_layers"], cfg["transformer_heads"], mask=mask)
        self.token_embedding = nn.Embedding(cfg["vocab_size"], w)
        self.positional_embedding = nn.Parameter(torch.zeros(ctx, w))
        self.ln_final = Fp32LayerNorm(w)
        self.text_projection = nn.Parameter(torch.zeros(w, cfg["embed_dim"]))

    def encode_text(self, tokens):
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_final(x).max(1).values @ self.text_projection


def ref_model(sd, cfg):
    m = RefModel(cfg)
    missing = m.load_state_dict(sd, strict=False).missing_keys
    if missing:
        sys.exit(f"reference-style model: checkpoint lacks {missing[:3]}")
    return m.eval()


def load_state(path):
    if path.endswith(".safetensors"):
        return {k: torch.from_numpy(v).float() for k, v in load_file(path).items()}
    sd = torch.load(path, map_location="cpu", weights_only=True)
    sd = sd.get("state_dict", sd)
    return {k.removeprefix("module."): v.float() for k, v in sd.items()}


def load_configs(path):
    """The model_config.yml entries (PyYAML when present, else the file's simple subset:
    `Name:` lines, then `  key: value` lines with ints or `[a, b, c]` lists)."""
    try:
        import yaml
        return yaml.safe_load(open(path))
    except ImportError:
        cfgs, cur = {}, None
        for line in open(path):
            line = line.split("#")[0].rstrip()
            if not line.strip():
                continue
            if not line.startswith(" "):
                cur = cfgs.setdefault(line.rstrip(":").strip(), {})
            else:
                k, v = (s.strip() for s in line.split(":", 1))
                cur[k] = json.loads(v) if v.startswith("[") else (None if v in ("null", "~", "") else int(v))
        return cfgs


def parity_check():
    """The PyTorch model reproduces the reference's own features on the fixtures."""
    import yaml
    fx = os.path.join(ROOT, "tests", "fixtures")
    exp = load_file(os.path.join(fx, "expected.safetensors"))
    cfgs = yaml.safe_load(open(os.path.join(fx, "tiny-models.yml")))
    mean = np.array([0.48145466, 0.4578275, 0.40821073], np.float32).reshape(1, 3, 1, 1)
    std = np.array([0.26862954, 0.26130258, 0.27577711], np.float32).reshape(1, 3, 1, 1)
    px = torch.from_numpy(((exp["pixels_64_u8"].astype(np.float32) / 255.0) - mean) / std)
    for name, key in (("tiny-RN", "tiny_RN"), ("tiny-ViT", "tiny_ViT")):
        sd = load_state(os.path.join(fx, name + ".pth.tar"))
        tok = torch.from_numpy(exp["tokens"])
        m = ref_model(sd, cfgs[name])
        with torch.no_grad():
            got = [(encode_image(px, sd, cfgs[name]), encode_text(tok, sd, cfgs[name])),
                   (m.visual(px), m.encode_text(tok))]
        for img, txt in got:
            for ours, ref in ((img.numpy(), exp[key + ".image_features_raw"]),
                              (txt.numpy(), exp[key + ".text_features_raw"])):
                cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
                assert cos.min() > 0.99999, (name, cos.min())
    print("both PyTorch models match the reference fixtures (cosine > 0.99999)")


def full_parity(bin_, m, ck, sd, cfg, d):
    """Our raw features against the PyTorch model's on fixture images and prompts."""
    imgs = [os.path.join(ROOT, "tests", "fixtures", "images", f)
            for f in ("shapes_rgb.jpg", "blobs_rgba.png", "shapes_cmyk.jpg", "blobs_gray.jpg")]
    texts = ["a photo of a dog.", "itap of a caf\u00e9", "a bad photo of the goldfish."]
    ours_f, px_f = os.path.join(d, "ours.safetensors"), os.path.join(d, "px.safetensors")
    subprocess.run([bin_, "embed", "-e", ck, "--visual-model", m, "--images", *imgs, "--text", *texts, "--raw",
                    "--out", ours_f, "--device", "cpu"], check=True, capture_output=True)
    r = str(cfg["image_resolution"])
    subprocess.run([bin_, "preprocess", "--resolution", r, "--out", px_f, *imgs], check=True, capture_output=True)
    toks = subprocess.run([bin_, "tokenize", *texts], check=True, capture_output=True, text=True).stdout
    tok = torch.tensor([json.loads(l) for l in toks.splitlines()])
    ours = load_file(ours_f)
    px = torch.from_numpy(load_file(px_f)["pixels"])
    with torch.no_grad():
        ref = {"image_features": encode_image(px, sd, cfg).numpy(), "text_features": encode_text(tok, sd, cfg).numpy()}
    for k, b in ref.items():
        a = ours[k]
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        rel = np.abs(a - b).max() / np.abs(b).max()
        print(f"{m} {k}: min cosine {cos.min():.7f}, max |diff| / max |ref| {rel:.2e}")
        if cos.min() < 0.99999:
            sys.exit(f"{m} {k} differs from the PyTorch model")


def time_torch(fn, seconds):
    with torch.no_grad():
        fn()
        t, n = time.time(), 0
        while n < 2 or time.time() - t < seconds:
            fn()
            n += 1
    return n / (time.time() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "pyramidclip"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--repeat", type=int, default=3,
                    help="alternate the two sides this many times and report medians (noisy machines)")
    ap.add_argument("--text-batch", type=int, nargs="+", default=None,
                    help="prompts per text-encoder batch, both sides; several give several rows (default: --batch)")
    ap.add_argument("--models", nargs="+", default=["RN50", "ViT-B-32", "ViT-B-16"])
    ap.add_argument("--skip-parity", action="store_true")
    ap.add_argument("--avx2", action="store_true", help="both sides on AVX2 + FMA kernels only")
    ap.add_argument("--bf16", action="store_true",
                    help="also bf16 rows: PyTorch autocast(cpu, bfloat16) against ours with --precision bf16")
    ap.add_argument("--check-full", action="store_true",
                    help="also compare our features with the PyTorch model's on the full-size random checkpoints")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if not a.skip_parity:
        parity_check()
    cfgs = load_configs(os.path.join(ROOT, "configs", "model_config.yml"))
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for m in a.models:
            ck = os.path.join(d, m + ".safetensors")
            subprocess.run([a.bin, "dev", "random-checkpoint", "--visual-model", m, ck], check=True)
            sd = load_state(ck)
            cfg = cfgs[m]
            if a.check_full:
                full_parity(a.bin, m, ck, sd, cfg, d)
            r = cfg["image_resolution"]
            x = torch.randn(a.batch, 3, r, r)
            def ours(what, batch, key, precision="fp32"):
                out = subprocess.run([a.bin, "bench", "--visual-model", m, "--checkpoint", ck, "--what", what,
                                      "--device", "cpu", "--batch-size", str(batch), "--seconds", str(a.seconds),
                                      "--threads", str(a.threads), "--precision", precision, "--json"],
                                     check=True, capture_output=True, text=True).stdout
                r = json.loads(out)
                # What ours computed, which differs from what was asked where bf16 fell back
                # to fp32 (no bf16 instructions, or slower than fp32 on this CPU).
                computed[precision] = r["precision"] + (f" ({r['bf16_kernel']})" if "bf16_kernel" in r else "")
                return r[key]

            ref = ref_model(sd, cfg)

            def alternate(lean_fn, ref_fn, ours_fn):
                o, r, l = [], [], []
                for _ in range(a.repeat):
                    r.append(ref_fn())
                    o.append(ours_fn())
                    l.append(lean_fn())
                return statistics.median(o), statistics.median(r), statistics.median(l)

            computed = {}
            def label(what, prec):
                got = computed.get(prec, prec)
                return what if got == prec else f"{what} [ours: {got}]"
            for prec in ["fp32"] + (["bf16"] if a.bf16 else []):
                def cast(fn):
                    # PyTorch's bf16: autocast on the CPU, as a user would write it.
                    if prec == "fp32":
                        return fn
                    def run():
                        with torch.autocast("cpu", dtype=torch.bfloat16):
                            return fn()
                    return run
                rates = alternate(
                    lambda: time_torch(cast(lambda: encode_image(x, sd, cfg)), a.seconds) * a.batch,
                    lambda: time_torch(cast(lambda: ref.visual(x)), a.seconds) * a.batch,
                    lambda: ours("image", a.batch, "images_per_s", prec))
                rows.append((label(f"{m} image encoder, {prec} (images/s)", prec), *rates))
                if m == a.models[0]:
                    for tb in a.text_batch or [a.batch]:
                        tok = torch.randint(0, 49407, (tb, 77))
                        rates = alternate(
                            lambda: time_torch(cast(lambda: encode_text(tok, sd, cfg)), a.seconds) * tb,
                            lambda: time_torch(cast(lambda: ref.encode_text(tok)), a.seconds) * tb,
                            lambda: ours("text", tb, "prompts_per_s", prec))
                        rows.append((label(f"text encoder, {prec}, batch {tb} (prompts/s)", prec), *rates))
    print(f"\n{a.threads} threads, batch {a.batch}, medians of {a.repeat} alternating runs of {a.seconds:g} s; "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads, "
          f"{torch.backends.cpu.get_cpu_capability()}; ours {'avx2' if a.avx2 else 'best kernel'})")
    print("PyTorch ref: nn.Modules as the published code computes (nn.MultiheadAttention, sequence-first);"
          " PyTorch lean: the functional formulation above")
    print(f"{'what':62} {'pyramidclip':>11} {'PyTorch ref':>11} {'ratio':>6} {'PyTorch lean':>12} {'ratio':>6}")
    for what, ours, ref_, lean in rows:
        print(f"{what:62} {ours:11.2f} {ref_:11.2f} {ours / ref_:5.2f}x {lean:12.2f} {ours / lean:5.2f}x")

if __name__ == "__main__":
    sys.exit(main())
