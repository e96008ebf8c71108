"""Trainers, one module per model, each with a typed config (`<Name>TrainConfig`, a `LoopConfig`),
its presets (`PRESETS`: "mini", and "paper" where the paper trains that model) and
`train(cfg, data, out, resume) -> model folder`. All run the one loop in loop.py.
See docs/ARCHITECTURE.md."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# name -> what it trains (for --help); modules load only when asked for
TRAINERS = {
    "vae": "the VAE (diffusers AutoencoderKL) on renders",
    "clip": "CLIP (transformers CLIPModel) on (render, caption) pairs, with its tokenizer",
    "t2i": "the text-to-image base UNet on VAE latents and CLIP text states",
    "judge": "the evaluator: a second CLIP on a disjoint world, with attribute probes",
    "stage1": "the Stage I standardizer (ReferenceNet + denoising UNet, FBDM, RPIM)",
    "stage2": "the Stage II image adapter (IP-Adapter, all CLIP tokens) under --pairing",
}


@dataclass(frozen=True)
class Trainer:
    config: type  # the config dataclass
    presets: dict  # preset name -> config (None: the paper trains no such model)
    train: Callable  # train(cfg, data, out, resume=False, device="auto") -> the model folder


def trainer(name: str) -> Trainer:
    """The trainer called `name` (a key of TRAINERS)."""
    if name == "vae":
        from . import vae as module
        config = module.VAETrainConfig
    elif name == "clip":
        from . import clip as module
        config = module.CLIPTrainConfig
    elif name == "t2i":
        from . import t2i as module
        config = module.T2ITrainConfig
    elif name == "judge":
        from . import judge as module
        config = module.JudgeTrainConfig
    elif name == "stage1":
        from . import stage1 as module
        config = module.Stage1TrainConfig
    elif name == "stage2":
        from . import stage2 as module
        config = module.Stage2TrainConfig
    else:
        raise ValueError(f"Unknown model {name!r}; trainers are {', '.join(TRAINERS)}")
    return Trainer(config, module.PRESETS, module.train)
