"""ccpdml: Deep Metric Learning with Chance Constraints for TensorFlow / Keras 3."""

__version__ = "0.1.0"

try:  # A clear message instead of a bare ImportError deep inside Keras.
    import tensorflow as _tf  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without TensorFlow
    raise ImportError(
        "ccpdml needs TensorFlow >= 2.16. Install one of: `pip install ccpdml[cpu]` "
        "(tensorflow-cpu), `pip install ccpdml[gpu]` (tensorflow[and-cuda]) or "
        "`pip install ccpdml[tf]`; `make install` does the CPU variant in .venv."
    ) from exc
