"""Inference pipelines, one task each: standardize (Stage I)."""

from .standardize import StandardizeOutput, StandardizePipeline

__all__ = ["StandardizeOutput", "StandardizePipeline"]
