"""Write the demo's bundled inputs, src/serialgen/assets/demo/: reference.png (a character of the
seed-7 world, which no bundled model was trained on, in a non-standard pose and background),
reference_true_standard.png (the world's own standard render of it, to compare with) and
reference.json (its caption). Rerun after changing the world; the prompts.txt beside them is
written by hand."""

import json
from pathlib import Path

from PIL import Image

from serialgen.world.generator import CharacterWorld

SEED, CHARACTER, POSE = 7, 4, 2

out = Path(__file__).resolve().parent.parent / "src" / "serialgen" / "assets" / "demo"
out.mkdir(parents=True, exist_ok=True)
sample = CharacterWorld(256, 384, seed=SEED).sample(CHARACTER, POSE)
Image.fromarray(sample["image"]).save(out / "reference.png", optimize=True)
Image.fromarray(sample["standard_image"]).save(out / "reference_true_standard.png", optimize=True)
meta = {"world_seed": SEED, "character": CHARACTER, "pose": POSE, "caption": sample["meta"]["caption"]}
(out / "reference.json").write_text(json.dumps(meta, indent=1) + "\n")
print(f"wrote {out}: {meta['caption']}")
