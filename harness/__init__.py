"""harness: one preprocess -> target -> decode -> evaluate line for object detectors on many accelerators."""

__version__ = "0.1.0"
