"""Side-by-side GPU throughput: pyramidclip (candle engine, CUDA) against the published code's
architecture in PyTorch on the same GPU, in one run (issue #18's harness). Run it through
scripts/gpu-bench.sh, which finds the CUDA libraries first.

    python3 scripts/gpu_bench.py --bin target-cuda/release/pyramidclip [--seconds 5]
        [--batch 256] [--images 10000] [--models RN50 ViT-B-32 ViT-B-16] [--no-compile]

Per model, at --batch: images/s of ours and PyTorch's in fp32 and fp16 (PyTorch: the reference-
style nn.Module model of scripts/compare_pytorch.py, checked against the fixtures first;
`torch.autocast` fp16, channels-last for the ResNet; `torch.compile` of the fp16 model where it
builds), ratios printed; the text encoder in prompts/s (80 prompts x 10 classes per batch);
`eval` end to end over --images synthetic 500x375 JPEGs against model-only; and our GPU features
against our CPU ones (fp32 cosine >= 0.9999, fp16/bf16 >= 0.999, top-1 agreement >= 99%). The
fused kernels' check (`dev kernel-check`) runs first. `--bin2` times a second build model-only
beside the first (before/after in one run); `--rates-only` leaves out `eval` and the feature
check.
Every PyTorch variant that fails prints its error instead of a rate; the run goes on.
"""
import argparse, json, os, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_pytorch as cp  # noqa: E402  (the PyTorch models and the fixture parity check)
import torch  # noqa: E402

ROOT = cp.ROOT


def sh(*args, **kw):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, **kw).stdout


def ours_bench(bin_, m, ck, what, precision, batch, seconds, key):
    try:
        out = sh(bin_, "bench", "--visual-model", m, "--checkpoint", ck, "--what", what, "--device", "cuda",
                 "--precision", precision, "--batch-size", batch, "--seconds", seconds, "--json")
    except subprocess.CalledProcessError as e:  # reported, and the run goes on
        print(f"  ours {m} {what} {precision}: failed: {e.stderr.strip().splitlines()[-1:]}")
        return None
    rep = json.loads(out)
    if rep.get("fused_ops", "fused") != "fused":
        print(f"  ours {m} {what} {precision}: fused ops {rep['fused_ops']}")
    return rep[key]


def time_cuda(fn, seconds):
    """Calls per second of `fn` on the GPU (synchronised), after two warm-up calls."""
    with torch.no_grad():
        fn(); fn()
        torch.cuda.synchronize()
        t, n = time.time(), 0
        while n < 3 or time.time() - t < seconds:
            fn()
            n += 1
        torch.cuda.synchronize()
    return n / (time.time() - t)


def attempt(what, fn):
    try:
        return fn()
    except Exception as e:  # a PyTorch variant that does not run is reported, not fatal
        print(f"  {what}: failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
        return None


def to_cuda(model):
    model = model.cuda()
    for mod in model.modules():  # the towers keep their causal mask as a plain attribute
        if getattr(mod, "mask", None) is not None:
            mod.mask = mod.mask.cuda()
    return model


def text_rows(a, m, ref, rows, fp16, ck):
    """The text encoder (once, with the first model's tower): 80 prompts x 10 classes a batch."""
    if m != a.models[0]:
        return
    tb = 800
    tok = torch.randint(0, 49407, (tb, 77), device="cuda")
    t32 = attempt("torch text fp32", lambda: time_cuda(lambda: ref.encode_text(tok), a.seconds) * tb)
    t16 = attempt("torch text fp16", lambda: time_cuda(fp16(ref.encode_text, tok), a.seconds) * tb)
    for b in [a.bin] + ([a.bin2] if a.bin2 else []):
        tag = "" if b == a.bin else ", --bin2"
        o32 = ours_bench(b, m, ck, "text", "fp32", tb, a.seconds, "prompts_per_s")
        o16 = ours_bench(b, m, ck, "text", "fp16", tb, a.seconds, "prompts_per_s")
        rows.append((f"text encoder fp32, batch 800 (prompts/s){tag}", o32, t32, None))
        rows.append((f"text encoder fp16, batch 800 (prompts/s){tag}", o16, t16, None))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target-cuda", "release", "pyramidclip"))
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--models", nargs="+", default=["RN50", "ViT-B-32", "ViT-B-16"])
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--rates-only", action="store_true",
                    help="model-only rates: no end-to-end eval, no GPU-vs-CPU feature check")
    ap.add_argument("--bin2", help="a second binary (another build) timed model-only beside --bin")
    a = ap.parse_args()
    assert torch.cuda.is_available(), "no GPU visible to PyTorch"
    print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}, CUDA {torch.version.cuda}")
    try:
        print("driver:", sh("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader").strip())
    except Exception:
        pass
    # Our fused kernels against their CPU references on this GPU, first: a failing kernel makes
    # the binary run those ops as candle ops (reported as fused_ops "composed" below).
    kc = subprocess.run([a.bin, "dev", "kernel-check", "--device", "cuda"], capture_output=True, text=True)
    print(kc.stdout.strip().splitlines()[-1] if kc.stdout.strip() else kc.stderr.strip()[-300:])
    if kc.returncode != 0:
        print(kc.stdout)
    cp.parity_check()
    cfgs = cp.load_configs(os.path.join(ROOT, "configs", "model_config.yml"))
    rows, checks = [], []
    b = a.batch
    with tempfile.TemporaryDirectory() as d:
        data = os.path.join(d, "data")
        # --rates-only needs only the feature check's 64 images' listing, not the eval set.
        sh(a.bin, "dev", "synth", data, "--images", 64 if a.rates_only else a.images, "--classes", 10)
        names = os.path.join(d, "names.txt")
        open(names, "w").write("".join(f"class {i}\n" for i in range(10)))
        imgs = os.path.join(d, "images64.txt")  # the feature check's images
        open(imgs, "w").write("".join(open(os.path.join(data, "images.txt")).readlines()[:64]))
        texts = os.path.join(data, "texts.txt")
        for m in a.models:
            print(f"== {m}")
            ck = os.path.join(d, m + ".safetensors")
            sh(a.bin, "dev", "random-checkpoint", "--visual-model", m, ck)
            cfg = cfgs[m]
            sd = cp.load_state(ck)
            ref = to_cuda(cp.ref_model(sd, cfg))
            r = cfg["image_resolution"]
            x = torch.randn(b, 3, r, r, device="cuda")
            resnet = not isinstance(cfg["vision_layers"], int)

            def fp16(model, inp):
                def run():
                    with torch.autocast("cuda", dtype=torch.float16):
                        return model(inp)
                return run

            torch_fp32 = attempt("torch fp32", lambda: time_cuda(lambda: ref.visual(x), a.seconds) * b)
            if resnet:
                vis_cl = ref.visual.to(memory_format=torch.channels_last)
                x16 = x.to(memory_format=torch.channels_last)
            else:
                vis_cl, x16 = ref.visual, x
            torch_fp16 = attempt("torch fp16", lambda: time_cuda(fp16(vis_cl, x16), a.seconds) * b)
            torch_compiled = None
            if not a.no_compile:
                def compiled():
                    t0 = time.time()
                    c = torch.compile(vis_cl)
                    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
                        c(x16)
                    print(f"  torch.compile built in {time.time() - t0:.0f} s")
                    return time_cuda(fp16(c, x16), a.seconds) * b
                torch_compiled = attempt("torch.compile fp16", compiled)
            ours32 = ours_bench(a.bin, m, ck, "image", "fp32", b, a.seconds, "images_per_s")
            ours16 = ours_bench(a.bin, m, ck, "image", "fp16", b, a.seconds, "images_per_s")
            rows.append((f"{m} image fp32 (images/s)", ours32, torch_fp32, None))
            rows.append((f"{m} image fp16 (images/s)", ours16, torch_fp16, torch_compiled))
            if a.bin2:
                for p in ("fp32", "fp16"):
                    v = ours_bench(a.bin2, m, ck, "image", p, b, a.seconds, "images_per_s")
                    rows.append((f"  {m} image {p}, --bin2", v, torch_fp32 if p == "fp32" else torch_fp16, None))
            if a.rates_only:
                text_rows(a, m, ref, rows, fp16, ck)
                del ref
                torch.cuda.empty_cache()
                continue
            # End to end: decode on the machine's cores, fp16, against the model alone.
            out = os.path.join(d, f"{m}-eval.json")
            sh(a.bin, "eval", "-e", ck, "--test-data-path", data, "--classnames", names, "--device", "cuda",
               "--precision", "fp16", "--batch-size-test", b, "--no-text-cache", "--quiet", "--output", out)
            e2e = json.load(open(out))["images_per_s"]
            rows.append((f"{m} eval end to end fp16, {a.images} JPEGs (images/s)", e2e, None, None))
            checks.append(f"{m}: end to end {e2e:.0f} vs model-only {ours16:.0f} images/s "
                          f"({100 * e2e / ours16:.0f}%)")
            # Our GPU features against our CPU ones.
            emb = lambda dev, p, f: sh(a.bin, "embed", "-e", ck, "--image-list", imgs, "--texts-file", texts,
                                       "--device", dev, "--precision", p, "--batch-size", 64, "--out", f)
            cpu_f = os.path.join(d, f"{m}-cpu.safetensors")
            emb("cpu", "fp32", cpu_f)
            for p, thr in (("fp32", 0.9999), ("fp16", 0.999), ("bf16", 0.999)):
                g = os.path.join(d, f"{m}-{p}.safetensors")
                emb("cuda", p, g)
                res = subprocess.run([a.bin, "dev", "compare", cpu_f, g, "--min-cosine", str(thr)],
                                     capture_output=True, text=True)
                checks.append(f"{m} {p} GPU vs CPU: " + " ".join(res.stdout.split("\n")).strip()
                              + ("" if res.returncode == 0 else " FAIL"))
            text_rows(a, m, ref, rows, fp16, ck)
            del ref
            torch.cuda.empty_cache()
    fmt = lambda v: f"{v:10.1f}" if v else f"{'-':>10}"
    ratio = lambda o, t: f"{o / t:6.2f}x" if o and t else f"{'-':>7}"
    print(f"\n{'what':52} {'ours':>10} {'torch':>10} {'ratio':>7} {'compiled':>10} {'ratio':>7}")
    for what, o, t, c in rows:
        print(f"{what:52} {fmt(o)} {fmt(t)} {ratio(o, t)} {fmt(c)} {ratio(o, c)}")
    print()
    for c in checks:
        print(c)
    return 1 if any(c.endswith("FAIL") for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
