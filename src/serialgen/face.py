"""Face identity embeddings for the face-similarity metric (paper §4.2: cosine similarity of
identity embeddings of the reference's face and a generated face).

- `DlibFaceEmbedder` (default, offline): dlib's HOG face detector, 5-point landmarks and its
  ResNet 128-d face descriptor, with the model files of the `face_recognition_models` wheel.
- `ArcFaceEmbedder`: an ArcFace ONNX model the user gives (e.g. InsightFace's w600k_r50.onnx,
  the paper's metric), on dlib-aligned 112x112 face chips, run by onnxruntime.

Both return None for an image where no face is found; callers report how often that happens.
Faces under about 40 px are rarely found, so an image whose longer side is under 512 px is
upsampled to 512 before detection.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image


def _models_dir() -> Path:
    # The wheel's __init__ imports pkg_resources, which recent setuptools no longer ships, so the
    # model files are located without importing it.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("Face similarity needs the face_recognition_models wheel: pip install face-recognition-models")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class _DlibFaces:
    """Detection and alignment shared by both embedders."""

    def __init__(self, upsample_to: int = 512):
        try:
            import dlib
        except ImportError:
            raise ImportError("Face similarity needs dlib: pip install dlib-bin") from None
        self.dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.shapes = dlib.shape_predictor(str(_models_dir() / "shape_predictor_5_face_landmarks.dat"))
        self.upsample_to = upsample_to

    def largest_face(self, rgb: np.ndarray):
        """-> (image it was found in, full_object_detection) or None."""
        image = np.ascontiguousarray(rgb, dtype=np.uint8)
        if max(image.shape[:2]) < self.upsample_to:
            f = self.upsample_to / max(image.shape[:2])
            size = (round(image.shape[1] * f), round(image.shape[0] * f))
            image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))
        boxes = self.detector(image, 1)
        if len(boxes) == 0:
            return None
        box = max(boxes, key=lambda b: b.width() * b.height())
        return image, self.shapes(image, box)


class DlibFaceEmbedder:
    """128-d dlib ResNet face descriptors (unit length)."""

    dim = 128

    def __init__(self):
        self.faces = _DlibFaces()
        self.net = self.faces.dlib.face_recognition_model_v1(str(_models_dir() / "dlib_face_recognition_resnet_model_v1.dat"))

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        found = self.faces.largest_face(rgb)
        if found is None:
            return None
        image, shape = found
        v = np.asarray(self.net.compute_face_descriptor(image, shape), np.float32)
        return v / max(np.linalg.norm(v), 1e-8)


class ArcFaceEmbedder:
    """An ArcFace ONNX model on 112x112 face chips aligned by dlib's 5 landmarks (unit length)."""

    def __init__(self, onnx_path: str | Path):
        path = Path(onnx_path)
        if not path.is_file():
            raise FileNotFoundError(f"No ArcFace model at {path}: give the path of an .onnx file")
        try:
            import onnxruntime
        except ImportError:
            raise ImportError("ArcFace face similarity needs onnxruntime: pip install onnxruntime") from None
        self.faces = _DlibFaces()
        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        found = self.faces.largest_face(rgb)
        if found is None:
            return None
        image, shape = found
        chip = np.asarray(self.faces.dlib.get_face_chip(image, shape, size=112, padding=0.0), np.float32)
        x = ((chip - 127.5) / 127.5).transpose(2, 0, 1)[None]
        v = self.session.run(None, {self.input: x})[0].reshape(-1).astype(np.float32)
        return v / max(np.linalg.norm(v), 1e-8)


def face_embedder(arcface: str | Path | None = None):
    """ArcFace when a model path is given, dlib otherwise."""
    return ArcFaceEmbedder(arcface) if arcface else DlibFaceEmbedder()
