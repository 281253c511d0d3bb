"""Battery-pack test bench data acquisition."""

__version__ = "0.1.0"
