"""The character world's images: standard renders, keypoints, masks, captions, determinism."""

import numpy as np
import pytest

from serialgen.pose import COCO18
from serialgen.world.backgrounds import SCENES, render_background
from serialgen.world.character import ACCESSORIES, EXPRESSIONS, HAIR_STYLES, PATTERNS, Character
from serialgen.world.generator import (
    BACKGROUND_PHRASE,
    FRAMINGS,
    STANDARD_FACE_CENTER,
    STANDARD_FACE_HEIGHT,
    VIEWS,
    CharacterWorld,
    split_of,
)


def test_attribute_variety():
    chars = [Character.sample(0, c) for c in range(200)]
    garments = {g.kind for c in chars for g in (c.top, c.bottom, c.dress, c.shoes) if g is not None}
    assert len(garments) >= 6 and {"t-shirt", "jacket", "dress", "skirt", "trousers", "shorts"} <= garments
    assert {g.pattern for c in chars for g in (c.top, c.dress) if g is not None} == set(PATTERNS)
    assert {c.hair_style for c in chars} == set(HAIR_STYLES) and len(HAIR_STYLES) >= 5
    assert len({c.hair_color for c in chars}) >= 5
    assert {a for c in chars for a in c.accessories} == set(ACCESSORIES)
    assert len(EXPRESSIONS) >= 6 and len(SCENES) >= 8 and set(VIEWS) == {"front", "three-quarter", "side", "back"}


def test_characters_are_deterministic_and_distinct():
    assert Character.sample(7, 3) == Character.sample(7, 3)
    assert Character.sample(7, 3) != Character.sample(7, 4)
    assert Character.sample(7, 3) != Character.sample(8, 3)


def test_split_is_80_20_by_id():
    ids = range(1000)
    test = {c for c in ids if split_of(c) == "test"}
    train = {c for c in ids if split_of(c) == "train"}
    assert not (test & train) and len(test) == 200 and len(train) == 800


@pytest.mark.parametrize("cid", range(8))
def test_standard_image(world, cid):
    s = world.standard(cid)
    img = s["image"]
    h, w = img.shape[:2]
    # white background: the whole border, and everything outside the mask
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    assert np.all(border == 255)
    assert np.all(img[s["foreground"][..., 3] == 0] == 255)
    assert 0.03 < (s["mask"] > 0).mean() < 0.4
    # the face box sits at the fixed place and size, within a pixel
    x0, y0, x1, y1 = s["face_box"]
    assert abs((x0 + x1) / 2 - STANDARD_FACE_CENTER[0] * w) < 1.0
    assert abs((y0 + y1) / 2 - STANDARD_FACE_CENTER[1] * h) < 1.0
    assert abs((y1 - y0) - STANDARD_FACE_HEIGHT * h) < 1.0
    assert s["face_visible"]
    # front view: all keypoints visible (ears may hide under bob or long hair), left on the image right
    kp = s["keypoints"]
    ears = [COCO18.index("l_ear"), COCO18.index("r_ear")]
    assert np.delete(kp[:, 2], ears).all()
    if world.character(cid).hair_style not in ("bob", "long"):
        assert kp[ears, 2].all()
    assert kp[COCO18.index("l_shoulder"), 0] > kp[COCO18.index("r_shoulder"), 0]
    assert kp[COCO18.index("l_wrist"), 0] > kp[COCO18.index("l_elbow"), 0] > kp[COCO18.index("l_shoulder"), 0]


def test_standard_pose_is_the_same_for_every_character(world):
    """Limb directions in the standard image agree across characters (only proportions differ)."""
    limbs = [("l_shoulder", "l_elbow"), ("r_elbow", "r_wrist"), ("l_hip", "l_knee"), ("r_knee", "r_ankle"),
             ("neck", "nose")]
    angles = []
    for cid in range(8):
        kp = world.standard(cid)["keypoints"]
        angles.append([np.degrees(np.arctan2(*(kp[COCO18.index(b), :2] - kp[COCO18.index(a), :2])[::-1]))
                       for a, b in limbs])
    angles = np.array(angles)
    assert np.ptp(angles, axis=0).max() < 3.0, angles


def test_samples_keypoints_masks_and_captions(small_world):
    w, h = small_world.width, small_world.height
    for cid in range(3):
        for p in range(8):
            s = small_world.sample(cid, p)
            m = s["meta"]
            kp = s["keypoints"]
            assert kp.shape == (18, 3) and s["pose_map"].shape == (h, w, 3)
            vis = kp[:, 2] > 0
            x, y = kp[vis, 0].astype(int), kp[vis, 1].astype(int)
            assert np.all((x >= 0) & (x < w) & (y >= 0) & (y < h))
            assert np.all(s["mask"][y, x] == 255)  # visible keypoints lie on the foreground
            if m["framing"] == "full body":
                assert np.all((kp[:, 0] >= 0) & (kp[:, 0] < w) & (kp[:, 1] >= 0) & (kp[:, 1] < h))
            if m["view"] == "back":
                assert not m["face_visible"]
                assert not kp[COCO18.index("nose"), 2]
            if m["view"] == "front" and m["framing"] == "full body":
                assert m["face_visible"]
            # the mask is the foreground alpha, and the image shows the foreground there
            assert np.array_equal(s["mask"] > 0, s["foreground"][..., 3] >= 128)
            solid = s["foreground"][..., 3] == 255
            assert np.abs(s["image"][solid].astype(int) - s["foreground"][..., :3][solid]).max() <= 1
            assert 0.02 < solid.mean() < 0.95
            cap = m["caption"]
            for part in (m["view"] + " view", BACKGROUND_PHRASE[m["background"]], m["framing"] + " shot",
                         m["attributes"]["hair_color"] if m["attributes"]["hair_style"] != "buzz cut" else "buzz cut"):
                assert part in cap
            assert s["standard_image"].shape == (h, w, 3)


def test_samples_are_deterministic_across_worlds(small_world):
    other = CharacterWorld(small_world.width, small_world.height, small_world.seed)
    a = small_world.sample(2, 5)
    other.sample(1, 0)  # a different character loaded before must not matter
    b = other.sample(2, 5)
    for key in ("image", "foreground", "mask", "pose_map", "keypoints", "standard_image"):
        assert np.array_equal(a[key], b[key]), key
    assert a["meta"] == b["meta"]


def test_framing_about_a_third_cropped(small_world):
    framings = [small_world.sample_view(c, p)[0].framing for c in range(30) for p in range(20)]
    cropped = np.mean([f != "full body" for f in framings])
    assert 0.25 < cropped < 0.42
    assert set(framings) == set(FRAMINGS)
    views = {small_world.sample_view(c, p)[0].view for c in range(10) for p in range(10)}
    assert views == set(VIEWS)


def test_cropped_frames_cut_the_body(small_world):
    """Knee-up frames leave the ankles out of the image; head-and-shoulders frames the hips."""
    seen = set()
    for c in range(6):
        for p in range(40):
            v, _ = small_world.sample_view(c, p)
            if v.framing in ("knee-up", "head and shoulders") and v.view == "front" and v.framing not in seen:
                s = small_world.sample(c, p)
                if s["meta"]["action"] in ("bow", "sit", "crouch", "kick", "jump"):
                    continue
                kp = s["keypoints"]
                gone = ("l_ankle", "r_ankle") if v.framing == "knee-up" else ("l_hip", "r_hip")
                for name in gone:
                    assert kp[COCO18.index(name), 1] > small_world.height * 0.95 or not kp[COCO18.index(name), 2]
                assert kp[COCO18.index("nose"), 2]
                seen.add(v.framing)
    assert seen == {"knee-up", "head and shoulders"}


def test_backgrounds():
    images = {}
    for scene in SCENES:
        a = render_background(scene, 64, 96, np.random.default_rng(0), 0.6)
        b = render_background(scene, 64, 96, np.random.default_rng(0), 0.6)
        assert a.shape == (96, 64, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
        images[scene] = a.astype(float)
        for size in ((64, 96), (256, 384)):  # any horizon, any size
            for horizon in (0.0, 0.05, 0.5, 0.95, 1.0):
                assert render_background(scene, *size, np.random.default_rng(1), horizon).shape == (size[1], size[0], 3)
    means = np.array([im.mean((0, 1)) for im in images.values()])
    assert len(np.unique(means.round(0), axis=0)) == len(SCENES)  # no two scenes look alike on average
    with pytest.raises(ValueError, match="Unknown scene"):
        render_background("moon", 64, 96, np.random.default_rng(0))


def test_world_rejects_non_2_3_sizes():
    with pytest.raises(ValueError, match="2:3"):
        CharacterWorld(256, 256)
