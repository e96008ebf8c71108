"""Evaluation on held-out characters of the world, graded by the judge only. It stands beside
train/: both read models/, pipelines/ and data/, neither the other (docs/ARCHITECTURE.md).

The judge (`serialgen train judge`) is a second CLIP trained on a world of another seed, with
an attribute classifier trained on that world that reads the world's attributes. It never sees the
models it grades. The world knows the truth of every held-out sample, so besides the paper's
embedding scores (CLIP-T, CLIP-I, AP-CLIP-I; Table 2) we report attribute accuracies: does
the image show the prompt's action, view and background (text control), and the reference
character's clothes and hair (appearance)?

- stage1.py `evaluate_stage1`: PSNR/SSIM of standardized vs ground-truth standard renders (Table 3),
  trivial baselines, body height, appearance read-back; `background_leak`.
- t2i.py `evaluate_t2i`: the base model from held-out captions: attribute accuracies, CLIP-T.
- series.py `evaluate_series`: the paper's protocol (held-out characters x 20 scene prompts x 4
  seeds) through `SerialGenPipeline`, with or without Stage I; `adapter_loss_gap`.
- report.py: `serialgen report`, the paper's tables and claims (docs/REPRODUCTION.md).
"""

from ..silhouette import colour_silhouette, region_colours
from .judge import APPEARANCE, COLOUR_FAMILIES, TEXT_CONTROL, Judge, accuracy_ci, attribute_accuracy, chance
from .series import CATEGORIES, Protocol, adapter_loss_gap, evaluate_series, on_white, protocol_scenes
from .stage1 import (
                     LEAK_BACKDROPS,
                     background_leak,
                     evaluate_stage1,
                     figure_box,
                     figure_height,
                     height_error,
)
from .stats import bootstrap_ci
from .t2i import evaluate_t2i

__all__ = ["APPEARANCE", "CATEGORIES", "COLOUR_FAMILIES", "LEAK_BACKDROPS", "TEXT_CONTROL", "Judge", "Protocol",
           "accuracy_ci", "adapter_loss_gap", "attribute_accuracy", "background_leak", "bootstrap_ci", "chance",
           "colour_silhouette", "evaluate_series", "evaluate_stage1", "evaluate_t2i", "figure_box", "figure_height",
           "height_error", "on_white", "protocol_scenes", "region_colours"]
