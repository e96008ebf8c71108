"""The procedural 3D character world: characters, poses, scenes, rendering (docs/ARCHITECTURE.md, "The world")."""

from .generator import CharacterWorld, split_of

__all__ = ["CharacterWorld", "split_of"]
