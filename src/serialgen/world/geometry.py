"""Character meshes, built once per character and posed per sample (docs/ARCHITECTURE.md, "The world").

Every part is rigid and bound to one joint: its vertices live in that joint's rest frame and
the vertex shader applies the joint's world transform, so posing costs one matrix upload
per joint, never a rebuild. Parts are surfaces of revolution (`lathe`) with elliptical
cross-sections, spheres and sphere patches; joints are covered by spheres so rigid limbs
bend without gaps. Texture coordinates address tiles of the character's atlas
(`textures.py`): u runs around the part (0.5 = the part's front, +z), v along it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .character import Character
from .skeleton import JOINT_INDEX, rest_offsets

# Atlas layout: ATLAS_COLS x 2 tiles; row 0 materials, row 1 one head tile per expression.
ATLAS_COLS = 8
# Row 0 materials; row 1: six head tiles (one per expression, expression k = HEAD_TILE + k),
# then the torso tiles of the top garment: "torso" adds a jacket's open front, "chest" also the logo.
MATERIALS = {"skin": 0, "sleeve": 1, "bottom": 2, "shoes": 3, "hair": 4, "accessory": 5, "sole": 6,
             "chest": 14, "torso": 15}
HEAD_TILE = ATLAS_COLS
TILE_INSET = 0.04  # keeps mipmaps from bleeding between tiles
VERTEX_FLOATS = 10  # position 3, normal 3, uv 2, joint index 1, head flag 1

# Face region on the head's (u, v) texture chart; the face box is its projection.
FACE_U = (0.5 - 0.16, 0.5 + 0.16)
FACE_V = (0.13, 0.66)


@dataclass
class MeshBuilder:
    """Accumulates parts into one vertex/index buffer."""

    vertices: list[np.ndarray] = field(default_factory=list)
    indices: list[np.ndarray] = field(default_factory=list)
    count: int = 0

    def add_grid(self, points: np.ndarray, uv: np.ndarray, joint: str, tile: int, head: bool = False) -> None:
        """Add a (rows, cols, 3) grid of points as a quad strip surface with its (rows, cols, 2) uv."""
        rows, cols, _ = points.shape
        normals = _grid_normals(points)
        col, row = tile % ATLAS_COLS, tile // ATLAS_COLS
        span = 1.0 - 2 * TILE_INSET
        atlas_u = (col + TILE_INSET + uv[..., 0] * span) / ATLAS_COLS
        atlas_v = (row + TILE_INSET + uv[..., 1] * span) / 2
        v = np.concatenate([
            points.reshape(-1, 3), normals.reshape(-1, 3),
            np.stack([atlas_u, atlas_v], -1).reshape(-1, 2),
            np.full((rows * cols, 1), JOINT_INDEX[joint]), np.full((rows * cols, 1), float(head)),
        ], 1)  # (rows*cols, VERTEX_FLOATS)
        r, c = np.meshgrid(np.arange(rows - 1), np.arange(cols - 1), indexing="ij")
        a = r * cols + c
        quads = np.stack([a, a + cols, a + 1, a + 1, a + cols, a + cols + 1], -1).reshape(-1, 3)
        self.vertices.append(v.astype(np.float32))
        self.indices.append((quads + self.count).astype(np.uint32))
        self.count += rows * cols

    def build(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate(self.vertices), np.concatenate(self.indices)


def _grid_normals(p: np.ndarray) -> np.ndarray:
    """Per-vertex normals of a (rows, cols, 3) grid from central differences, outward-facing."""
    du = np.gradient(p, axis=1)
    dv = np.gradient(p, axis=0)
    n = np.cross(du, dv)
    length = np.linalg.norm(n, axis=-1, keepdims=True)
    # degenerate rows (poles): borrow the direction from the centroid
    centre = p.reshape(-1, 3).mean(0)
    fallback = p - centre
    n = np.where(length > 1e-9, n / np.maximum(length, 1e-12), fallback / np.maximum(np.linalg.norm(fallback, axis=-1, keepdims=True), 1e-12))
    return n if np.sum(n * fallback) >= 0 else -n


def _theta(u: np.ndarray) -> np.ndarray:
    """Chart u -> angle about a part's axis: u = 0.5 is the front (+z) and u grows toward +x,
    so a texture reads unmirrored on a front-facing character; u = 0 and 1 are the back."""
    return 1.5 * np.pi - 2 * np.pi * u


def _frame(axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors (side, front) perpendicular to `axis`; front leans to +z, side to +x."""
    axis = axis / np.linalg.norm(axis)
    ref = np.array([0.0, 0.0, 1.0]) if abs(axis[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
    front = ref - axis * (ref @ axis)
    front /= np.linalg.norm(front)
    side = np.cross(axis, front)
    if side[0] < 0 or (abs(side[0]) < 1e-9 and side[1] < 0):
        side = -side
    return side, front


def lathe(a, b, radii, *, depth=1.0, width=1.0, t_range=(0.0, 1.0), u_range=(0.0, 1.0), caps=False,
          n_around=20, n_along=None) -> tuple[np.ndarray, np.ndarray]:
    """Surface of revolution from point a to b. -> points (rows, cols, 3), uv (rows, cols, 2).

    `radii` is a radius profile sampled evenly over t in [0, 1]; the cross-section is an
    ellipse `width` x `depth` times the radius. `t_range` cuts a piece of the profile (a
    sleeve, a trouser leg); `u_range` a piece of the circumference (an open-front shell).
    `caps` closes both ends to poles (rounded limb ends).
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    axis = b - a
    side, front = _frame(axis)
    radii = np.asarray(radii, float)
    n_along = n_along or max(4, 2 * len(radii))
    t = np.linspace(*t_range, n_along)
    r = np.interp(t, np.linspace(0, 1, len(radii)), radii)
    if caps:
        cap = r[0] * 0.0
        t = np.concatenate([[t[0] - r[0] / np.linalg.norm(axis) * 0.6], t, [t[-1] + r[-1] / np.linalg.norm(axis) * 0.6]])
        r = np.concatenate([[cap], r, [cap]])
    u = np.linspace(*u_range, n_around + 1)
    theta = _theta(u)
    ring = np.cos(theta)[:, None] * side * width + np.sin(theta)[:, None] * front * depth  # (cols, 3)
    points = a + t[:, None, None] * axis + r[:, None, None] * ring[None]  # (rows, cols, 3)
    tv = (t - t.min()) / max(t.max() - t.min(), 1e-9)
    tu = (u - u_range[0]) / (u_range[1] - u_range[0])  # a partial shell still spans its whole tile
    uv = np.stack(np.meshgrid(tu, tv, indexing="xy"), -1)  # (rows, cols, 2)
    return points, uv


def ellipsoid(centre, radii, *, v_min=None, n_around=20, n_along=12, squash_front=0.0) -> tuple[np.ndarray, np.ndarray]:
    """Ellipsoid about the y axis (poles at -y/+y). `v_min(u)` cuts the bottom off a patch
    (a hair cap whose edge is high at the forehead and low at the nape). -> points, uv."""
    u = np.linspace(0, 1, n_around + 1)
    lo = np.zeros_like(u) if v_min is None else v_min(u)
    s = np.linspace(0, 1, n_along)
    v = lo[None, :] + (1 - lo[None, :]) * s[:, None]  # (rows, cols)
    phi = np.pi * (v - 0.5)  # latitude
    theta = _theta(u)[None, :]
    x = np.cos(phi) * np.cos(theta)
    z = np.cos(phi) * np.sin(theta)
    y = np.sin(phi)
    if squash_front:
        z = np.where(z > 0, z * (1 - squash_front), z)
    points = np.asarray(centre) + np.stack([x, y, z], -1) * np.asarray(radii)
    uv = np.stack([np.broadcast_to(u, v.shape), v], -1)
    return points, uv


def head_geometry(c: Character) -> dict[str, np.ndarray]:
    """Head centre and radii in the head joint's frame (shared by mesh, face box and keypoints)."""
    r = c.body.head_radius
    return {"centre": np.array([0.0, 0.95 * r, 0.04 * r]), "radii": np.array([0.82, 1.0, 0.9]) * r}


def head_point(c: Character, u: float, v: float, lift: float = 1.0) -> np.ndarray:
    """Point on the head ellipsoid at chart coordinates (u, v), in the head joint's frame."""
    g = head_geometry(c)
    phi = np.pi * (np.asarray(v) - 0.5)
    theta = _theta(np.asarray(u))
    unit = np.stack([np.cos(phi) * np.cos(theta), np.sin(phi) * np.ones_like(theta), np.cos(phi) * np.sin(theta)], -1)
    return g["centre"] + unit * g["radii"] * lift


def face_points(c: Character, n: int = 7) -> np.ndarray:
    """Grid of points covering the face region (n*n, 3), in the head joint's frame."""
    u, v = np.meshgrid(np.linspace(*FACE_U, n), np.linspace(*FACE_V, n))
    return head_point(c, u.ravel(), v.ravel())


def _arm_radius(c: Character) -> float:
    return 0.030 * c.body.height * c.body.build


def hand_geometry(c: Character) -> tuple[np.ndarray, np.ndarray]:
    """Hand ellipsoid centre and radii in the wrist joint's frame; its top meets the wrist."""
    radii = np.array([0.45, 1.35, 0.95]) * _arm_radius(c) * 1.05
    return np.array([0.0, -0.9 * radii[1], 0.0]), radii


def landmarks(c: Character) -> dict[str, tuple[str, np.ndarray]]:
    """Surface landmarks as (joint, point in its frame): face points for COCO-18, extremities."""
    b = c.body
    g = head_geometry(c)
    centre, radii = hand_geometry(c)
    hand_tip = centre - np.array([0.0, radii[1], 0.0])
    return {
        "nose": ("head", head_point(c, 0.5, 0.38, lift=1.12)),
        "l_eye": ("head", head_point(c, 0.5 + 0.07, 0.5)),
        "r_eye": ("head", head_point(c, 0.5 - 0.07, 0.5)),
        "l_ear": ("head", head_point(c, 0.75, 0.47)),
        "r_ear": ("head", head_point(c, 0.25, 0.47)),
        "head_top": ("head", g["centre"] + np.array([0.0, g["radii"][1] * 1.08, 0.0])),
        "l_hand": ("l_wrist", hand_tip),
        "r_hand": ("r_wrist", hand_tip),
        "l_toe": ("l_toe", np.zeros(3)),
        "r_toe": ("r_toe", np.zeros(3)),
        "l_heel": ("l_ankle", np.array([0.0, -b.ankle_height, -0.25 * b.foot])),
        "r_heel": ("r_ankle", np.array([0.0, -b.ankle_height, -0.25 * b.foot])),
    }


def build_mesh(c: Character) -> tuple[np.ndarray, np.ndarray]:
    """All parts of a character. -> vertices (V, VERTEX_FLOATS) float32, triangles (T, 3) uint32."""
    b = c.body
    off = rest_offsets(b)
    o = {name: off[i] for name, i in JOINT_INDEX.items()}
    m = MeshBuilder()
    g = b.build
    arm_r = _arm_radius(c)
    leg_r = 0.050 * b.height * g
    waist_r = b.hip_width * 0.5 + leg_r
    chest_r = b.shoulder_width * 0.42
    neck_r = 0.42 * b.head_radius

    top_kind = c.dress.kind if c.dress else c.top.kind
    bottom_kind = None if c.dress else c.bottom.kind
    sleeve = {"t-shirt": 0.45, "long-sleeve shirt": 1.0, "jacket": 1.0, "hoodie": 1.0, "tank top": 0.0, "dress": 0.0}[top_kind]
    cloth = 1.07  # clothing stands off the skin by this factor

    def skin_or(material: str, covered: bool) -> tuple[int, float]:
        """Tile and size factor of a joint ball: clothing-covered or bare."""
        return (MATERIALS[material], cloth) if covered else (MATERIALS["skin"], 1.0)

    lower = MATERIALS["torso" if c.dress else "bottom"]

    # --- torso: hips (pelvis joint), abdomen (spine), chest (chest joint), each a lathe
    hips_lo = -0.16 * b.torso
    m.add_grid(*lathe([0, hips_lo, 0], [0, 0, 0], [waist_r * 0.9, waist_r * 1.05], depth=0.7, caps=False, n_along=4),
               "pelvis", lower)
    # crotch closes the hips between the legs
    m.add_grid(*ellipsoid([0, hips_lo, 0], [waist_r * 0.88, 0.06 * b.torso, waist_r * 0.63], n_along=8),
               "pelvis", lower)
    m.add_grid(*lathe([0, 0, 0], o["spine"], [waist_r * 1.05, waist_r], depth=0.7, n_along=4), "pelvis", MATERIALS["torso"])
    m.add_grid(*lathe([0, 0, 0], o["chest"], [waist_r, chest_r * 0.95], depth=0.68, n_along=5), "spine", MATERIALS["torso"])
    # torso balls at the spine and chest joints keep the rigid torso closed when it bends
    m.add_grid(*ellipsoid([0, 0, 0], np.array([1.0, 0.5, 0.7]) * waist_r), "spine", MATERIALS["torso"])
    m.add_grid(*ellipsoid([0, 0, 0], np.array([1.0, 0.5, 0.68]) * chest_r * 0.95), "chest", MATERIALS["torso"])
    chest_top = o["neck"]
    m.add_grid(*lathe([0, 0, 0], chest_top, [chest_r * 0.95, chest_r, chest_r * 0.95], depth=0.62, n_along=6),
               "chest", MATERIALS["chest"])
    # shoulder yoke rounds the top of the chest into the neck
    m.add_grid(*ellipsoid(chest_top, [b.shoulder_width * 0.47, 0.08 * b.torso, chest_r * 0.6], n_along=8),
               "chest", MATERIALS["skin" if top_kind in ("tank top", "dress") else "sleeve"])
    # --- neck and head
    m.add_grid(*lathe([0, -0.2 * b.neck, 0], [0, b.neck + 0.5 * b.head_radius, 0], [neck_r, neck_r], n_along=4),
               "neck", MATERIALS["skin"])
    hg = head_geometry(c)
    m.add_grid(*ellipsoid(hg["centre"], hg["radii"], n_around=28, n_along=18), "head", HEAD_TILE, head=True)
    nose = head_point(c, 0.5, 0.4)
    m.add_grid(*ellipsoid(nose, np.array([0.12, 0.16, 0.14]) * b.head_radius, n_around=10, n_along=6), "head",
               MATERIALS["skin"])
    for side in (-1, 1):
        ear = head_point(c, 0.5 + side * 0.25, 0.47, lift=0.97)
        m.add_grid(*ellipsoid(ear, np.array([0.08, 0.22, 0.15]) * b.head_radius, n_around=10, n_along=6), "head",
                   MATERIALS["skin"])
    _hair(m, c)
    if "cap" in c.accessories:
        r = hg["radii"] * 1.13
        m.add_grid(*ellipsoid(hg["centre"] + [0, 0.12 * b.head_radius, 0], r, v_min=lambda u: np.full_like(u, 0.62)),
                   "head", MATERIALS["accessory"])
        brim = hg["centre"] + np.array([0, 0.42 * b.head_radius, 0.85 * b.head_radius])
        m.add_grid(*ellipsoid(brim, np.array([0.7, 0.06, 0.5]) * b.head_radius, n_along=6), "head", MATERIALS["accessory"])

    # --- arms: shoulder ball, upper arm, elbow ball, forearm, hand
    for s in "lr":
        mat_upper, k_upper = skin_or("sleeve", sleeve > 0)
        m.add_grid(*ellipsoid([0, 0, 0], np.full(3, arm_r * 1.25 * k_upper)), f"{s}_shoulder", mat_upper)
        elbow = o[f"{s}_elbow"]
        if sleeve > 0:
            m.add_grid(*lathe([0, 0, 0], elbow, [arm_r * 1.12 * cloth, arm_r * 0.95 * cloth], t_range=(0, min(sleeve, 1.0) * 1.0)),
                       f"{s}_shoulder", MATERIALS["sleeve"])
        m.add_grid(*lathe([0, 0, 0], elbow, [arm_r * 1.1, arm_r * 0.92]), f"{s}_shoulder", MATERIALS["skin"])
        long_sleeve = sleeve >= 1.0
        mat, k = skin_or("sleeve", long_sleeve)
        m.add_grid(*ellipsoid([0, 0, 0], np.full(3, arm_r * 0.93 * k), n_along=8), f"{s}_elbow", mat)
        wrist = o[f"{s}_wrist"]
        if long_sleeve:
            m.add_grid(*lathe([0, 0, 0], wrist, [arm_r * 0.93 * cloth, arm_r * 0.8 * cloth], t_range=(0, 0.93)),
                       f"{s}_elbow", MATERIALS["sleeve"])
        m.add_grid(*lathe([0, 0, 0], wrist, [arm_r * 0.92, arm_r * 0.7]), f"{s}_elbow", MATERIALS["skin"])
        hand_centre, hand_radii = hand_geometry(c)
        m.add_grid(*ellipsoid([0, 0, 0], np.full(3, arm_r * 0.72), n_along=6), f"{s}_wrist", MATERIALS["skin"])
        m.add_grid(*ellipsoid(hand_centre, hand_radii, n_along=8), f"{s}_wrist", MATERIALS["skin"])

    # --- legs: hip ball, thigh, knee ball, shin, shoe
    cover = {"trousers": (1.0, 1.0), "shorts": (0.5, 0.0), "skirt": (0.0, 0.0), None: (0.0, 0.0)}[bottom_kind]
    for s in "lr":
        knee, ankle = o[f"{s}_knee"], o[f"{s}_ankle"]
        hip_mat, hk = skin_or("bottom", bottom_kind in ("trousers", "shorts"))
        m.add_grid(*ellipsoid([0, 0, 0], np.full(3, leg_r * 0.95 * hk)), f"{s}_hip", hip_mat)
        if cover[0] > 0:
            m.add_grid(*lathe([0, 0, 0], knee, [leg_r * cloth * 1.04, leg_r * 0.72 * cloth], t_range=(0, cover[0])),
                       f"{s}_hip", MATERIALS["bottom"])
        m.add_grid(*lathe([0, 0, 0], knee, [leg_r, leg_r * 0.7]), f"{s}_hip", MATERIALS["skin"])
        mat, k = skin_or("bottom", cover[1] > 0)
        m.add_grid(*ellipsoid([0, 0, 0], np.full(3, leg_r * 0.72 * k), n_along=8), f"{s}_knee", mat)
        if cover[1] > 0:
            m.add_grid(*lathe([0, 0, 0], ankle, [leg_r * 0.72 * cloth, leg_r * 0.55 * cloth], t_range=(0, 0.97)),
                       f"{s}_knee", MATERIALS["bottom"])
        if c.shoes.kind == "boots":
            m.add_grid(*lathe([0, 0, 0], ankle, [leg_r * 0.66 * cloth * 1.02, leg_r * 0.58 * cloth * 1.05], t_range=(0.55, 1.0)),
                       f"{s}_knee", MATERIALS["shoes"])
        m.add_grid(*lathe([0, 0, 0], ankle, [leg_r * 0.7, leg_r * 0.5]), f"{s}_knee", MATERIALS["skin"])
        foot_c = np.array([0, -0.55 * b.ankle_height, 0.22 * b.foot])
        m.add_grid(*ellipsoid(foot_c, [leg_r * 0.78, b.ankle_height * 1.25, b.foot * 0.58], n_along=10), f"{s}_ankle",
                   MATERIALS["shoes"])
        m.add_grid(*ellipsoid(foot_c - [0, b.ankle_height * 0.75, 0], [leg_r * 0.8, b.ankle_height * 0.45, b.foot * 0.6],
                              n_along=6), f"{s}_ankle", MATERIALS["sole"])

    # --- skirt or dress hem: a cone from the waist, on the pelvis
    if bottom_kind == "skirt" or c.dress:
        length = (0.75 if c.dress else 0.55) * b.thigh + (0.25 * b.shin if c.dress else 0.0)
        m.add_grid(*lathe([0, 0.02 * b.torso, 0], [0, -length, 0], [waist_r * 1.1, waist_r * 1.35, waist_r * 1.75],
                          depth=0.8), "pelvis", lower)
    return m.build()


def _hair(m: MeshBuilder, c: Character) -> None:
    """Hair parts on the head joint. A buzz cut is painted on the head texture only."""
    if c.hair_style == "buzz cut":
        return
    hg = head_geometry(c)
    r = c.body.head_radius
    centre, radii = hg["centre"], hg["radii"]
    tile = MATERIALS["hair"]

    def hairline(u):  # high over the forehead, low at the nape, mid over the ears
        front = np.cos(2 * np.pi * (u - 0.5))  # 1 at the front, -1 at the back
        return np.interp(front, [-1, -0.2, 0.4, 1], [0.22, 0.45, 0.58, 0.7])

    m.add_grid(*ellipsoid(centre, radii * 1.07, v_min=hairline, n_around=28, n_along=10), "head", tile)
    if c.hair_style in ("bob", "long"):
        bottom = -0.05 * r if c.hair_style == "bob" else -2.0 * r
        # open-front shell: covers sides and back
        m.add_grid(*lathe(centre + [0, 0.2 * r, -0.05 * r], [centre[0], bottom, -0.12 * r], [radii[0] * 1.1, radii[0] * 1.12, radii[0] * 1.05],
                          depth=1.05, u_range=(-0.32, 0.32), n_along=6), "head", tile)
    elif c.hair_style == "ponytail":
        m.add_grid(*lathe(centre + [0, 0.45 * r, -0.95 * r], centre + [0, -1.4 * r, -1.25 * r], [0.25 * r, 0.32 * r, 0.22 * r, 0.05 * r],
                          caps=True, n_along=8), "head", tile)
    elif c.hair_style == "bun":
        m.add_grid(*ellipsoid(centre + [0, 0.95 * r, -0.45 * r], np.full(3, 0.42 * r)), "head", tile)
    elif c.hair_style == "spiky":
        for k in range(7):
            ang = 2 * np.pi * k / 7
            base = centre + np.array([np.sin(ang) * 0.45 * r, 0.72 * r, np.cos(ang) * 0.45 * r - 0.1 * r])
            tip = base + np.array([np.sin(ang) * 0.35 * r, 0.55 * r, np.cos(ang) * 0.3 * r])
            m.add_grid(*lathe(base, tip, [0.22 * r, 0.0], n_around=8, n_along=3), "head", tile)
