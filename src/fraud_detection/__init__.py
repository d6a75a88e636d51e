"""Real-time payment fraud detection: data contract, simulator, features, training, scoring, monitoring."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fraud-detection")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"
