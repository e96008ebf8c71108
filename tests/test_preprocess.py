"""Real-image preprocessing: the four real images in shared/images, image modes, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serialgen.preprocess import InputError, PersonDetector, load_image, prepare_reference

IMAGES = Path(__file__).resolve().parent / "assets" / "images"  # real photos, sources in its SOURCES.md
SIZE = (128, 192)


@pytest.fixture(scope="module")
def detector():
    d = PersonDetector()
    yield d
    d.close()


@pytest.mark.parametrize("name,full_body", [("fullbody-photo-1.png", True), ("fullbody-photo-2.png", True),
                                            ("fullbody-anime-1.png", True), ("halfbody-photo-1.png", False)])
def test_real_images_become_2x3_canvases_with_person_mask_pose_and_face(detector, name, full_body):
    ref = prepare_reference(IMAGES / name, SIZE, detector=detector)
    w, h = SIZE
    assert ref.image.shape == (h, w, 3) and ref.image.dtype == np.uint8
    assert ref.pose_map.shape == (h, w, 3) and ref.pose_map.max() > 0
    coverage = ref.mask.mean()
    assert 0.1 < coverage < 0.8
    visible = ref.keypoints[ref.keypoints[:, 2] > 0]
    assert len(visible) >= (16 if full_body else 5)
    inside = ref.mask[visible[:, 1].astype(int).clip(0, h - 1), visible[:, 0].astype(int).clip(0, w - 1)] > 0.5
    assert inside.mean() >= 0.8  # joints lie on the person (wrists may sit on the outline)
    x0, y0, x1, y1 = ref.face_box
    nose = ref.keypoints[0]
    assert nose[2] > 0 and x0 <= nose[0] <= x1 and y0 <= nose[1] <= y1
    if full_body:  # centred, whole body inside with a margin: the feet are above the bottom edge
        ys, xs = np.nonzero(ref.mask > 0.5)
        assert abs(xs.mean() - w / 2) < 0.12 * w and ys.max() < h - 2 and ys.min() > 2
    else:  # cut by the photo's bottom edge, so cut at the canvas's bottom edge too
        assert ref.mask[-1].mean() > 0.5


def test_several_people_use_the_largest_and_say_so(detector, tmp_path):
    big = load_image(IMAGES / "fullbody-photo-2.png")
    small = big.resize((big.width * 4 // 5, big.height * 4 // 5))  # the face detector misses faces much smaller
    both = Image.new("RGB", (big.width + small.width + 40, big.height), (255, 255, 255))
    both.paste(small, (0, big.height - small.height))
    both.paste(big, (small.width + 40, 0))
    both.save(tmp_path / "two.png")
    ref = prepare_reference(tmp_path / "two.png", SIZE, detector=detector)
    alone = prepare_reference(big, SIZE, detector=detector)
    assert any("2 people" in n and "largest" in n for n in ref.notes)
    face = lambda r: r.face_box[3] - r.face_box[1]
    assert abs(face(ref) - face(alone)) < 0.15 * face(alone)


def test_no_person_says_so_and_offers_no_pose(detector, tmp_path):
    Image.new("RGB", (300, 450), (200, 210, 220)).save(tmp_path / "empty.png")
    with pytest.raises(InputError, match="No person found.*--no-pose"):
        prepare_reference(tmp_path / "empty.png", SIZE, detector=detector)
    ref = prepare_reference(tmp_path / "empty.png", SIZE, use_pose=False)
    assert ref.image.shape == (192, 128, 3) and ref.mask is None and ref.pose_map is None
    assert np.abs(ref.image.astype(int) - (200, 210, 220)).max() <= 2  # 2:3 already: no padding


def test_bad_files_fail_with_one_line_that_says_what_to_do(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(InputError, match="not an image Pillow can read"):
        load_image(tmp_path / "notes.png")
    Image.new("RGB", (300, 300), (10, 200, 30)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        load_image(tmp_path / "cut.png")
    Image.new("RGB", (40, 60)).save(tmp_path / "tiny.png")
    with pytest.raises(InputError, match="too small to hold a person"):
        load_image(tmp_path / "tiny.png")
    with pytest.raises(InputError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    for err in (InputError("x"),):
        assert "\n" not in str(err)
    with pytest.raises(ValueError, match="2:3"):
        prepare_reference(tmp_path / "ok.png", (128, 128), use_pose=False)


def test_image_modes_become_upright_8_bit_rgb(tmp_path):
    rgba = Image.new("RGBA", (100, 150), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 50, 150))
    assert load_image(rgba).getpixel((75, 10)) == (255, 255, 255)  # transparent -> white
    assert load_image(rgba).getpixel((10, 10)) == (0, 0, 255)
    assert load_image(Image.new("L", (100, 150), 77)).getpixel((5, 5)) == (77, 77, 77)
    cmyk = load_image(Image.new("CMYK", (100, 150), (0, 255, 255, 0)))
    assert cmyk.mode == "RGB" and cmyk.getpixel((5, 5))[0] > 200 and cmyk.getpixel((5, 5))[1] < 50
    deep = Image.fromarray(np.full((150, 100), 65535 // 2, np.uint16))
    assert abs(load_image(deep).getpixel((5, 5))[0] - 128) <= 1
    tall = Image.new("RGB", (100, 150), (0, 0, 0))
    tall.paste((255, 255, 255), (0, 0, 100, 20))  # white band on top
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90 degree clockwise turn
    tall.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    upright = load_image(tmp_path / "rot.jpg")
    assert upright.size == (150, 100)
    assert np.asarray(upright)[:, -10:].mean() > 200  # the band is on the right once upright
