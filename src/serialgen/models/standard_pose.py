"""The standard pose estimator: a reference's keypoints in, its character's standard keypoints out.

Stage I draws the reference's character in the standard A-pose with the face at a fixed place and
scale (SerialGen §3.3), so the standard figure's height and width follow the body's proportions: a
child five heads tall stands shorter on the canvas than an adult of seven. Giving the denoising
UNet one template A-pose for every character (the median adult) asks it to draw every child
adult-sized. This small MLP reads the proportions from the reference's own keypoints (COCO-18, any
pose, view or framing) and predicts the standard keypoints, whose pose map then is the target
pose. Not in the paper, which states no target pose for inference beyond "a standard pose".

Inputs are made translation- and scale-free (centred on the visible keypoints' mean, divided by
their spread); outputs are offsets from the template A-pose, in canvas fractions. Fitted by
`train.stage1.fit_standard_pose`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

KEYPOINTS = 18


def normalized(keypoints: torch.Tensor) -> torch.Tensor:
    """(N, 18, 3) keypoints (x, y, visible) in any unit -> (N, 54) features: visible points centred
    on their mean and divided by their RMS distance from it, zero where not visible, and the flags."""
    xy, vis = keypoints[..., :2].float(), (keypoints[..., 2:3] > 0).float()  # (N, 18, 2), (N, 18, 1)
    count = vis.sum(1, keepdim=True).clamp(min=1.0)  # (N, 1, 1)
    centre = (xy * vis).sum(1, keepdim=True) / count  # (N, 1, 2)
    spread = (((xy - centre) ** 2).sum(-1, keepdim=True) * vis).sum(1, keepdim=True).div(count).sqrt()  # (N, 1, 1)
    rel = (xy - centre) / spread.clamp(min=1e-6) * vis  # (N, 18, 2)
    return torch.cat([rel.flatten(1), vis.flatten(1)], 1)  # (N, 54)


class StandardPoseEstimator(nn.Module):
    """MLP: reference keypoints (N, 18, 3) in canvas pixels of a (width, height) canvas -> standard
    keypoints (N, 18, 3) in the same pixels, visible where the template's are."""

    def __init__(self, template: torch.Tensor | np.ndarray, hidden: int = 256):
        super().__init__()
        template = torch.as_tensor(np.asarray(template, np.float32))  # (18, 3): x / W, y / H, visible
        if template.shape != (KEYPOINTS, 3):
            raise ValueError(f"The template must be ({KEYPOINTS}, 3) rows (x / W, y / H, visible), got {tuple(template.shape)}")
        self.register_buffer("template", template)
        self.net = nn.Sequential(nn.Linear(3 * KEYPOINTS, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 2 * KEYPOINTS))
        nn.init.zeros_(self.net[-1].weight)  # starts at the template
        nn.init.zeros_(self.net[-1].bias)

    def offsets(self, keypoints: torch.Tensor) -> torch.Tensor:
        """(N, 18, 3) -> (N, 18, 2) offsets from the template, in canvas fractions."""
        return self.net(normalized(keypoints)).view(-1, KEYPOINTS, 2)

    def forward(self, keypoints: torch.Tensor, width: int, height: int) -> torch.Tensor:
        scale = keypoints.new_tensor([width, height])
        xy = (self.template[:, :2] + self.offsets(keypoints.float())) * scale  # (N, 18, 2)
        return torch.cat([xy, self.template[:, 2:].expand(len(xy), -1, -1)], -1)  # (N, 18, 3)

