"""Side-by-side CPU throughput: pyramidclip against the same architectures in PyTorch.

The PyTorch model below is written from docs/reference (the checkpoint layout and the math of
reference sections 3-5), checked against the fixtures' reference features before timing, so both
sides compute the same thing. PyTorch is a dev-time tool here, not a dependency of the product.

    python3 scripts/compare_pytorch.py [--bin target/release/pyramidclip] [--threads 2]
        [--batch 16] [--text-batch 80] [--seconds 10] [--repeat 3] [--check-full]
        [--models RN50 ViT-B-32 ViT-B-16]
Set PYRAMIDCLIP_GEMM=avx2 to time our AVX2 kernels on an AVX-512 machine.
Needs torch, numpy, safetensors (e.g. a venv with `pip install torch numpy safetensors`).
"""
import argparse, json, math, os, statistics, subprocess, sys, tempfile, time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file

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


def load_state(path):
    if path.endswith(".safetensors"):
        return {k: torch.from_numpy(v).float() for k, v in load_file(path).items()}
    sd = torch.load(path, map_location="cpu", weights_only=True)
    sd = sd.get("state_dict", sd)
    return {k.removeprefix("module."): v.float() for k, v in sd.items()}


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
        with torch.no_grad():
            img = encode_image(px, sd, cfgs[name]).numpy()
            txt = encode_text(torch.from_numpy(exp["tokens"]), sd, cfgs[name]).numpy()
        for ours, ref in ((img, exp[key + ".image_features_raw"]), (txt, exp[key + ".text_features_raw"])):
            cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
            assert cos.min() > 0.99999, (name, cos.min())
    print("PyTorch model matches the reference fixtures (cosine > 0.99999)")


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
    ap.add_argument("--text-batch", type=int, default=None,
                    help="prompts per text-encoder batch, both sides (default: --batch)")
    ap.add_argument("--models", nargs="+", default=["RN50", "ViT-B-32", "ViT-B-16"])
    ap.add_argument("--skip-parity", action="store_true")
    ap.add_argument("--check-full", action="store_true",
                    help="also compare our features with the PyTorch model's on the full-size random checkpoints")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if not a.skip_parity:
        parity_check()
    import yaml
    cfgs = yaml.safe_load(open(os.path.join(ROOT, "configs", "model_config.yml")))
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for m in a.models:
            ck = os.path.join(d, m + ".safetensors")
            subprocess.run([a.bin, "convert", "--random-weights", "--visual-model", m, "x", ck], check=True)
            sd = load_state(ck)
            cfg = cfgs[m]
            if a.check_full:
                full_parity(a.bin, m, ck, sd, cfg, d)
            r = cfg["image_resolution"]
            x = torch.randn(a.batch, 3, r, r)
            def ours(what, batch, key):
                out = subprocess.run([a.bin, "bench", "--visual-model", m, "--checkpoint", ck, "--what", what,
                                      "--device", "cpu", "--batch-size", str(batch), "--seconds", str(a.seconds),
                                      "--threads", str(a.threads), "--json"],
                                     check=True, capture_output=True, text=True).stdout
                return json.loads(out)[key]

            def alternate(torch_fn, ours_fn):
                t, o = [], []
                for _ in range(a.repeat):
                    t.append(torch_fn())
                    o.append(ours_fn())
                return statistics.median(o), statistics.median(t)

            rows.append((f"{m} image encoder (images/s)", *alternate(
                lambda: time_torch(lambda: encode_image(x, sd, cfg), a.seconds) * a.batch,
                lambda: ours("image", a.batch, "images_per_s"))))
            if m == a.models[0]:
                tb = a.text_batch or a.batch
                tok = torch.randint(0, 49407, (tb, 77))
                rows.append((f"text encoder, batch {tb} (prompts/s)", *alternate(
                    lambda: time_torch(lambda: encode_text(tok, sd, cfg), a.seconds) * tb,
                    lambda: ours("text", tb, "prompts_per_s"))))
    print(f"\n{a.threads} threads, batch {a.batch}, medians of {a.repeat} alternating runs of {a.seconds:g} s; "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"{'what':40} {'pyramidclip':>12} {'PyTorch':>10} {'ratio':>7}")
    for what, ours, theirs in rows:
        print(f"{what:40} {ours:12.2f} {theirs:10.2f} {ours / theirs:6.2f}x")


if __name__ == "__main__":
    sys.exit(main())
