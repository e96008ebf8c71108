import numpy as np
import pytest

from serialgen.world.character import Character
from serialgen.world.poses import ACTIONS, a_pose_angles, sample_action_pose
from serialgen.world.skeleton import (
    JOINT_INDEX,
    JOINT_LIMITS,
    JOINTS,
    PARENT_INDEX,
    Proportions,
    forward_kinematics,
    mirror_pose,
    pose_array,
    rest_offsets,
    rotation,
)


def test_skeleton_has_17_plus_joints_and_12_plus_actions():
    assert len(JOINTS) >= 17
    assert len({a.name for a in ACTIONS}) >= 12
    for name in ("walk", "run", "wave", "jump", "sit", "point", "arms_crossed", "hands_on_hips", "kick", "dance",
                 "arms_up", "bow"):
        assert name in {a.name for a in ACTIONS}


def test_rotation_convention():
    # rx < 0 swings a downward bone forward (+z); rz > 0 swings it toward +x (the character's left)
    down = np.array([0.0, -1.0, 0.0])
    np.testing.assert_allclose(rotation(np.array([-90.0, 0, 0])) @ down, [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(rotation(np.array([0, 0, 90.0])) @ down, [1, 0, 0], atol=1e-12)
    R = rotation(np.array([[10.0, -20.0, 30.0]]))[0]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(R), 1.0)


def test_rest_pose_geometry():
    p = Character.sample(0, 1).body
    world = forward_kinematics(p, np.zeros((len(JOINTS), 3)))
    pos = world[:, :3, 3]
    # legs hang straight: ankle directly under hip, pelvis at leg length
    np.testing.assert_allclose(pos[JOINT_INDEX["l_ankle"], 0], pos[JOINT_INDEX["l_hip"], 0])
    np.testing.assert_allclose(pos[JOINT_INDEX["pelvis"], 1], p.thigh + p.shin + p.ankle_height)
    assert pos[JOINT_INDEX["l_shoulder"], 0] > 0 > pos[JOINT_INDEX["r_shoulder"], 0]  # +x is the left


def test_fk_preserves_bone_lengths_in_any_pose():
    p = Character.sample(0, 2).body
    offsets = rest_offsets(p)
    rng = np.random.default_rng(0)
    for action in ACTIONS:
        world = forward_kinematics(p, sample_action_pose(action, rng))
        for j, parent in enumerate(PARENT_INDEX):
            if parent >= 0:
                length = np.linalg.norm(world[j, :3, 3] - world[parent, :3, 3])
                assert np.isclose(length, np.linalg.norm(offsets[j])), JOINTS[j]


def test_joint_limits_clamp_and_mirror():
    angles = pose_array({"l_elbow": (60.0, 0, 0), "l_knee": (-30.0, 0, 0), "r_shoulder": (0, 0, 170.0)})
    assert angles[JOINT_INDEX["l_elbow"], 0] == 0.0  # elbows do not hyperextend
    assert angles[JOINT_INDEX["l_knee"], 0] == 0.0
    assert angles[JOINT_INDEX["r_shoulder"], 2] == JOINT_LIMITS[JOINT_INDEX["r_shoulder"], 2, 1] == 10.0
    pose = {"l_shoulder": (-30.0, 20.0, 50.0), "spine": (10.0, 5.0, -3.0)}
    assert mirror_pose(mirror_pose(pose)) == pose
    assert mirror_pose(pose)["r_shoulder"] == (-30.0, -20.0, -50.0)
    with pytest.raises(ValueError, match="Unknown joint"):
        pose_array({"tail": (0, 0, 0)})


def test_sampled_poses_respect_limits_and_vary():
    rng = np.random.default_rng(1)
    a = sample_action_pose(ACTIONS[1], rng)
    b = sample_action_pose(ACTIONS[1], rng)
    assert not np.allclose(a, b)
    for angles in (a, b):
        assert np.all(angles >= JOINT_LIMITS[..., 0] - 1e-9) and np.all(angles <= JOINT_LIMITS[..., 1] + 1e-9)


def test_a_pose_is_identical_for_every_character_up_to_proportions():
    rot = []
    for cid in range(8):
        world = forward_kinematics(Character.sample(0, cid).body, a_pose_angles())
        rot.append(world[:, :3, :3])
    for r in rot[1:]:
        np.testing.assert_allclose(r, rot[0], atol=1e-12)
    bodies = [Character.sample(0, cid).body for cid in range(40)]
    heights = [b.height for b in bodies]
    assert min(heights) < 1.3 < 1.5 < max(heights)  # children and adults
    heads = [b.height / (2 * b.head_radius) for b in bodies]
    assert min(heads) < 5.5 and max(heads) > 7.0  # children have relatively larger heads


def test_proportions_sample_is_seeded():
    a = Proportions.sample(np.random.default_rng(5), 0.5, 1.0)
    b = Proportions.sample(np.random.default_rng(5), 0.5, 1.0)
    assert a == b
