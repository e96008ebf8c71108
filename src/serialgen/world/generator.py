"""Samples of the character world: a non-standard render paired with the standard render.

docs/ARCHITECTURE.md, "The world" and SerialGen section 3.3: the non-standard image varies pose, view,
pitch, distance, framing (a third are cropped to knee-up, waist-up or head-and-shoulders),
background, expression and light; the standard image is the same character in the A-pose,
front view, neutral face, white background, with the face box at one fixed place and size
on the 2:3 canvas. Every random choice comes from a generator seeded by
(seed, character id, pose index), so a sample depends on nothing but its own identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..pose import COCO18, draw_pose_map
from .backgrounds import SCENES, render_background
from .character import EXPRESSIONS, Character
from .geometry import build_mesh, face_points, landmarks
from .poses import ACTIONS, a_pose_angles, sample_action_pose
from .render import Camera, Light, Renderer
from .skeleton import JOINT_INDEX, forward_kinematics
from .textures import build_atlas

# The standard image: face box centre and height as fractions of the canvas (W, H).
STANDARD_FACE_CENTER = (0.5, 0.095)
STANDARD_FACE_HEIGHT = 0.075
VIEWS = ("front", "three-quarter", "side", "back")
VIEW_AZIMUTH = {"front": 0.0, "three-quarter": 45.0, "side": 90.0, "back": 180.0}
FRAMINGS = ("full body", "knee-up", "waist-up", "head and shoulders")
# Where a cropped frame ends: joints whose mean height is the bottom edge.
FRAMING_CUT = {"knee-up": ("l_knee", "r_knee"), "waist-up": ("l_hip", "r_hip"), "head and shoulders": ("chest",)}
BACKGROUND_PHRASE = {
    "beach": "on a beach", "forest": "in a forest", "city street": "on a city street", "room": "in a room",
    "snow": "in the snow", "night sky": "under a night sky", "desert": "in a desert", "park": "in a park",
    "mountains": "in the mountains", "underwater": "underwater",
}
EXPRESSION_PHRASE = {
    "neutral": "with a neutral expression", "smiling": "smiling", "surprised": "looking surprised",
    "angry": "looking angry", "sad": "looking sad", "eyes closed": "with eyes closed",
}
_FACE = ("nose", "l_eye", "r_eye", "l_ear", "r_ear")
# Depth tolerance of each keypoint's visibility test, as a fraction of body height (face: see _render).
_TOLERANCE = {name: 0.12 for name in COCO18} | {"neck": 0.25, "l_shoulder": 0.25, "r_shoulder": 0.25,
                                                 "l_hip": 0.3, "r_hip": 0.3}
STANDARD_LIGHT = Light(np.array([-0.3, -0.45, -1.0]), np.full(3, 0.72), np.full(3, 0.48), np.full(3, 0.36))


def scene_phrase(subject: str, action: str, view: str, expression: str, background: str,
                 framing: str = "full body") -> str:
    """The world's caption grammar: "<subject>, <action>, <view> view, <expression>, <background>,
    <framing> shot". The subject is the character's description, or "a character" in a prompt."""
    phrase = next(a.phrase for a in ACTIONS if a.name == action)
    return (f"{subject}, {phrase}, {view} view, {EXPRESSION_PHRASE[expression]}, {BACKGROUND_PHRASE[background]}, "
            f"{framing} shot")


def split_of(character_id: int) -> str:
    """The shard folder of a character, 80/20 by id: every fifth character is held out, under
    test/ (which `data.splits` divides into the validation and test splits)."""
    return "test" if character_id % 5 == 4 else "train"


def standard_caption(c: Character) -> str:
    return f"{c.describe()}, standing in an a-pose, front view, with a neutral expression, on a white background"


@dataclass(frozen=True)
class View:
    """Non-appearance attributes of one non-standard sample."""

    action: str
    expression: str
    view: str
    azimuth: float
    pitch: float
    framing: str
    background: str
    fov: float


def _ground(c: Character, joints: np.ndarray, lift: float) -> np.ndarray:
    """Move the posed skeleton so its lowest foot point touches y = lift * height."""
    pts = _landmark_points(c, joints, ("l_toe", "r_toe", "l_heel", "r_heel"))
    joints = joints.copy()
    joints[:, 1, 3] += lift * c.body.height - pts[:, 1].min()
    return joints


def _landmark_points(c: Character, joints: np.ndarray, names) -> np.ndarray:
    marks = landmarks(c)
    out = []
    for name in names:
        joint, p = marks[name]
        T = joints[JOINT_INDEX[joint]]
        out.append(T[:3, :3] @ p + T[:3, 3])
    return np.array(out)


def keypoints_3d(c: Character, joints: np.ndarray) -> np.ndarray:
    """World positions (18, 3) of the COCO-18 keypoints of a posed character."""
    pos = {name: joints[i][:3, 3] for name, i in JOINT_INDEX.items()}
    face = dict(zip(("nose", "l_eye", "r_eye", "l_ear", "r_ear"),
                    _landmark_points(c, joints, ("nose", "l_eye", "r_eye", "l_ear", "r_ear"))))
    pos["neck"] = (pos["l_shoulder"] + pos["r_shoulder"]) / 2  # OpenPose's neck: between the shoulders
    pos.update(face)
    return np.array([pos[name] for name in COCO18])


def _visibility(px: np.ndarray, dist: np.ndarray, tolerance: np.ndarray, depth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A point is visible when it lands inside the image on the foreground and nothing lies
    in front of it by more than its tolerance (joints sit inside limbs, so theirs is larger)."""
    h, w = depth.shape
    x, y = np.floor(px[:, 0]).astype(int), np.floor(px[:, 1]).astype(int)
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    xc, yc = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
    front = depth[yc, xc]
    return inside & (mask[yc, xc] > 127) & (front >= dist - tolerance)


def _fit(camera: Camera, points: np.ndarray, box: tuple[float, float, float, float]) -> Camera:
    """Zoom and shift `camera` (an exact 2D similarity) so the bounding box of the projected
    `points` fits inside `box` = (x0, y0, x1, y1), centred on it."""
    px, _ = camera.project(points)
    lo, hi = px.min(0), px.max(0)
    scale = min((box[2] - box[0]) / max(hi[0] - lo[0], 1e-6), (box[3] - box[1]) / max(hi[1] - lo[1], 1e-6))
    centre = (lo + hi) / 2
    target = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    c = np.array([camera.cx, camera.cy])
    return camera.zoomed(scale, tuple(target - (scale * (centre - c) + c)))


class CharacterWorld:
    """Renders samples of the character world at one image size (2:3, W x H).

    Holds a GL context; keep one per process. The most recent character's mesh, atlas and
    standard render are cached, so render a character's poses together.
    """

    def __init__(self, width: int = 256, height: int = 384, seed: int = 0):
        if width * 3 != height * 2:
            raise ValueError(f"Image size must be 2:3 (width x height), got {width}x{height}; e.g. 256x384 or 512x768")
        self.width, self.height, self.seed = width, height, seed
        self.renderer = Renderer(width, height)
        self._current: int | None = None
        self._standard: dict | None = None

    # ----- characters
    def character(self, character_id: int) -> Character:
        return Character.sample(self.seed, character_id)

    def _load(self, character_id: int) -> Character:
        c = self.character(character_id)
        if self._current != character_id:
            vertices, triangles = build_mesh(c)
            self.renderer.load(vertices, triangles, build_atlas(c, self.seed))
            self._current, self._standard = character_id, None
        return c

    # ----- rendering common to both kinds of image
    def _render(self, c: Character, joints: np.ndarray, camera: Camera, light: Light, expression: int) -> dict:
        rgba_premul, depth = self.renderer.render(joints, camera, light, expression)
        alpha = rgba_premul[..., 3:4].astype(np.float32)
        rgb = np.where(alpha > 0, rgba_premul[..., :3] * (255.0 / np.maximum(alpha, 1)), 0)
        foreground = np.concatenate([np.clip(np.round(rgb), 0, 255), alpha], -1).astype(np.uint8)
        mask = np.where(alpha[..., 0] >= 128, 255, 0).astype(np.uint8)
        kp3 = keypoints_3d(c, joints)
        px, dist = camera.project(kp3)
        # Joints sit inside the body and, as a pose detector sees them, show through clothes,
        # hair and the torso's own depth (torso joints: the far shoulder of a side view); a limb
        # hidden behind another body part does not. Face points lie on the surface.
        tol = np.array([_TOLERANCE[name] for name in COCO18]) * c.body.height
        tol[[COCO18.index(n) for n in _FACE]] = 0.25 * c.body.head_radius
        vis = _visibility(px, dist, tol, depth, mask)
        keypoints = np.concatenate([px, vis[:, None]], 1).astype(np.float32)  # (18, 3)
        head = joints[JOINT_INDEX["head"]]
        fp = face_points(c) @ head[:3, :3].T + head[:3, 3]
        fpx, fdist = camera.project(fp)
        face_vis = _visibility(fpx, fdist, np.full(len(fp), 0.2 * c.body.head_radius), depth, mask)
        face_box = np.concatenate([fpx.min(0), fpx.max(0)]).astype(np.float32)
        return {
            "foreground": foreground, "mask": mask, "keypoints": keypoints,
            "pose_map": draw_pose_map(keypoints, self.width, self.height),
            "face_box": face_box, "face_visible": bool(face_vis.mean() >= 0.3),
        }

    @staticmethod
    def composite(foreground: np.ndarray, background: np.ndarray) -> np.ndarray:
        """Straight-alpha RGBA (H, W, 4) over RGB (H, W, 3) -> RGB uint8."""
        a = foreground[..., 3:4].astype(np.float32) / 255.0
        out = foreground[..., :3].astype(np.float32) * a + background.astype(np.float32) * (1.0 - a)
        return np.clip(np.round(out), 0, 255).astype(np.uint8)

    # ----- the standard image
    def standard(self, character_id: int) -> dict:
        """A-pose, front view, neutral face, white background, face box at the fixed place."""
        c = self._load(character_id)
        if self._standard is not None:
            return self._standard
        joints = _ground(c, forward_kinematics(c.body, a_pose_angles()), 0.0)
        h = c.body.height
        camera = Camera.look_at([0, 0.55 * h, 4.0 * h], [0, 0.55 * h, 0], self.width, self.height, 25.0)
        head = joints[JOINT_INDEX["head"]]
        fp = face_points(c) @ head[:3, :3].T + head[:3, 3]
        cx, cy = STANDARD_FACE_CENTER[0] * self.width, STANDARD_FACE_CENTER[1] * self.height
        half = STANDARD_FACE_HEIGHT * self.height / 2
        camera = _fit(camera, fp, (cx - 10 * half, cy - half, cx + 10 * half, cy + half))  # height decides
        out = self._render(c, joints, camera, STANDARD_LIGHT, expression=0)
        out["image"] = self.composite(out["foreground"], np.full((self.height, self.width, 3), 255, np.uint8))
        out["caption"] = standard_caption(c)
        self._standard = out
        return out

    # ----- non-standard samples
    def sample_view(self, character_id: int, pose_index: int) -> tuple[View, np.random.Generator]:
        rng = np.random.default_rng([self.seed, character_id, pose_index, 0x5A3])
        action = ACTIONS[rng.integers(len(ACTIONS))]
        view = str(rng.choice(VIEWS, p=[0.35, 0.3, 0.2, 0.15]))
        azimuth = VIEW_AZIMUTH[view] * (1 if rng.random() < 0.5 else -1) + rng.uniform(-12, 12)
        v = View(
            action=action.name,
            expression=str(rng.choice(EXPRESSIONS)),
            view=view,
            azimuth=float(azimuth),
            pitch=float(rng.uniform(-8, 22)),
            framing=str(rng.choice(FRAMINGS, p=[0.67, 0.11, 0.11, 0.11])),
            background=str(rng.choice(SCENES)),
            fov=float(rng.uniform(25, 40)),
        )
        return v, rng

    def sample(self, character_id: int, pose_index: int) -> dict:
        """One non-standard sample and its character's standard image.

        -> dict of arrays: image (H, W, 3), foreground (H, W, 4) RGBA, mask (H, W), pose_map
        (H, W, 3), keypoints (18, 3) (x, y, visible), face_box (4,) (x0, y0, x1, y1), the
        same under ``standard_*``; and ``meta``: ids, attributes, view and caption.
        """
        c = self._load(character_id)
        standard = self.standard(character_id)
        v, rng = self.sample_view(character_id, pose_index)
        action = next(a for a in ACTIONS if a.name == v.action)
        joints = _ground(c, forward_kinematics(c.body, sample_action_pose(action, rng)), action.lift)
        camera, horizon = self._camera(c, joints, v, rng)
        light = self._light(v, rng)
        out = self._render(c, joints, camera, light, EXPRESSIONS.index(v.expression))
        background = render_background(v.background, self.width, self.height, rng, horizon)
        out["image"] = self.composite(out["foreground"], background)
        for key in ("image", "mask", "pose_map", "keypoints", "face_box"):
            out["standard_" + key] = standard[key]
        out["meta"] = {
            "key": f"c{character_id:07d}_p{pose_index:05d}",
            "character_id": character_id, "pose_index": pose_index, "split": split_of(character_id),
            "caption": self.caption(c, v), "standard_caption": standard["caption"],
            "attributes": c.attributes(), **v.__dict__,
            "face_visible": out.pop("face_visible"), "standard_face_visible": standard["face_visible"],
        }
        return out

    @staticmethod
    def caption(c: Character, v: View) -> str:
        return scene_phrase(c.describe(), v.action, v.view, v.expression, v.background, v.framing)

    def _camera(self, c: Character, joints: np.ndarray, v: View, rng: np.random.Generator) -> tuple[Camera, float]:
        """Orbit camera at the sample's azimuth and pitch, zoomed so the framing's body region
        fills the frame. -> camera, horizon row as a fraction of the height."""
        names = ("head_top", "l_hand", "r_hand", "l_toe", "r_toe", "l_heel", "r_heel")
        pts = np.concatenate([joints[:, :3, 3], _landmark_points(c, joints, names)])
        centre = (pts.min(0) + pts.max(0)) / 2
        az, pitch = np.deg2rad(v.azimuth), np.deg2rad(v.pitch)
        direction = np.array([np.sin(az) * np.cos(pitch), np.sin(pitch), np.cos(az) * np.cos(pitch)])
        camera = Camera.look_at(centre + direction * 4.0 * c.body.height, centre, self.width, self.height, v.fov)
        w, h = self.width, self.height
        if v.framing == "full body":
            fill = rng.uniform(0.72, 0.94)
            mx, my = (1 - fill) * w / 2, (1 - fill) * h / 2
            dx, dy = rng.uniform(-0.6, 0.6) * mx, rng.uniform(-0.6, 0.6) * my
            camera = _fit(camera, pts, (mx + dx, my + dy, w - mx + dx, h - my + dy))
        else:
            # crop: the body from the crown down to the cut joints spans the frame height, its
            # 3D length measured so a bow toward the camera still shows head and shoulders
            cut = np.mean([joints[JOINT_INDEX[j]][:3, 3] for j in FRAMING_CUT[v.framing]], 0)
            head_top = _landmark_points(c, joints, ("head_top",))[0]
            neck = joints[JOINT_INDEX["neck"]][:3, 3]
            top_margin = rng.uniform(0.04, 0.1) * h
            bottom = h + rng.uniform(-0.03, 0.06) * h
            _, z = camera.project(neck[None])
            span_px = np.linalg.norm(head_top - cut) * camera.fy / z[0]
            camera = camera.zoomed((bottom - top_margin) / span_px, (0.0, 0.0))
            upper = np.array([head_top, neck, joints[JOINT_INDEX["head"]][:3, 3],
                              joints[JOINT_INDEX["l_shoulder"]][:3, 3], joints[JOINT_INDEX["r_shoulder"]][:3, 3]])
            px, _ = camera.project(upper)
            shift_x = w / 2 - px[1, 0] + rng.uniform(-0.08, 0.08) * w  # neck near the centre
            camera = camera.zoomed(1.0, (shift_x, top_margin - px[:, 1].min()))
        # the horizon is where the camera's level line of sight meets the image
        far = camera.eye + np.array([-direction[0], 0.0, -direction[2]]) * 1000.0
        horizon = float(camera.project(far[None])[0][0, 1] / h)
        return camera, horizon

    @staticmethod
    def _light(v: View, rng: np.random.Generator) -> Light:
        """Key light from in front of the camera, randomly placed, tinted and dimmed."""
        az = np.deg2rad(v.azimuth + rng.uniform(-70, 70))
        el = np.deg2rad(rng.uniform(20, 70))
        towards_light = np.array([np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)])
        tint = np.array([1.0, 1.0, 1.0]) + rng.uniform(-0.08, 0.08, 3)
        intensity = rng.uniform(0.55, 0.95)
        ambient = rng.uniform(0.25, 0.5)
        if v.background == "night sky":
            intensity, tint = intensity * 0.7, tint * np.array([0.85, 0.9, 1.1])
        return Light(-towards_light, tint * intensity, np.full(3, ambient) * tint, np.full(3, ambient * 0.7))
