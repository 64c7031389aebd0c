"""Dev-time: writes the CoCa captioning-loss fixtures under tests/fixtures/clip/:

- `tiny-coca-gen.json` / `tiny-coca-gen.pt`: an open_clip CoCa at toy size whose decoder can
  run (embed_dim = the decoder's width = the text tower's, as open_clip's decoder needs; image
  width 24, so the pooler keeps separate q/k/v weights), two decoder layers, random weights
  moved off their init and rounded through fp16 (the stored weights are the ones computed
  with);
- `coca_generative.json`: what open_clip_train's own `evaluate` reports for it on
  `tests/fixtures/retrieval/captions_open_clip_rows.tsv` (its CsvDataset, the model's
  preprocess and tokenizer, batches of 3 and 64, fp32): `clip_val_loss`,
  `val_generative_loss` and the retrieval metrics; and each row's own mean cross-entropy
  (`row_losses`, the decoder's logits against the caption's next ids, padding included).

    cd tests/fixtures && /tmp/venv/bin/python ../../scripts/dev/coca_generative_reference.py
    (open_clip_torch 3.3 with open_clip_train, torch 2.15)
"""
import json
import os
import types

import open_clip
import torch
import torch.nn.functional as F
from open_clip_train.data import CsvDataset
from open_clip_train.train import evaluate

FX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures")
CLIP = os.path.join(FX, "clip")
NAME = "tiny-coca-gen"

CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 24, "head_width": 8, "patch_size": 16,
                   "attentional_pool": True, "attn_pooler_heads": 2, "attn_pooler_queries": 8,
                   "output_tokens": True},
    "text_cfg": {"context_length": 76, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 2,
                 "embed_cls": True, "output_tokens": True},
    "multimodal_cfg": {"context_length": 76, "vocab_size": 49408, "width": 16, "heads": 2,
                       "layers": 2, "attn_pooler_heads": 2},
    "custom_text": True,
}


class Loader(torch.utils.data.DataLoader):
    num_samples = 0


def main():
    torch.manual_seed(20261207)
    os.chdir(FX)  # the TSV's image paths are relative to the fixtures
    with open(os.path.join(CLIP, NAME + ".json"), "w") as f:
        json.dump(CONFIG, f, indent=1)
    open_clip.add_model_config(CLIP)
    model, _, preprocess = open_clip.create_model_and_transforms(NAME)
    with torch.no_grad():
        for k, p in model.named_parameters():
            if k == "logit_scale":
                continue
            # Wider than the init (the decoder's projection too), so the loss is not flat.
            p.copy_((p + 0.05 * torch.randn_like(p)).half().float())
    path = os.path.join(CLIP, NAME + ".pt")
    torch.save({k: v.half() for k, v in model.state_dict().items()}, path)
    # Evaluated as loaded from the file (its logit_scale rounded to fp16 as well).
    model, _, preprocess = open_clip.create_model_and_transforms(NAME, pretrained=path)
    model.eval()
    tok = open_clip.get_tokenizer(NAME)
    tsv = os.path.join("retrieval", "captions_open_clip_rows.tsv")
    ds = CsvDataset(tsv, preprocess, img_key="filepath", caption_key="title", sep="\t",
                    tokenizer=tok)
    out = {"open_clip": open_clip.__version__, "torch": torch.__version__}
    for batch in [3, 64]:
        loader = Loader(ds, batch_size=batch, shuffle=False, num_workers=0)
        loader.num_samples = len(ds)
        data = {"val": types.SimpleNamespace(dataloader=loader)}
        args = types.SimpleNamespace(device="cpu", precision="fp32", val_frequency=1, epochs=1,
                                     distributed=False, horovod=False, save_logs=False, rank=0,
                                     local_rank=0, zeroshot_frequency=0, wandb=False)
        m = evaluate(model, data, 1, args)
        out[str(batch)] = {k: float(v) for k, v in m.items() if k != "epoch"}
    with torch.no_grad():
        images = torch.stack([ds[i][0] for i in range(len(ds))])
        texts = torch.stack([ds[i][1] for i in range(len(ds))])
        o = model(images, texts)
        ce = F.cross_entropy(o["logits"].permute(0, 2, 1), o["labels"], reduction="none")
        out["row_losses"] = ce.mean(1).tolist()
    with open(os.path.join(CLIP, "coca_generative.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
