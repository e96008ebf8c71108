"""Inference pipelines, one task each: standardize (Stage I), personalize (Stage II), and the
serial pipeline that composes them. See docs/ARCHITECTURE.md."""

from .personalize import PersonalizeOutput, PersonalizePipeline
from .serial import SerialGenOutput, SerialGenPipeline
from .standardize import StandardizeOutput, StandardizePipeline

__all__ = ["PersonalizeOutput", "PersonalizePipeline", "SerialGenOutput", "SerialGenPipeline", "StandardizeOutput",
           "StandardizePipeline"]
