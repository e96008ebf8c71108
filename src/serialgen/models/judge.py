"""The judge's attribute classifier: reads a world image's attributes (garment colours, hair,
action, view, background, expression), one linear head per attribute of PROBE_ATTRIBUTES on a
small ResNet (transformers `ResNetModel`). Trained by `serialgen train judge` (train/judge.py) on a
world no graded model trained on; read by evaluation/ only. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ..quiet import library_logs
from ..world.attributes import PROBE_ATTRIBUTES


class AttributeClassifier(torch.nn.Module):
    """transformers ResNetModel + one linear head per attribute of PROBE_ATTRIBUTES."""

    def __init__(self, backbone, values: dict[str, tuple[str, ...]], input_size: tuple = ()):
        super().__init__()
        self.backbone, self.values, self.input_size = backbone, values, tuple(input_size)
        width = backbone.config.hidden_sizes[-1]
        self.heads = torch.nn.ModuleDict({a: torch.nn.Linear(width, len(v)) for a, v in values.items()})

    @classmethod
    def build(cls, widths=(32, 64, 128, 256), depths=(1, 1, 2, 1), input_size: tuple = ()) -> "AttributeClassifier":
        from transformers import ResNetConfig, ResNetModel

        config = ResNetConfig(num_channels=3, embedding_size=widths[0], hidden_sizes=list(widths), depths=list(depths),
                              layer_type="basic", downsample_in_first_stage=False)
        return cls(ResNetModel(config), dict(PROBE_ATTRIBUTES), input_size)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 3, H, W) in [-1, 1] -> logits per attribute (resized to `input_size` first, if set)."""
        if self.input_size and tuple(images.shape[-2:]) != self.input_size:
            images = F.interpolate(images, size=self.input_size, mode="bilinear", antialias=True)
        pooled = self.backbone(pixel_values=images).pooler_output.flatten(1)
        return {a: head(pooled) for a, head in self.heads.items()}

    def save_pretrained(self, folder) -> None:
        folder = Path(folder)
        self.backbone.save_pretrained(folder)
        save_file({f"{a}.{k}": v.detach().contiguous() for a, h in self.heads.items() for k, v in h.state_dict().items()},
                  str(folder / "heads.safetensors"))
        (folder / "attributes.json").write_text(json.dumps({a: list(v) for a, v in self.values.items()}, indent=1))
        (folder / "classifier.json").write_text(json.dumps({"input_size": list(self.input_size)}))

    @classmethod
    def from_pretrained(cls, folder) -> "AttributeClassifier":
        from transformers import ResNetModel

        folder = Path(folder)
        values = {a: tuple(v) for a, v in json.loads((folder / "attributes.json").read_text()).items()}
        settings = json.loads((folder / "classifier.json").read_text()) if (folder / "classifier.json").exists() else {}
        with library_logs():  # transformers' load report and progress bar
            backbone = ResNetModel.from_pretrained(folder, dtype=torch.float32)
        model = cls(backbone, values, tuple(settings.get("input_size", ())))
        tensors = load_file(str(folder / "heads.safetensors"))
        for a, head in model.heads.items():
            head.load_state_dict({k: tensors[f"{a}.{k}"].float() for k in ("weight", "bias")})
        return model.float().eval()
