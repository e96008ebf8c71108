"""Real-image preprocessing for Stage I (SerialGen §3.3; docs/ARCHITECTURE.md).

Any image Pillow opens becomes what the standardizer needs: an RGB canvas of the model's 2:3
size with the person centred (the paper pads to 512x768), the person's foreground mask (for
FBDM), COCO-18 keypoints drawn by the world's own pose-map drawer (for RPIM), and a face box.
Person keypoints and mask come from MediaPipe's legacy BlazePose (full model, with
segmentation) and faces from its face detector; both models ship inside the mediapipe 0.10.x
wheel, so nothing is downloaded.

Every bad input raises `InputError` with one line that says what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .pose import draw_pose_map
from .quiet import native_stderr

MIN_SIDE = 64  # px on the shorter side: below this no detector finds a body
MAX_PIXELS = 64 * 10**6  # decoded size; larger files (decompression bombs among them) are refused
# BlazePose's 33 landmarks -> COCO-18 (neck = mean of the shoulders)
BLAZEPOSE_TO_COCO18 = {
    "nose": 0, "r_shoulder": 12, "r_elbow": 14, "r_wrist": 16, "l_shoulder": 11, "l_elbow": 13, "l_wrist": 15,
    "r_hip": 24, "r_knee": 26, "r_ankle": 28, "l_hip": 23, "l_knee": 25, "l_ankle": 27,
    "r_eye": 5, "l_eye": 2, "r_ear": 8, "l_ear": 7,
}
VISIBILITY = 0.5  # BlazePose landmark visibility above which a keypoint counts as seen
MARGIN = 0.06  # of the person's box height, kept free around the person on the canvas


class InputError(ValueError):
    """A reference image the pipeline cannot use; the message says what to do."""


@dataclass
class Reference:
    """A reference image prepared for Stage I, on a (height, width) 2:3 canvas.

    image (H, W, 3) uint8 RGB; mask (H, W) float32 in [0, 1], 1 on the person, None if unknown;
    keypoints (18, 3) (x, y, visible) in canvas pixels or None; pose_map (H, W, 3) uint8 or None;
    face_box (x0, y0, x1, y1) in canvas pixels or None; notes: what preprocessing decided."""

    image: np.ndarray
    mask: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    pose_map: np.ndarray | None = None
    face_box: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_world(cls, image: np.ndarray, foreground: np.ndarray, keypoints, face_box=None) -> "Reference":
        """A character-world sample (its RGB, RGBA foreground and keypoints) needs no detection."""
        h, w = image.shape[:2]
        kp = np.asarray(keypoints, np.float32)
        return cls(image, foreground[..., 3].astype(np.float32) / 255.0, kp, draw_pose_map(kp, w, h),
                   None if face_box is None else np.asarray(face_box, np.float32))


def load_image(source) -> Image.Image:
    """A path or PIL image -> upright 8-bit RGB, transparency composited on white."""
    name = str(source) if not isinstance(source, Image.Image) else "the image"
    if isinstance(source, Image.Image):
        image = source
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"{path} does not exist or is not a file: give the path of an image")
        try:
            image = Image.open(path)
            if image.width * image.height > MAX_PIXELS:
                raise InputError(f"{path} is {image.width}x{image.height} pixels: give one under "
                                 f"{MAX_PIXELS // 10**6} megapixels")
            image.load()
        except Image.DecompressionBombError as e:
            raise InputError(f"{path} is too large to decode safely ({e}): give one under "
                             f"{MAX_PIXELS // 10**6} megapixels") from None
        except UnidentifiedImageError:
            raise InputError(f"{path} is not an image Pillow can read: give a PNG, JPEG, WebP or similar") from None
        except (OSError, SyntaxError) as e:
            raise InputError(f"{path} is truncated or corrupt ({e}): re-export or re-download it") from None
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or a.max() > 255 else 255.0
        image = Image.fromarray(np.clip(a / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode in ("RGB", "L") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    image = image.convert("RGB")
    if min(image.size) < MIN_SIDE:
        raise InputError(f"{name} is {image.size[0]}x{image.size[1]}, too small to hold a person: give one at least "
                         f"{MIN_SIDE} px on its shorter side")
    return image


@dataclass
class Detection:
    keypoints: np.ndarray  # (18, 3) in image pixels
    mask: np.ndarray  # (H, W) float32
    face_box: np.ndarray | None  # (4,) in image pixels


WARM_UP = np.zeros((64, 64, 3), np.uint8)  # the image that opens a MediaPipe graph (PersonDetector)


class PersonDetector:
    """MediaPipe BlazePose (full, with segmentation) + face detection (full range), reused across images."""

    def __init__(self):
        try:
            import mediapipe as mp
        except ImportError as e:
            raise ImportError(f"Real-image preprocessing needs mediapipe 0.10.14 ({e}); run `make setup`") from None
        # TensorFlow Lite and absl lines on every graph start. The graphs' calculators open in their
        # own threads after the constructor returns, and they log then: one image through each graph
        # inside the block waits for them to open, so their lines are held back too.
        with native_stderr():
            self._pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=True,
                                                min_detection_confidence=0.5)
            self._faces = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)
            for graph in (self._pose, self._faces):
                graph.process(WARM_UP)
        self._segmenter = None

    def close(self):
        self._pose.close()
        self._faces.close()
        if self._segmenter is not None:
            self._segmenter.close()

    def segment(self, rgb: np.ndarray, min_width: int = 256) -> np.ndarray:
        """Person mask (H, W) in {0, 1} from MediaPipe's selfie segmentation, which needs no body
        detection (it holds on crops and drawn characters where BlazePose finds no body). Small
        images are upsampled to `min_width` first."""
        if self._segmenter is None:
            import mediapipe as mp

            with native_stderr():  # opened by one image inside the block (see __init__)
                self._segmenter = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
                self._segmenter.process(WARM_UP)
        h, w = rgb.shape[:2]
        scaled = rgb
        if w < min_width:
            size = (min_width, round(h * min_width / w))
            scaled = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BICUBIC))
        with native_stderr():
            mask = self._segmenter.process(np.ascontiguousarray(scaled)).segmentation_mask
        if mask is None:
            return np.zeros((h, w), np.float32)
        mask = np.asarray(Image.fromarray(mask.astype(np.float32), "F").resize((w, h), Image.Resampling.BILINEAR))
        return (mask > 0.5).astype(np.float32)

    def faces(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Face boxes (x0, y0, x1, y1) in pixels, largest first."""
        h, w = rgb.shape[:2]
        with native_stderr():
            found = self._faces.process(rgb).detections or []
        boxes = []
        for d in found:
            b = d.location_data.relative_bounding_box
            boxes.append(np.array([b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h], np.float32))
        return sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))

    def person(self, rgb: np.ndarray) -> Detection | None:
        h, w = rgb.shape[:2]
        with native_stderr():
            result = self._pose.process(rgb)
        if result.pose_landmarks is None:
            return None
        marks = result.pose_landmarks.landmark
        kp = np.zeros((18, 3), np.float32)
        names = ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist", "r_hip",
                 "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear")
        for k, name in enumerate(names):
            ids = (11, 12) if name == "neck" else (BLAZEPOSE_TO_COCO18[name],)
            x = np.mean([marks[i].x for i in ids]) * w
            y = np.mean([marks[i].y for i in ids]) * h
            seen = min(marks[i].visibility for i in ids) > VISIBILITY and 0 <= x < w and 0 <= y < h
            kp[k] = (x, y, float(seen))
        mask = result.segmentation_mask
        mask = np.zeros((h, w), np.float32) if mask is None else (mask > 0.5).astype(np.float32)
        faces = self.faces(rgb)
        return Detection(kp, mask, faces[0] if faces else None)


def _two_by_three_box(box: tuple[float, float, float, float], aspect: float,
                      margin: float = MARGIN, flush_bottom: bool = False) -> tuple[float, float, float, float]:
    """Smallest box of width/height = aspect containing `box` with a margin, centred on it;
    flush_bottom: the box's bottom is box's bottom and its width follows from its height."""
    x0, y0, x1, y1 = box
    if flush_bottom:  # a person cut by the photo's bottom edge stays cut there, as the world's crops are
        h = (y1 - y0) * (1 + margin)
        cx = (x0 + x1) / 2
        return cx - h * aspect / 2, y1 - h, cx + h * aspect / 2, y1
    pad = margin * max(y1 - y0, (x1 - x0) / aspect)
    x0, y0, x1, y1 = x0 - pad, y0 - pad, x1 + pad, y1 + pad
    h = max(y1 - y0, (x1 - x0) / aspect)
    w = h * aspect
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def _crop_to_canvas(image: Image.Image, box, size: tuple[int, int], fill) -> Image.Image:
    """Crop `box` (may reach outside the image; outside = fill) and resize to size (W, H)."""
    x0, y0, x1, y1 = box
    w, h = size
    # affine transform maps output pixel (u, v) to input (x0 + u * sx, y0 + v * sy)
    sx, sy = (x1 - x0) / w, (y1 - y0) / h
    resample = Image.Resampling.BICUBIC if image.mode != "F" else Image.Resampling.BILINEAR
    if sx > 1.5:  # shrink in two steps so thin details are averaged, not aliased
        factor = int(sx)
        image = image.resize((max(1, image.width // factor), max(1, image.height // factor)), Image.Resampling.BOX)
        x0, y0, sx, sy = x0 / factor, y0 / factor, sx / factor, sy / factor
    return image.transform((w, h), Image.Transform.AFFINE, (sx, 0, x0, 0, sy, y0), resample=resample, fillcolor=fill)


def prepare_reference(source, size: tuple[int, int], *, use_pose: bool = True,
                      detector: PersonDetector | None = None) -> Reference:
    """A reference image (path or PIL) -> `Reference` on a canvas of size (W, H), 2:3.

    use_pose=False skips detection: the whole image is padded to the canvas, with no mask,
    keypoints or face box (the standardizer then runs without FBDM's mask and RPIM)."""
    w, h = size
    if w * 3 != h * 2:
        raise ValueError(f"The canvas must be 2:3 (width:height), got {w}x{h}")
    image = load_image(source)
    name = str(source) if not isinstance(source, Image.Image) else "the image"
    rgb = np.asarray(image)
    notes: list[str] = []
    if not use_pose:
        box = _two_by_three_box((0, 0, image.width, image.height), w / h, margin=0.0)
        canvas = _crop_to_canvas(image, box, size, (255, 255, 255))
        return Reference(np.asarray(canvas), notes=["pose detection skipped: no mask, pose or face box"])

    own = detector is None
    detector = detector or PersonDetector()
    try:
        # 1. Several people: keep the largest (by face), detect the body around it
        faces = detector.faces(rgb)
        offset = np.zeros(2, np.float32)
        region = rgb
        if len(faces) > 1:
            notes.append(f"{len(faces)} people found in {name}; using the largest")
            fx0, fy0, fx1, fy1 = faces[0]
            fw = fx1 - fx0
            cx0, cx1 = int(max(0, fx0 - 2.5 * fw)), int(min(rgb.shape[1], fx1 + 2.5 * fw))
            region = np.ascontiguousarray(rgb[:, cx0:cx1])
            offset[0] = cx0
        # 2. Body keypoints, mask, face
        found = detector.person(region)
        if found is None:
            raise InputError(f"No person found in {name}: give an image with one visible person, or pass --no-pose to "
                             "standardize the whole image without pose and mask guidance")
    finally:
        if own:
            detector.close()
    mask = np.zeros(rgb.shape[:2], np.float32)
    mask[:, int(offset[0]):int(offset[0]) + region.shape[1]] = found.mask
    keypoints = found.keypoints.copy()
    keypoints[:, :2] += offset
    face = found.face_box + np.concatenate([offset, offset]) if found.face_box is not None else None
    ys, xs = np.nonzero(mask > 0.5)
    seen = keypoints[keypoints[:, 2] > 0, :2]
    if len(xs) < 0.002 * mask.size and len(seen) < 3:
        raise InputError(f"No person found in {name} (the detector's body is empty): pass --no-pose to proceed without "
                         "pose and mask guidance")
    points = np.concatenate([np.stack([xs, ys], 1), seen]) if len(xs) else seen
    person_box = (*points.min(0), *points.max(0))
    if (person_box[3] - person_box[1]) < 0.1 * rgb.shape[0] and (person_box[2] - person_box[0]) < 0.1 * rgb.shape[1]:
        raise InputError(f"The person in {name} covers under a tenth of the image: crop closer to them and try again")

    # 3. The 2:3 canvas around the person, white outside the photo
    cut = person_box[3] >= rgb.shape[0] - 2
    box = _two_by_three_box(person_box, w / h, flush_bottom=cut)
    canvas = np.asarray(_crop_to_canvas(image, box, size, (255, 255, 255)))
    mask_canvas = np.asarray(_crop_to_canvas(Image.fromarray(mask, "F"), box, size, 0.0), np.float32).clip(0, 1)
    scale = w / (box[2] - box[0])
    kp = keypoints.copy()
    kp[:, 0] = (kp[:, 0] - box[0]) * scale
    kp[:, 1] = (kp[:, 1] - box[1]) * scale
    kp[:, 2] *= (kp[:, 0] >= 0) & (kp[:, 0] < w) & (kp[:, 1] >= 0) & (kp[:, 1] < h)
    face_box = None
    if face is not None:
        face_box = ((face - np.array([box[0], box[1]] * 2, np.float32)) * scale).astype(np.float32)
    else:
        notes.append("no face found")
    return Reference(canvas, mask_canvas, kp.astype(np.float32), draw_pose_map(kp, w, h), face_box, notes)
