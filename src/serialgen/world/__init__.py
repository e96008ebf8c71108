"""The procedural 3D character world: characters, poses, scenes, rendering (DESIGN.md section 5)."""

from .generator import CharacterWorld, split_of

__all__ = ["CharacterWorld", "split_of"]
