"""Inference pipelines, one task each: standardize (Stage I), personalize (Stage II), the
serial pipeline that composes them, and the other methods built on them (consistent
self-attention). See docs/ARCHITECTURE.md."""

from .consistent import ConsistentAttentionPipeline
from .personalize import PersonalizeOutput, PersonalizePipeline
from .serial import SerialGenOutput, SerialGenPipeline
from .standardize import StandardizeOutput, StandardizePipeline

__all__ = ["ConsistentAttentionPipeline", "PersonalizeOutput", "PersonalizePipeline", "SerialGenOutput",
           "SerialGenPipeline", "StandardizeOutput", "StandardizePipeline"]
