"""Dev-time: writes tests/fixtures/clip/language.json, CLIP_benchmark's zero-shot classifier
in its other languages (`--language ar|cn|it|jp`: its `LANG_classnames.json` and
`LANG_zeroshot_classification_templates.json`, imagenet1k entries) on the minival images with
the tiny ViT (tests/fixtures/clip/tiny-clip-vit), through open_clip 3.3 and CLIP_benchmark's
own `zero_shot_classifier` (amp off). The classes are three of ImageNet's (ladybug, daisy,
greenhouse: indices 301, 985, 580) in each language, all of the language's templates. The
Chinese classifier is also saved as CLIP_benchmark's `--save_clf` saves it (cb_clf_cn.pt).

    /tmp/venv/bin/python scripts/dev/cb_language_reference.py /path/to/CLIP_benchmark
"""
import json
import os
import sys

import open_clip
import torch
from PIL import Image

sys.path.insert(0, sys.argv[1])
from clip_benchmark.metrics.zeroshot_classification import zero_shot_classifier  # noqa: E402

HERE = os.path.dirname(__file__)
FX = os.path.join(HERE, "..", "..", "tests", "fixtures")
CLIP = os.path.join(FX, "clip")
CB = os.path.join(sys.argv[1], "clip_benchmark", "datasets")
CLASSES = [301, 985, 580]


def main():
    open_clip.add_model_config(CLIP)
    model, _, preprocess = open_clip.create_model_and_transforms(
        "tiny-clip-vit", pretrained=os.path.join(CLIP, "tiny-clip-vit.pt"))
    model.eval()
    tok = open_clip.get_tokenizer("tiny-clip-vit")
    files = json.load(open(os.path.join(FX, "manifest.json")))["minival"]["files"]
    with torch.no_grad():
        img = model.encode_image(torch.stack([preprocess(Image.open(os.path.join(FX, p)))
                                              for p in files]))
        img = img / img.norm(dim=-1, keepdim=True)
    out = {"files": files, "classes": CLASSES, "languages": {}}
    for lang in ("ar", "cn", "it", "jp"):
        names = json.load(open(os.path.join(CB, f"{lang}_classnames.json")))["imagenet1k"]
        templates = json.load(open(os.path.join(
            CB, f"{lang}_zeroshot_classification_templates.json")))["imagenet1k"]
        classnames = [names[i] for i in CLASSES]
        with torch.no_grad():
            clf = zero_shot_classifier(model, tok, classnames, templates, "cpu", amp=False)
            logits = 100.0 * img @ clf
        if lang == "cn":
            # CLIP_benchmark's --save_clf of this classifier: what --load-clfs reads.
            torch.save(clf, os.path.join(CLIP, "cb_clf_cn.pt"))
        out["languages"][lang] = {"classnames": classnames, "templates": len(templates),
                                  "logits": logits.tolist(),
                                  "pred_top1": logits.argmax(1).tolist()}
    with open(os.path.join(CLIP, "language.json"), "w") as f:
        json.dump(out, f, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
