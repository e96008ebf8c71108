"""COCO-18 keypoints and the OpenPose-style pose map drawer.

One drawer for every source of keypoints: the character world and real-image preprocessing
both call `draw_pose_map`, so Stage I sees the same pose maps at training and inference.
The layout and colours are OpenPose's (as used by ControlNet and Animate Anyone).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

COCO18 = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
)
# Limbs as keypoint index pairs, in OpenPose's drawing order.
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)
COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)


def draw_pose_map(keypoints: np.ndarray, width: int, height: int) -> np.ndarray:
    """Draw keypoints (18, 3) = (x, y, visible) in pixels on black -> (height, width, 3) uint8.

    Limbs are ellipses at 60% intensity, joints full-intensity discs; only limbs whose both
    ends are visible are drawn. Stroke widths scale with the image (4 px at 512 px tall).
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.shape != (18, 3):
        raise ValueError(f"keypoints must have shape (18, 3) (x, y, visible), got {keypoints.shape}")
    scale = max(height, width) / 512.0
    stick = max(1.0, 4.0 * scale)
    radius = max(1.0, 4.0 * scale)
    canvas = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(canvas)
    visible = keypoints[:, 2] > 0
    for k, (a, b) in enumerate(LIMBS):
        if not (visible[a] and visible[b]):
            continue
        (xa, ya), (xb, yb) = keypoints[a, :2], keypoints[b, :2]
        length = np.hypot(xb - xa, yb - ya)
        angle = np.arctan2(yb - ya, xb - xa)
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        ex, ey = np.cos(t) * length / 2, np.sin(t) * stick
        px = (xa + xb) / 2 + ex * np.cos(angle) - ey * np.sin(angle)
        py = (ya + yb) / 2 + ex * np.sin(angle) + ey * np.cos(angle)
        draw.polygon(list(zip(px.tolist(), py.tolist())), fill=tuple(int(c * 0.6) for c in COLORS[k]))
    for k in np.flatnonzero(visible):
        x, y = keypoints[k, :2]
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=COLORS[k])
    return np.asarray(canvas, dtype=np.uint8)
