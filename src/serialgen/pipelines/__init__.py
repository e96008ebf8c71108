"""Inference pipelines, one task each: standardize (Stage I), personalize (Stage II), the
serial pipeline that composes them, and the other methods built on them (consistent
self-attention, Layout-and-Retouch, Beyond Inserting). See docs/ARCHITECTURE.md."""

from .beyond_inserting import BeyondInsertingPipeline, Optimization
from .consistent import ConsistentAttentionPipeline
from .layout_retouch import LayoutRetouchOutput, LayoutRetouchPipeline
from .personalize import PersonalizeOutput, PersonalizePipeline
from .serial import SerialGenOutput, SerialGenPipeline
from .standardize import StandardizeOutput, StandardizePipeline

# the generation methods, each a pipeline composed on a SerialGenPipeline (`compose_method`)
METHODS = ("serialgen", "consistent-attention", "layout-retouch", "beyond-inserting")


def compose_method(serial: SerialGenPipeline, method: str = "serialgen", **options):
    """The pipeline of `method` (METHODS) on `serial`'s models; options: that pipeline's own
    settings (consistent-attention: identity_images, sample_rate; layout-retouch: switch,
    retouch_strength; beyond-inserting: optimization, an `Optimization`)."""
    if method == "serialgen":
        if options:
            raise ValueError(f"the serialgen method takes no options, got {sorted(options)}")
        return serial
    if method == "consistent-attention":
        return ConsistentAttentionPipeline(serial, **options)
    if method == "layout-retouch":
        return LayoutRetouchPipeline(serial, **options)
    if method == "beyond-inserting":
        return BeyondInsertingPipeline(serial, **options)
    raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")


__all__ = [
    "METHODS",
    "BeyondInsertingPipeline",
    "ConsistentAttentionPipeline",
    "LayoutRetouchOutput",
    "LayoutRetouchPipeline",
    "Optimization",
    "PersonalizeOutput",
    "PersonalizePipeline",
    "SerialGenOutput",
    "SerialGenPipeline",
    "StandardizeOutput",
    "StandardizePipeline",
    "compose_method",
]
