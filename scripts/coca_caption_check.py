#!/usr/bin/env python3
"""Dev-time: `pyramidclip captioning` against CLIP_benchmark's `captioning` task end to end on a
full-size CoCa with open_clip's random weights (`create_model(name, pretrained=None)`, seed 0;
the decoder's vocabulary projection, which open_clip leaves at zero, drawn with std width^-0.5),
both in fp32 on the CPU: torchvision's `CocoCaptions` over a COCO-format file of the fixture
images and SYNTH synthetic ones (default 40; 1-3 references each, "a photo of a {class}."),
open_clip's `CoCa.generate` with its defaults and CLIP_benchmark's decoding, then
pycocoevalcap (PTBTokenizer, Bleu, ROUGE_L, CIDEr; METEOR and SPICE left out). Reports how
many images get the same ids, the scores both ways and each side's wall time (same threads).

With BASE set to another build of pyramidclip (an earlier commit), that one runs too, in the
same run, and its ids and time are reported beside ours. ENGINE picks our engine (default
native; candle for the tensor-op route the GPU takes).

    PYTHONPATH=/tmp/tf4 python3 scripts/coca_caption_check.py target/release/pyramidclip [OUT_DIR] [MODELS...]
    (transformers < 4.57 for open_clip 3.3's generate; pycocoevalcap and Java for the scores)
"""
import json
import os
import random
import subprocess
import sys
import tempfile
import time

import open_clip
import torch
from clip_benchmark.datasets.builder import image_captions_collate_fn
from open_clip.tokenizer import _tokenizer
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
from torchvision.datasets import CocoCaptions

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FX = os.path.join(ROOT, "tests", "fixtures")


def scores(gts, res):
    tok = PTBTokenizer()
    gts, res = tok.tokenize(gts), tok.tokenize(res)
    out = {}
    for scorer, names in [(Bleu(4), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]),
                          (Rouge(), ["ROUGE_L"]), (Cider(), ["CIDEr"])]:
        s, _ = scorer.compute_score(gts, res)
        s = s if isinstance(s, list) else [s]
        out.update({n: float(v) for n, v in zip(names, s)})
    return out


def main():
    binary = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp()
    names = sys.argv[3:] or ["coca_ViT-B-32"]
    os.makedirs(out, exist_ok=True)
    threads = int(os.environ.get("THREADS", "2"))
    engine = os.environ.get("ENGINE", "native")
    torch.set_num_threads(threads)
    manifest = json.load(open(os.path.join(FX, "manifest.json")))
    images = [os.path.join(FX, p) for p in manifest["images"]]
    synth = os.path.join(out, "synth")
    subprocess.run([binary, "dev", "synth", synth, "--images", os.environ.get("SYNTH", "40")],
                   check=True, capture_output=True)
    images += open(os.path.join(synth, "images.txt")).read().split()
    rng = random.Random(0)
    classes = [c for c in open(os.path.join(ROOT, "configs", "data",
                                            "imagenet_classnames.txt")).read().splitlines() if c]
    coco = {"images": [], "annotations": []}
    for i, p in enumerate(images):
        coco["images"].append({"id": i, "file_name": os.path.abspath(p)})
        for _ in range(rng.randint(1, 3)):
            coco["annotations"].append({"id": len(coco["annotations"]), "image_id": i,
                                        "caption": f"A photo of a {rng.choice(classes)}."})
    ann = os.path.join(out, "captions.json")
    json.dump(coco, open(ann, "w"))
    for name in names:
        torch.manual_seed(0)
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
        # open_clip leaves the decoder's vocabulary projection at zero without pretrained
        # weights: every logit 0, every choice a tie. Drawn as its init_parameters would.
        proj = model.text_decoder.text_projection
        with torch.no_grad():
            proj.normal_(std=proj.shape[0] ** -0.5)
        model.eval()
        ds = CocoCaptions(root="/", annFile=ann, transform=preprocess)
        loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=False,
                                             collate_fn=image_captions_collate_fn)
        t0 = time.time()
        theirs = []
        for img, captions in loader:
            with torch.no_grad():
                gen = model.generate(img)
            for seq, true in zip(gen.numpy(), captions):
                ids = [int(t) for t in seq]
                ids = ids[:ids.index(49407)] if 49407 in ids else ids
                text = (_tokenizer.decode(seq).split("<end_of_text>")[0]
                        .replace("<start_of_text>", "").strip())
                theirs.append((ids, text, true))
        t_theirs = time.time() - t0
        sd = os.path.join(out, f"{name}.bin")
        torch.save(model.state_dict(), sd)

        def run(exe, tag):
            saved = os.path.join(out, f"{name}{tag}.jsonl")
            result = os.path.join(out, f"{name}{tag}.json")
            t0 = time.time()
            r = subprocess.run([exe, "captioning", "--checkpoint", sd, "--visual-model", name,
                                "--captions", ann, "--images-root", "/", "--engine", engine,
                                "--output", result, "--save-captions", saved, "-q"],
                               capture_output=True, text=True)
            took = time.time() - t0
            if r.returncode != 0:
                sys.exit(f"{name} ({exe}): {r.stderr.strip()}")
            return [json.loads(line) for line in open(saved)], result, took

        ours, result, t_ours = run(binary, "")
        if os.environ.get("BASE"):
            base, _, t_base = run(os.environ["BASE"], ".base")
            same_base = sum(o["ids"] == b["ids"] for o, b in zip(ours, base))
            print(f"{name}: base {os.environ['BASE']} {t_base:.1f} s, ours {t_ours:.1f} s "
                  f"({t_base / t_ours:.2f}x), ids equal on {same_base} of {len(base)}")
        same = sum(o["ids"] == t[0] for o, t in zip(ours, theirs))
        same_text = sum(o["caption"] == t[1] for o, t in zip(ours, theirs))
        gts = {i: [{"caption": c} for c in t[2]] for i, t in enumerate(theirs)}
        res = {i: [{"caption": t[1]}] for i, t in enumerate(theirs)}
        m_theirs = scores(gts, res)
        m_ours = json.load(open(result))["metrics"]
        print(f"{name}: {len(theirs)} images, ids equal on {same}, captions on {same_text}; "
              f"open_clip + CLIP_benchmark generate {t_theirs:.1f} s, ours {t_ours:.1f} s "
              f"(whole run, {t_theirs / t_ours:.2f}x), {threads} threads, engine {engine}")
        for k in m_theirs:
            print(f"  {k}: ours {m_ours[k]:.9g} theirs {m_theirs[k]:.9g}")


if __name__ == "__main__":
    main()
