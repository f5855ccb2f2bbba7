"""Rebuild the embedded demo data set (dagnn_export/demo/data/mirflickr-mini) from the shared MIRFlickr-25K copy.

    python scripts/make_demo_data.py [--shared ../shared] [--photos 1200] [--queries 6] [--text-only 2000]

A seeded random sample of the photo pairs (plus text-only pairs, which only feed text pretraining),
copied byte for byte, with the query photos kept out of pairs.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "dagnn_export" / "demo" / "data" / "mirflickr-mini"

NOTE = """# mirflickr-mini — the demo's embedded data set

A small real subset of MIRFlickr-25K (Huiskes & Lew, "The MIR Flickr Retrieval Evaluation", ACM MIR 2008),
in dagnn's data set format (`pairs.jsonl`, `labels.txt`, `tag_vocab.txt`; see `runtime/dataset.py`).

- {photos} photo pairs (128x128 JPEG, downscaled from the originals) with their Flickr tags and the 24
  MIRFlickr labels, and {text_only} text-only pairs (tags + labels, no photo) that only feed text pretraining.
- `queries/`: {queries} photos that are NOT in `pairs.jsonl`, for trying `dagnn query` and `dagnn tag`;
  `queries/queries.jsonl` holds their tags and labels.
- `label_embeddings.npy`: GloVe 6B 300-d vectors of the 24 labels (rows in `labels.txt` order).
- Rows keep their `row` id in the cleaned 20,015-pair MIRFlickr set used by DCMH and later work.

Licence: the photos are Flickr photos published under Creative Commons licences and distributed by the
MIRFLICKR authors for research; they keep their original licences and are included here for research
and demonstration only. Rebuild with `python scripts/make_demo_data.py` (seed {seed}).
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("DAGNN_SHARED", REPO.parent / "shared")))
    ap.add_argument("--photos", type=int, default=1200)
    ap.add_argument("--queries", type=int, default=6)
    ap.add_argument("--text-only", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    src = args.shared / "data" / "mirflickr25k"
    pairs = [json.loads(line) for line in (src / "pairs.jsonl").read_text().splitlines() if line.strip()]
    rng = np.random.default_rng(args.seed)
    with_image = [p for p in pairs if p["image"]]
    without = [p for p in pairs if not p["image"]]
    picked = [with_image[i] for i in rng.permutation(len(with_image))[: args.photos + args.queries]]
    queries, photos = picked[: args.queries], sorted(picked[args.queries:], key=lambda p: p["row"])
    text_only = sorted((without[i] for i in rng.permutation(len(without))[: args.text_only]), key=lambda p: p["row"])

    tmp = OUT.with_name(OUT.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    (tmp / "queries").mkdir()
    for p in photos:
        shutil.copyfile(src / p["image"], tmp / p["image"])
    rows = sorted(photos + text_only, key=lambda p: p["row"])
    (tmp / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in rows))
    query_records = []
    for p in queries:
        name = Path(p["image"]).name
        shutil.copyfile(src / p["image"], tmp / "queries" / name)
        query_records.append({"image": name, "tags": p["tags"], "labels": p["labels"]})
    (tmp / "queries" / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in query_records))
    for name in ("labels.txt", "tag_vocab.txt"):
        shutil.copyfile(src / name, tmp / name)
    shutil.copyfile(args.shared / "data" / "label_embeddings" / "mirflickr-glove6B.npy", tmp / "label_embeddings.npy")
    (tmp / "README.md").write_text(NOTE.format(photos=len(photos), text_only=len(text_only),
                                               queries=len(queries), seed=args.seed))
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, OUT)
    print(f"wrote {OUT}: {len(photos)} photos, {len(text_only)} text-only pairs, {len(queries)} query photos")


if __name__ == "__main__":
    main()
