#!/usr/bin/env python3
"""Dev-time: writes upstream PyramidCLIP's label sets as text files under configs/data/upstream/
(`--classnames-from upstream`, `--zeroshot-type zh`). Reads a checkout of the upstream repository
(github.com/Yuting-Gao/PyramidCLIP, dataset/imagenet_zeroshot_data_{en,zh}.py); the files are
data modules, loaded here at dev time only: the product never runs them.

    python3 scripts/extract_upstream_labels.py /path/to/PyramidCLIP
"""
import os
import runpy
import sys

OUT = os.path.join(os.path.dirname(__file__), "..", "configs", "data", "upstream")


def write(name, lines):
    assert all("\n" not in l for l in lines), name
    with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def main():
    repo = sys.argv[1]
    os.makedirs(OUT, exist_ok=True)
    en = runpy.run_path(os.path.join(repo, "dataset", "imagenet_zeroshot_data_en.py"))
    zh = runpy.run_path(os.path.join(repo, "dataset", "imagenet_zeroshot_data_zh.py"))
    for ds, names in en["data_classnames"].items():
        write(f"{ds}_classnames.txt", list(names))
    # Templates are lambdas: render them with a marker to recover the `{}` form.
    write("imagenet_templates.txt", [t("{}") for t in en["openai_imagenet_template"]])
    write("imagenet_classnames_zh.txt", list(zh["imagenet_classnames"]))
    write("imagenet_templates_zh.txt", [t("{}") for t in zh["openai_imagenet_template"]])
    for ds, names in en["data_classnames"].items():
        print(ds, len(names))
    print("zh", len(zh["imagenet_classnames"]), len(zh["openai_imagenet_template"]))


if __name__ == "__main__":
    main()
