"""serialgen: personalized character image generation (SerialGen, arXiv 2412.01485)."""

__version__ = "0.1.0"
