import numpy as np
import pytest

from serialgen.pose import COCO18, COLORS, LIMBS, draw_pose_map


def test_pose_map_draws_visible_points_in_openpose_colours():
    kp = np.zeros((18, 3))
    kp[:, 0] = np.linspace(20, 230, 18)
    kp[:, 1] = 100
    kp[:, 2] = 1
    kp[COCO18.index("l_ankle"), 2] = 0
    img = draw_pose_map(kp, 256, 384)
    assert img.shape == (384, 256, 3) and img.dtype == np.uint8
    for k in range(18):
        x, y = int(kp[k, 0]), int(kp[k, 1])
        if kp[k, 2]:
            assert tuple(img[y, x]) == COLORS[k], COCO18[k]
    ankle = COCO18.index("l_ankle")
    assert tuple(img[100, int(kp[ankle, 0])]) != COLORS[ankle]
    assert img[300].max() == 0  # nothing drawn far from the points


def test_limb_between_two_points_is_drawn_at_60_percent():
    kp = np.zeros((18, 3))
    a, b = LIMBS[0]  # neck -> right shoulder
    kp[a] = (50, 50, 1)
    kp[b] = (150, 50, 1)
    img = draw_pose_map(kp, 200, 300)
    assert tuple(img[50, 100]) == tuple(int(c * 0.6) for c in COLORS[0])
    assert img[150].max() == 0


def test_pose_map_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(18, 3\)"):
        draw_pose_map(np.zeros((17, 2)), 64, 96)
