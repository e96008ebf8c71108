"""Datasets: character-world shards (writing and reading). See docs/ARCHITECTURE.md."""

from .reader import WorldDataset, collate, iterate_records, recomposite
from .shards import SynthSpec, synthesize

__all__ = ["SynthSpec", "WorldDataset", "collate", "iterate_records", "recomposite", "synthesize"]
