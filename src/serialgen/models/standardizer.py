"""The Stage I standardization model (SerialGen §3.3, docs/ARCHITECTURE.md).

Two stock diffusers UNets, both initialised from one checkpoint (SD1.5 at paper scale, the
mini text-to-image UNet at mini scale): the ReferenceNet, run once at t = 0 on the clean
reference latent, and the denoising UNet, which reads its self-attention bank
(`reference_attention.py`), gets the target (standard) pose through a PoseGuider added after conv_in,
and the reference's CLIP image embedding as cross-attention context (no text). FBDM and RPIM
adapt the ReferenceNet's features. The model maps (x_t, t, cond) to a noise prediction and
knows nothing of the noise schedule or the sampler.

Saved layout (from_pretrained/save_pretrained):
    reference_net/   diffusers UNet2DConditionModel
    denoiser/        diffusers UNet2DConditionModel
    adapters.safetensors   pose_guider.*, rpim.*, adapters.* (FBDM vectors, RPIM convs)
    standardizer.json      StandardizerConfig
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.utils.accelerate_utils import apply_forward_hook
from torch import nn

from . import rpim
from .pose_guider import PoseGuider
from .reference_attention import (
    LayerAdapter,
    ReferenceBank,
    added_after_conv_in,
    attach_reader,
    attach_writer,
    self_attention_layers,
)
from .standard_pose import StandardPoseEstimator

CONFIG_NAME = "standardizer.json"
WEIGHTS_NAME = "adapters.safetensors"


STARTS = ("canvas", "noise", "silhouette")  # StandardizePipeline's sampling starts


@dataclass(frozen=True)
class StandardizerConfig:
    """Defaults are the paper's: 512x768 canvas, pose encoder widths 16, 32, 96, 256, FBDM and RPIM on.

    template_keypoints: the standard A-pose drawn as the target pose when the caller gives
    none, as (18, 3) rows (x / width, y / height, visible); the mini training run measures it
    as the median of its characters' standard keypoints.
    standard_pose: with a `StandardPoseEstimator` (models/standard_pose.py), which predicts the
    target pose from the reference's keypoints (the body's proportions) instead of the template."""

    width: int = 512
    height: int = 768
    pose_channels: tuple[int, ...] = (16, 32, 96, 256)
    fbdm: bool = True
    rpim: bool = True
    template_keypoints: tuple[tuple[float, float, float], ...] = ()
    standard_pose: bool = False  # a StandardPoseEstimator predicts each reference's standard keypoints
    # where StandardizePipeline starts sampling unless told: "canvas", "noise" or "silhouette", and
    # the silhouette start's strength (the share of the steps run), chosen on validation characters
    # for the weights they are saved with
    start: str = "canvas"
    strength: float = 0.8
    # the PoseGuider also reads the reference's colour silhouette drawn at the target pose
    # (`silhouette.colour_silhouette`: its own part colours, flat-shaded) beside the pose map, so the
    # denoiser is told each part's colour where the part goes instead of recalling it through
    # reference attention alone. Not in the paper (see README, Stage I)
    colour_prior: bool = False

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> StandardizerConfig:
        data = json.loads(text)
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"Unknown standardizer config keys {sorted(unknown)}: was it saved by a newer serialgen?")
        data["pose_channels"] = tuple(data.get("pose_channels", cls.pose_channels))
        data["template_keypoints"] = tuple(tuple(row) for row in data.get("template_keypoints", ()))
        config = cls(**data)
        if config.start not in STARTS or not 0 < config.strength <= 1:
            raise ValueError(f"standardizer config: start must be one of {', '.join(STARTS)} and 0 < strength <= 1, "
                             f"got {config.start!r} and {config.strength}")
        return config


def _key(name: str) -> str:
    return name.replace(".", "_")  # ModuleDict keys cannot hold dots


class Standardizer(nn.Module):
    """ReferenceNet + denoising UNet + PoseGuider + RPIM encoder + per-layer FBDM/RPIM adapters."""

    def __init__(self, reference_net, denoiser, config: StandardizerConfig = StandardizerConfig()):
        super().__init__()
        if tuple(reference_net.config.block_out_channels) != tuple(denoiser.config.block_out_channels):
            raise ValueError("The ReferenceNet and the denoising UNet must share one architecture (their "
                             "self-attentions pair up block by block)")
        self.config = config
        self.reference_net, self.denoiser = reference_net, denoiser
        width = denoiser.config.block_out_channels[0]
        self.pose_guider = PoseGuider(width, config.pose_channels, in_channels=6 if config.colour_prior else 3,
                                      zero_out=True)
        self.rpim = rpim.encoder(width, config.pose_channels) if config.rpim else None  # eq. 4's E_p
        if config.standard_pose and len(config.template_keypoints) != 18:
            raise ValueError("standard_pose needs the config's template_keypoints (18 rows): the estimator predicts offsets from it")
        self.standard_pose = StandardPoseEstimator(config.template_keypoints) if config.standard_pose else None
        layers = self_attention_layers(reference_net)
        self.adapters = nn.ModuleDict()
        if config.fbdm or config.rpim:
            for name, attn in layers.items():
                self.adapters[_key(name)] = LayerAdapter(attn.to_q.in_features, width, config.fbdm, config.rpim)
        attach_writer(reference_net, {name: self.adapters[_key(name)] for name in layers if _key(name) in self.adapters})
        attach_reader(denoiser)

    @classmethod
    def from_unet(cls, unet, config: StandardizerConfig = StandardizerConfig()) -> Standardizer:
        """Both UNets initialised from one checkpoint, as the paper does from SD1.5."""
        return cls(copy.deepcopy(unet), copy.deepcopy(unet), config)

    @property
    def dtype(self) -> torch.dtype:
        return self.denoiser.dtype

    @property
    def latent_size(self) -> tuple[int, int]:
        return self.config.height // 8, self.config.width // 8

    @apply_forward_hook  # model CPU offload: these call parts directly, not forward
    def encode_reference(self, latents: torch.Tensor, image_embeds: torch.Tensor,
                         background_mask: torch.Tensor | None = None, pose_map: torch.Tensor | None = None) -> ReferenceBank:
        """ReferenceNet at t = 0 on the clean reference.

        latents (N, 4, h, w) scaled VAE latents; image_embeds (N, 1, D) CLIP image embedding;
        background_mask (N, 1, H, W), 1 on background (FBDM); pose_map (N, 3, H, W) in [-1, 1],
        the reference's own pose (RPIM). -> the bank the denoising UNet reads at every step."""
        bank = ReferenceBank(latent_size=tuple(latents.shape[-2:]), background_mask=background_mask,
                             pose_features=self.rpim(pose_map.to(self.dtype)) if self.rpim is not None and pose_map is not None else None)
        t = torch.zeros(len(latents), dtype=torch.long, device=latents.device)
        self.reference_net(latents, t, encoder_hidden_states=image_embeds, cross_attention_kwargs={"reference": bank})
        return bank

    @apply_forward_hook  # model CPU offload: these call parts directly, not forward
    @torch.no_grad()
    def predict_standard_keypoints(self, keypoints: torch.Tensor) -> torch.Tensor:
        """Reference keypoints (N, 18, 3) in canvas pixels -> standard keypoints (N, 18, 3) in canvas
        pixels, from the StandardPoseEstimator."""
        if self.standard_pose is None:
            raise ValueError("This standardizer has no StandardPoseEstimator (config standard_pose = false)")
        w, h = self.config.width, self.config.height
        return self.standard_pose(keypoints.float().to(self.standard_pose.template.device), w, h).float().cpu()

    @apply_forward_hook  # model CPU offload: these call parts directly, not forward
    def pose_features(self, pose_map: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        """Target pose map (N, 3, H, W) in [-1, 1] -> (N, C0, h, w), added after conv_in. prior
        (N, 3, H, W) in [-1, 1]: the reference's colour silhouette at the target pose, which a
        standardizer with `colour_prior` needs and any other refuses."""
        if (prior is not None) != self.config.colour_prior:
            raise ValueError("This standardizer reads a colour silhouette beside the target pose: pass prior"
                             if self.config.colour_prior else "This standardizer has no colour prior (config colour_prior = false)")
        if prior is not None:
            if prior.shape != pose_map.shape:
                raise ValueError(f"The colour prior {tuple(prior.shape)} must match the pose map {tuple(pose_map.shape)}")
            pose_map = torch.cat([pose_map, prior.to(pose_map)], 1)
        return self.pose_guider(pose_map.to(self.dtype))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        """Noise prediction (N, 4, h, w).

        cond: {"reference": ReferenceBank or None, "pose": pose features (N, C0, h, w) or None,
        "image": CLIP image embeds (N, 1, D)}."""
        with added_after_conv_in(self.denoiser, cond.get("pose")):
            return self.denoiser(x_t, t, encoder_hidden_states=cond["image"],
                                 cross_attention_kwargs={"reference": cond.get("reference")}).sample

    # -- saving and loading ---------------------------------------------------------------

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        parts = {"pose_guider": self.pose_guider, "rpim": self.rpim, "adapters": self.adapters,
                 "standard_pose": self.standard_pose}
        return {f"{prefix}.{k}": v for prefix, module in parts.items() if module is not None
                for k, v in module.state_dict().items()}

    def save_pretrained(self, out: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write the saved layout atomically (temp folder, then rename)."""
        from safetensors.torch import save_file

        out = Path(out)
        tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        for name in ("reference_net", "denoiser"):
            unet = getattr(self, name)
            (copy.deepcopy(unet).to(dtype) if dtype is not None else unet).save_pretrained(tmp / name)
        tensors = {k: (v.to(dtype) if dtype is not None else v).detach().cpu().contiguous()
                   for k, v in self.adapter_state_dict().items()}
        save_file(tensors, str(tmp / WEIGHTS_NAME))
        (tmp / CONFIG_NAME).write_text(self.config.to_json() + "\n")
        if out.exists():
            old = out.with_name(f"{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            import shutil

            shutil.rmtree(old)
        else:
            tmp.rename(out)
        return out

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, allow_pickle: bool = False) -> Standardizer:
        from diffusers import UNet2DConditionModel
        from safetensors.torch import load_file

        from ..quiet import library_logs
        from .loading import _safetensors_or_refuse

        folder = Path(folder)
        if not (folder / CONFIG_NAME).exists():
            raise FileNotFoundError(f"{folder} is not a saved standardizer: it lacks {CONFIG_NAME} (expected reference_net/, "
                                    f"denoiser/, {WEIGHTS_NAME}, {CONFIG_NAME})")
        config = StandardizerConfig.from_json((folder / CONFIG_NAME).read_text())
        with library_logs():
            unets = [UNet2DConditionModel.from_pretrained(folder / name,
                                                          use_safetensors=_safetensors_or_refuse(folder / name, allow_pickle))
                     for name in ("reference_net", "denoiser")]
        model = cls(*unets, config)
        state = load_file(str(folder / WEIGHTS_NAME))
        dtype = unets[1].dtype
        missing = set(model.adapter_state_dict()) - set(state)
        if missing:
            raise ValueError(f"{folder / WEIGHTS_NAME} lacks {len(missing)} tensors, e.g. {sorted(missing)[0]}: "
                             "it was saved with other fbdm/rpim settings than its config says")
        for prefix in ("pose_guider", "rpim", "adapters", "standard_pose"):
            module = getattr(model, prefix)
            if module is not None:
                part = {k[len(prefix) + 1:]: v.to(dtype) for k, v in state.items() if k.startswith(prefix + ".")}
                module.load_state_dict(part)
        return model.to(dtype)
