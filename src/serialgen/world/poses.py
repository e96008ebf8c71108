"""The standard A-pose and the named actions of the character world (docs/ARCHITECTURE.md, "The world").

Angles follow `skeleton.py`: R = Rz @ Rx @ Ry per joint, degrees. Actions are authored for
the character's left side; `sample_action_pose` mirrors asymmetric ones at random, adds
per-joint variation and clamps to the joint limits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .skeleton import JOINTS, mirror_pose, pose_array

Pose = dict[str, tuple[float, float, float]]

# The standard pose of Stage I targets: arms 40 degrees out, legs slightly apart.
A_POSE: Pose = {
    "l_shoulder": (0, 0, 40), "r_shoulder": (0, 0, -40),
    "l_elbow": (-8, 0, 0), "r_elbow": (-8, 0, 0),
    "l_hip": (0, 0, 5), "r_hip": (0, 0, -5),
    "l_ankle": (0, 0, -5), "r_ankle": (0, 0, 5),
}


@dataclass(frozen=True)
class Action:
    """A named action: a base pose, how much it varies, and how the caption says it."""

    name: str
    phrase: str
    pose: Pose
    jitter: float = 8.0  # std of per-angle variation, degrees
    mirror: bool = True  # asymmetric: mirror half of the samples
    lift: float = 0.0  # feet this fraction of the height above the ground (jumps)
    extra: dict[str, float] = field(default_factory=dict)  # joint -> extra jitter std


ACTIONS: tuple[Action, ...] = (
    Action("stand", "standing", {
        "l_shoulder": (0, 0, 8), "r_shoulder": (0, 0, -8),
        "l_elbow": (-10, 0, 0), "r_elbow": (-10, 0, 0),
        "l_hip": (0, 0, 3), "r_hip": (0, 0, -3)}, jitter=5, mirror=False),
    Action("walk", "walking", {
        "l_shoulder": (25, 0, 6), "r_shoulder": (-25, 0, -6),
        "l_elbow": (-20, 0, 0), "r_elbow": (-35, 0, 0),
        "l_hip": (-25, 0, 2), "r_hip": (15, 0, -2),
        "l_knee": (10, 0, 0), "r_knee": (25, 0, 0),
        "spine": (0, 6, 0)}, jitter=6),
    Action("run", "running", {
        "spine": (12, 0, 0),
        "l_shoulder": (45, 0, 10), "r_shoulder": (-55, 0, -10),
        "l_elbow": (-90, 0, 0), "r_elbow": (-90, 0, 0),
        "l_hip": (-60, 0, 3), "r_hip": (25, 0, -3),
        "l_knee": (60, 0, 0), "r_knee": (95, 0, 0)}, lift=0.03),
    Action("wave", "waving", {
        "l_shoulder": (-10, -20, 140), "l_elbow": (-70, 0, 0), "l_wrist": (0, 0, 0),
        "r_shoulder": (0, 0, -8), "r_elbow": (-10, 0, 0),
        "head": (0, 0, 8)}, extra={"l_elbow": 15}),
    Action("jump", "jumping", {
        "l_shoulder": (-20, 0, 150), "r_shoulder": (-20, 0, -150),
        "l_elbow": (-20, 0, 0), "r_elbow": (-20, 0, 0),
        "l_hip": (-35, 0, 8), "r_hip": (-35, 0, -8),
        "l_knee": (70, 0, 0), "r_knee": (70, 0, 0),
        "l_ankle": (30, 0, 0), "r_ankle": (30, 0, 0)}, mirror=False, lift=0.22),
    Action("sit", "sitting", {
        "l_hip": (-90, 0, 6), "r_hip": (-90, 0, -6),
        "l_knee": (90, 0, 0), "r_knee": (90, 0, 0),
        "l_shoulder": (-25, 0, 8), "r_shoulder": (-25, 0, -8),
        "l_elbow": (-50, 0, 0), "r_elbow": (-50, 0, 0)}, mirror=False),
    Action("point", "pointing", {
        "l_shoulder": (-85, 0, 15), "l_elbow": (-5, 0, 0),
        "r_shoulder": (0, 0, -8), "r_elbow": (-10, 0, 0),
        "neck": (0, 15, 0)}),
    Action("arms_crossed", "with arms crossed", {
        "l_shoulder": (-30, -80, 12), "r_shoulder": (-30, 80, -12),
        "l_elbow": (-110, 0, 0), "r_elbow": (-110, 0, 0)}, jitter=4, mirror=False),
    Action("hands_on_hips", "with hands on hips", {
        "l_shoulder": (15, 60, 45), "r_shoulder": (15, -60, -45),
        "l_elbow": (-100, 0, 0), "r_elbow": (-100, 0, 0),
        "l_hip": (0, 0, 6), "r_hip": (0, 0, -6)}, jitter=4, mirror=False),
    Action("kick", "kicking", {
        "l_hip": (-80, 0, 4), "l_knee": (15, 0, 0), "l_ankle": (25, 0, 0),
        "r_hip": (5, 0, -4), "r_knee": (10, 0, 0),
        "spine": (-10, 0, 0),
        "l_shoulder": (30, 0, 35), "r_shoulder": (-30, 0, -45),
        "l_elbow": (-30, 0, 0), "r_elbow": (-30, 0, 0)}),
    Action("dance", "dancing", {
        "l_shoulder": (-30, 0, 120), "l_elbow": (-60, 0, 0),
        "r_shoulder": (10, 0, -60), "r_elbow": (-80, 0, 0),
        "l_hip": (0, 0, 20), "r_hip": (-20, 0, -4), "r_knee": (40, 0, 0),
        "spine": (0, 10, 10), "chest": (0, 0, -8), "head": (0, 0, -10)}, jitter=12),
    Action("arms_up", "with both arms up", {
        "l_shoulder": (-10, 0, 165), "r_shoulder": (-10, 0, -165),
        "l_elbow": (-5, 0, 0), "r_elbow": (-5, 0, 0),
        "l_hip": (0, 0, 6), "r_hip": (0, 0, -6)}, jitter=5, mirror=False),
    Action("bow", "bowing", {
        "spine": (40, 0, 0), "chest": (20, 0, 0), "neck": (15, 0, 0),
        "l_shoulder": (-15, 0, 4), "r_shoulder": (-15, 0, -4),
        "l_elbow": (-5, 0, 0), "r_elbow": (-5, 0, 0)}, jitter=4, mirror=False),
    Action("crouch", "crouching", {
        "spine": (25, 0, 0),
        "l_hip": (-100, 0, 12), "r_hip": (-100, 0, -12),
        "l_knee": (130, 0, 0), "r_knee": (130, 0, 0),
        "l_ankle": (-30, 0, 0), "r_ankle": (-30, 0, 0),
        "l_shoulder": (-50, 0, 15), "r_shoulder": (-50, 0, -15),
        "l_elbow": (-40, 0, 0), "r_elbow": (-40, 0, 0)}, jitter=5, mirror=False),
)
ACTION_BY_NAME = {a.name: a for a in ACTIONS}


def a_pose_angles() -> np.ndarray:
    """The standard A-pose as clamped angles (J, 3); identical for every character."""
    return pose_array(A_POSE)


def sample_action_pose(action: Action, rng: np.random.Generator) -> np.ndarray:
    """Base pose of `action`, randomly mirrored, plus Gaussian variation, clamped. -> (J, 3)."""
    pose = mirror_pose(action.pose) if action.mirror and rng.random() < 0.5 else dict(action.pose)
    angles = pose_array(pose)
    std = np.full((len(JOINTS), 1), action.jitter)
    for name, s in action.extra.items():
        for side in (name, "r_" + name[2:] if name.startswith("l_") else name):
            std[JOINTS.index(side)] = s
    angles = angles + rng.normal(0.0, 1.0, angles.shape) * std
    # a whole-body turn is the camera's job; keep pelvis yaw small so views stay what they say
    angles[0] = np.clip(angles[0], -10, 10)
    return pose_array({j: tuple(a) for j, a in zip(JOINTS, angles)})
