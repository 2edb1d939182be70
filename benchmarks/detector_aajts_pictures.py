"""EIVE maps of the same objects from scene-detr trained without and with AAJTS (a picture).

For each of the first ``--n`` held-out scenes of detector-aajts.yaml (seed 2): the detection
that the detector trained without AAJTS scores highest, and the detection of the same class
with the most overlapping box from the one trained with AAJTS; EIVE (CLHCF) overlay of each,
side by side. Train both first (commands in benchmarks/detector-aajts.yaml). Run from the
repository root:

    PYTHONPATH=src python benchmarks/detector_aajts_pictures.py [--n 6]

Writes docs/results/detector-aajts/eive_without_with_aajts.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from detector_pictures import tile

import salience as sl
from salience import explanation, viz
from salience.data.scenes import SceneDataset
from salience.images import ImageBatch
from salience.methods.drise import box_iou

MODELS = {"without AAJTS": "checkpoint:runs/aajts/runs/scene-detr/scene-detr.pt",
          "with AAJTS": "checkpoint:runs/aajts/runs/scene-detr-aajts1/scene-detr.pt"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=6)
    parser.add_argument("--out", default="docs/results/detector-aajts")
    args = parser.parse_args()
    scenes = SceneDataset(args.n, "detection", seed=2)
    batch = ImageBatch([scenes[i].image for i in range(args.n)], [scenes[i].image_id for i in range(args.n)])
    expls = {title: sl.explain(sl.load_model(name), batch, method="eive", target="all") for title, name in MODELS.items()}
    base, aajts = expls.values()
    base_pictures, aajts_pictures = explanation.map_pictures(base), explanation.map_pictures(aajts)
    rows = []
    for image in range(args.n):
        mine = (base.image_index == image).nonzero().flatten()
        theirs = (aajts.image_index == image).nonzero().flatten()
        if not len(mine) or not len(theirs):
            continue
        row = int(mine[base.scores[mine].argmax()])
        same_class = theirs[aajts.classes[theirs] == base.classes[row]]
        if not len(same_class):
            continue
        match = int(same_class[box_iou(base.boxes[row:row + 1], aajts.boxes[same_class]).flatten().argmax()])
        rows.append(tile([viz.caption(base_pictures[row], f"without AAJTS | {explanation.describe(base, row)}"),
                          viz.caption(aajts_pictures[match], f"with AAJTS | {explanation.describe(aajts, match)}")], 2))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "eive_without_with_aajts.png"
    tile(rows, 1, gap=10).save(path)
    print(f"wrote {path} ({len(rows)} objects)")


if __name__ == "__main__":
    main()
