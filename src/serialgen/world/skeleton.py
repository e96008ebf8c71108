"""Articulated skeleton of the character world (docs/ARCHITECTURE.md, "The world").

19 joints posed by forward kinematics. World frame: y up, the character faces +z, +x is the
character's left. In the rest pose every limb hangs straight down (arms and legs along -y).

A pose is a dict ``joint name -> (rx, ry, rz)`` in degrees, the joint's local rotation
``R = Rz(rz) @ Rx(rx) @ Ry(ry)``: ``ry`` twists the bone about its own axis first, ``rx``
swings it in the sagittal plane, ``rz`` in the frontal plane. For a bone pointing down,
``rx < 0`` swings it forward and ``rz > 0`` swings it toward the character's left (so left-arm
abduction is ``rz > 0``, right-arm abduction ``rz < 0``); for the upward spine and neck,
``rx > 0`` bends forward. Every angle is clamped to the joint's limits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

JOINTS = (
    "pelvis", "spine", "chest", "neck", "head",
    "l_shoulder", "l_elbow", "l_wrist",
    "r_shoulder", "r_elbow", "r_wrist",
    "l_hip", "l_knee", "l_ankle",
    "r_hip", "r_knee", "r_ankle",
    "l_toe", "r_toe",
)
JOINT_INDEX = {name: i for i, name in enumerate(JOINTS)}
PARENTS = {
    "pelvis": None, "spine": "pelvis", "chest": "spine", "neck": "chest", "head": "neck",
    "l_shoulder": "chest", "l_elbow": "l_shoulder", "l_wrist": "l_elbow",
    "r_shoulder": "chest", "r_elbow": "r_shoulder", "r_wrist": "r_elbow",
    "l_hip": "pelvis", "l_knee": "l_hip", "l_ankle": "l_knee",
    "r_hip": "pelvis", "r_knee": "r_hip", "r_ankle": "r_knee",
    "l_toe": "l_ankle", "r_toe": "r_ankle",
}
PARENT_INDEX = np.array([-1 if PARENTS[j] is None else JOINT_INDEX[PARENTS[j]] for j in JOINTS])

# Joint limits in degrees, (min, max) for rx, ry, rz. Left side; the right side mirrors them
# (ry and rz change sign), see `limits()`.
_LIMITS_LEFT = {
    "pelvis": ((-60, 60), (-180, 180), (-30, 30)),
    "spine": ((-25, 45), (-35, 35), (-25, 25)),
    "chest": ((-20, 40), (-35, 35), (-20, 20)),
    "neck": ((-30, 40), (-60, 60), (-30, 30)),
    "head": ((-25, 25), (-30, 30), (-20, 20)),
    "l_shoulder": ((-180, 60), (-100, 100), (-10, 175)),
    "l_elbow": ((-150, 0), (-30, 30), (0, 0)),
    "l_wrist": ((-60, 60), (-60, 60), (-30, 30)),
    "l_hip": ((-120, 40), (-40, 40), (-20, 60)),
    "l_knee": ((0, 150), (-10, 10), (0, 0)),
    "l_ankle": ((-40, 40), (-20, 20), (-15, 15)),
    "l_toe": ((0, 0), (0, 0), (0, 0)),
}


def mirror_name(name: str) -> str:
    if name.startswith("l_"):
        return "r_" + name[2:]
    if name.startswith("r_"):
        return "l_" + name[2:]
    return name


def limits() -> np.ndarray:
    """Joint limits as an array (J, 3, 2) in degrees, right side mirrored from the left."""
    out = np.zeros((len(JOINTS), 3, 2))
    for name in JOINTS:
        left = _LIMITS_LEFT[mirror_name(name) if name.startswith("r_") else name]
        lim = np.array(left, dtype=float)  # (3, 2)
        if name.startswith("r_"):
            lim[1:] = -lim[1:, ::-1]  # ry and rz flip sign under the x mirror
        out[JOINT_INDEX[name]] = lim
    return out


JOINT_LIMITS = limits()


def mirror_pose(pose: dict[str, tuple[float, float, float]]) -> dict[str, tuple[float, float, float]]:
    """Left-right mirror of a pose (x -> -x): swap sides, negate ry and rz."""
    return {mirror_name(k): (rx, -ry, -rz) for k, (rx, ry, rz) in pose.items()}


def pose_array(pose: dict[str, tuple[float, float, float]]) -> np.ndarray:
    """Pose dict -> clamped angles (J, 3) in degrees."""
    angles = np.zeros((len(JOINTS), 3))
    for name, value in pose.items():
        if name not in JOINT_INDEX:
            raise ValueError(f"Unknown joint {name!r}; joints are {', '.join(JOINTS)}")
        angles[JOINT_INDEX[name]] = value
    return np.clip(angles, JOINT_LIMITS[..., 0], JOINT_LIMITS[..., 1])


def rotation(angles_deg: np.ndarray) -> np.ndarray:
    """Local rotations R = Rz @ Rx @ Ry for angles (..., 3) in degrees -> (..., 3, 3)."""
    rx, ry, rz = np.deg2rad(angles_deg).transpose(-1, *range(angles_deg.ndim - 1))
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    one, zero = np.ones_like(rx), np.zeros_like(rx)
    Rx = np.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).reshape(*rx.shape, 3, 3)
    Ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(*rx.shape, 3, 3)
    Rz = np.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).reshape(*rx.shape, 3, 3)
    return Rz @ Rx @ Ry


@dataclass(frozen=True)
class Proportions:
    """Body measurements in metres. `head_radius` scales the whole face."""

    height: float
    head_radius: float
    neck: float
    torso: float
    shoulder_width: float
    hip_width: float
    upper_arm: float
    forearm: float
    thigh: float
    shin: float
    ankle_height: float
    foot: float
    build: float  # girth multiplier: 0.8 slim .. 1.3 broad

    @staticmethod
    def sample(rng: np.random.Generator, age: float, build: float) -> Proportions:
        """Child (age 0) to adult (age 1). Children have larger heads relative to height."""
        height = np.interp(age, [0, 1], [1.05, 1.75]) * rng.uniform(0.95, 1.05)
        heads_tall = np.interp(age, [0, 1], [5.0, 7.4]) * rng.uniform(0.97, 1.03)
        head = height / heads_tall  # crown to chin
        j = lambda lo, hi: rng.uniform(lo, hi)
        leg = height * np.interp(age, [0, 1], [0.43, 0.47]) * j(0.97, 1.03)
        torso = height * 0.30 * j(0.96, 1.04)
        return Proportions(
            height=float(height),
            head_radius=float(head * 0.5),
            neck=float(head * 0.30 * j(0.9, 1.1)),
            torso=float(torso),
            shoulder_width=float(height * 0.21 * (0.85 + 0.15 * build) * j(0.95, 1.05)),
            hip_width=float(height * 0.10 * (0.85 + 0.15 * build) * j(0.95, 1.05)),
            upper_arm=float(height * 0.175 * j(0.97, 1.03)),
            forearm=float(height * 0.15 * j(0.97, 1.03)),
            thigh=float(leg * 0.52),
            shin=float(leg * 0.48),
            ankle_height=float(height * 0.04),
            foot=float(height * 0.12),
            build=float(build),
        )


def rest_offsets(p: Proportions) -> np.ndarray:
    """Offsets (J, 3) of every joint from its parent in the parent's frame, rest pose."""
    leg = p.thigh + p.shin + p.ankle_height
    off = {
        "pelvis": (0.0, leg, 0.0),
        "spine": (0.0, 0.30 * p.torso, 0.0),
        "chest": (0.0, 0.35 * p.torso, 0.0),
        "neck": (0.0, 0.35 * p.torso, 0.0),
        "head": (0.0, p.neck, 0.0),
        "l_shoulder": (p.shoulder_width / 2, 0.25 * p.torso, 0.0),
        "l_elbow": (0.0, -p.upper_arm, 0.0),
        "l_wrist": (0.0, -p.forearm, 0.0),
        "l_hip": (p.hip_width / 2, -0.04 * p.torso, 0.0),
        "l_knee": (0.0, -p.thigh, 0.0),
        "l_ankle": (0.0, -p.shin, 0.0),
        "l_toe": (0.0, -p.ankle_height, 0.7 * p.foot),
    }
    out = np.zeros((len(JOINTS), 3))
    for name in JOINTS:
        src = off[mirror_name(name) if name.startswith("r_") else name]
        out[JOINT_INDEX[name]] = (-src[0] if name.startswith("r_") else src[0], src[1], src[2])
    return out


def forward_kinematics(p: Proportions, angles_deg: np.ndarray, root: np.ndarray | None = None) -> np.ndarray:
    """World transforms (J, 4, 4) of every joint for clamped local angles (J, 3).

    ``root`` (3,) moves the pelvis; by default it sits at its rest height.
    """
    offsets = rest_offsets(p)
    if root is not None:
        offsets[0] = root
    local_rot = rotation(angles_deg)  # (J, 3, 3)
    world = np.zeros((len(JOINTS), 4, 4))
    for j, parent in enumerate(PARENT_INDEX):
        local = np.eye(4)
        local[:3, :3] = local_rot[j]
        local[:3, 3] = offsets[j]
        world[j] = local if parent < 0 else world[parent] @ local
    return world
