"""Headless OpenGL rendering of posed characters (docs/ARCHITECTURE.md, "The world").

moderngl over EGL (Mesa llvmpipe on CPU machines, the GPU driver where there is one).
Skinning is rigid per joint and runs in the vertex shader, so a character's mesh and atlas
are uploaded once and each render uploads only joint matrices, camera and light.
Anti-aliasing is 4x MSAA; the resolved colour is premultiplied by coverage, which gives the
soft foreground alpha that trainers re-composite onto new backgrounds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .geometry import ATLAS_COLS, VERTEX_FLOATS
from .skeleton import JOINTS

_VERTEX_SHADER = f"""
#version 330
uniform mat4 joints[{len(JOINTS)}];
uniform mat4 view_proj;
uniform float expression_offset;
in vec3 in_position;
in vec3 in_normal;
in vec2 in_uv;
in float in_joint;
in float in_head;
out vec3 v_normal;
out vec3 v_world;
out vec2 v_uv;
void main() {{
    mat4 J = joints[int(in_joint + 0.5)];
    vec4 world = J * vec4(in_position, 1.0);
    v_world = world.xyz;
    v_normal = mat3(J) * in_normal;
    v_uv = in_uv + vec2(in_head * expression_offset, 0.0);
    gl_Position = view_proj * world;
}}
"""

_FRAGMENT_SHADER = """
#version 330
uniform sampler2D atlas;
uniform vec3 light_dir;      // direction the light travels, world space
uniform vec3 light_color;
uniform vec3 ambient_sky;
uniform vec3 ambient_ground;
uniform vec3 eye;
in vec3 v_normal;
in vec3 v_world;
in vec2 v_uv;
out vec4 frag;
void main() {
    vec3 n = normalize(v_normal);
    vec3 to_eye = normalize(eye - v_world);
    if (dot(n, to_eye) < 0.0) n = -n;  // shells (hair, skirts) are lit from the side we see
    vec3 base = texture(atlas, v_uv).rgb;
    float diffuse = max(dot(n, -light_dir), 0.0);
    vec3 ambient = mix(ambient_ground, ambient_sky, 0.5 + 0.5 * n.y);
    vec3 h = normalize(to_eye - light_dir);
    float spec = pow(max(dot(n, h), 0.0), 24.0) * 0.12;
    vec3 rgb = base * (ambient + light_color * diffuse) + light_color * spec;
    frag = vec4(clamp(rgb, 0.0, 1.0), 1.0);
}
"""


@dataclass
class Camera:
    """Pinhole camera: world->camera by `view` (4x4, looks down -z), intrinsics in pixels
    (image y grows downward)."""

    view: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    near: float = 0.05
    far: float = 50.0

    @staticmethod
    def look_at(eye, target, width: int, height: int, fov_y_deg: float, up=(0.0, 1.0, 0.0)) -> Camera:
        eye, target, up = (np.asarray(v, float) for v in (eye, target, up))
        forward = target - eye
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, up)
        right /= np.linalg.norm(right)
        true_up = np.cross(right, forward)
        view = np.eye(4)
        view[0, :3], view[1, :3], view[2, :3] = right, true_up, -forward
        view[:3, 3] = -view[:3, :3] @ eye
        f = 0.5 * height / np.tan(np.deg2rad(fov_y_deg) / 2)
        return Camera(view, f, f, width / 2, height / 2, width, height)

    @property
    def eye(self) -> np.ndarray:
        return -self.view[:3, :3].T @ self.view[:3, 3]

    def projection(self) -> np.ndarray:
        """OpenGL projection matching the pinhole intrinsics (principal point may be off-centre)."""
        w, h, n, f = self.width, self.height, self.near, self.far
        return np.array([
            [2 * self.fx / w, 0, 1 - 2 * self.cx / w, 0],
            [0, 2 * self.fy / h, 2 * self.cy / h - 1, 0],
            [0, 0, -(f + n) / (f - n), -2 * f * n / (f - n)],
            [0, 0, -1, 0],
        ])

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points (N, 3) -> pixels (N, 2) and distance along the view axis (N,)."""
        cam = points @ self.view[:3, :3].T + self.view[:3, 3]  # (N, 3)
        z = -cam[:, 2]
        safe = np.where(np.abs(z) < 1e-9, 1e-9, z)
        px = np.stack([self.fx * cam[:, 0] / safe + self.cx, self.cy - self.fy * cam[:, 1] / safe], -1)
        return px, z

    def zoomed(self, scale: float, shift: tuple[float, float]) -> Camera:
        """The same pose with the image scaled by `scale` about the principal point and then
        shifted: pixel p -> scale * (p - c) + c + shift. An exact 2D similarity of the image."""
        return Camera(self.view, self.fx * scale, self.fy * scale, self.cx + shift[0], self.cy + shift[1],
                      self.width, self.height, self.near, self.far)


@dataclass
class Light:
    direction: np.ndarray  # direction the light travels (world)
    color: np.ndarray  # (3,) 0..1+
    ambient_sky: np.ndarray
    ambient_ground: np.ndarray


def create_context():
    """A headless GL context; EGL first (works without a display), then the platform default."""
    import moderngl

    try:
        return moderngl.create_standalone_context(backend="egl")
    except Exception as egl_error:  # noqa: BLE001 - report both failures below
        try:
            return moderngl.create_standalone_context()
        except Exception as error:
            raise RuntimeError(
                "Could not create a headless OpenGL context (EGL: "
                f"{egl_error}; default: {error}). Install Mesa's EGL driver, e.g. "
                "`apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri` (scripts/setup.sh does)."
            ) from error


class Renderer:
    """Renders characters at a fixed image size. One per process; not thread-safe."""

    def __init__(self, width: int, height: int, samples: int = 4):
        import moderngl

        os.environ.setdefault("LP_NUM_THREADS", "1")  # llvmpipe: parallelism comes from worker processes
        self.width, self.height = width, height
        self.ctx = create_context()
        self.ctx.enable(moderngl.DEPTH_TEST)
        self.program = self.ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
        size = (width, height)
        self.msaa = self.ctx.framebuffer(
            color_attachments=[self.ctx.renderbuffer(size, 4, samples=samples)],
            depth_attachment=self.ctx.depth_renderbuffer(size, samples=samples),
        )
        self.resolved = self.ctx.framebuffer(
            color_attachments=[self.ctx.renderbuffer(size, 4)], depth_attachment=self.ctx.depth_renderbuffer(size)
        )
        self._loaded: tuple | None = None

    def load(self, vertices: np.ndarray, triangles: np.ndarray, atlas: np.ndarray) -> None:
        """Upload one character's mesh (V, VERTEX_FLOATS) and atlas (h, w, 3) uint8."""

        assert vertices.shape[1] == VERTEX_FLOATS, vertices.shape
        with self.ctx:  # several renderers may live in one process: make ours current
            self._load(vertices, triangles, atlas)

    def _load(self, vertices: np.ndarray, triangles: np.ndarray, atlas: np.ndarray) -> None:
        import moderngl

        if self._loaded is not None:
            for obj in self._loaded:
                obj.release()
        vbo = self.ctx.buffer(np.ascontiguousarray(vertices, np.float32).tobytes())
        ibo = self.ctx.buffer(np.ascontiguousarray(triangles, np.uint32).tobytes())
        vao = self.ctx.vertex_array(
            self.program, [(vbo, "3f 3f 2f 1f 1f", "in_position", "in_normal", "in_uv", "in_joint", "in_head")],
            index_buffer=ibo, index_element_size=4,
        )
        texture = self.ctx.texture((atlas.shape[1], atlas.shape[0]), 3, np.ascontiguousarray(atlas).tobytes())
        texture.build_mipmaps(max_level=4)
        texture.filter = (moderngl.LINEAR_MIPMAP_LINEAR, moderngl.LINEAR)
        texture.repeat_x = texture.repeat_y = False
        self._loaded = (vao, vbo, ibo, texture)

    def render(self, joints_world: np.ndarray, camera: Camera, light: Light, expression: int = 0
               ) -> tuple[np.ndarray, np.ndarray]:
        """Draw the loaded character. -> premultiplied RGBA (H, W, 4) uint8, distance (H, W) float32
        along the view axis (inf where empty). Rows run top to bottom."""
        if self._loaded is None:
            raise RuntimeError("Renderer.render called before Renderer.load")
        with self.ctx:
            rgba, depth = self._draw(joints_world, camera, light, expression)
        n, f = camera.near, camera.far
        ndc = depth * 2.0 - 1.0
        distance = np.where(depth < 1.0, 2 * f * n / ((f + n) - ndc * (f - n)), np.inf).astype(np.float32)
        return rgba, distance

    def _draw(self, joints_world, camera, light, expression) -> tuple[np.ndarray, np.ndarray]:
        vao, _, _, texture = self._loaded
        p = self.program
        p["joints"].write(np.ascontiguousarray(joints_world.transpose(0, 2, 1), np.float32).tobytes())  # column-major
        view_proj = camera.projection() @ camera.view
        p["view_proj"].write(np.ascontiguousarray(view_proj.T, np.float32).tobytes())
        p["expression_offset"].value = expression / ATLAS_COLS
        p["light_dir"].value = tuple(light.direction / np.linalg.norm(light.direction))
        p["light_color"].value = tuple(light.color)
        p["ambient_sky"].value = tuple(light.ambient_sky)
        p["ambient_ground"].value = tuple(light.ambient_ground)
        p["eye"].value = tuple(camera.eye)
        texture.use(0)
        p["atlas"].value = 0
        self.msaa.use()
        self.msaa.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        vao.render()
        self.ctx.copy_framebuffer(self.resolved, self.msaa)
        w, h = self.width, self.height
        rgba = np.frombuffer(self.resolved.read(components=4), np.uint8).reshape(h, w, 4)[::-1]
        depth = np.frombuffer(self.resolved.read(attachment=-1, components=1, dtype="f4"), np.float32).reshape(h, w)[::-1]
        return np.ascontiguousarray(rgba), depth
