"""ccpdml: Deep Metric Learning with Chance Constraints for TensorFlow / Keras 3."""

import importlib.util as _importlib_util

from ccpdml import registration as _registration

__version__ = "0.1.0"

# `python -m ccpdml --help` imports this file first: keep TensorFlow (and anything importing it)
# out of here, or every command pays TensorFlow's start-up. Only check that it is installed.
if _importlib_util.find_spec("tensorflow") is None:  # pragma: no cover - only without TensorFlow
    raise ImportError(
        "ccpdml needs TensorFlow >= 2.16. Install one of: `pip install ccpdml[cpu]` "
        "(tensorflow-cpu), `pip install ccpdml[gpu]` (tensorflow[and-cuda]) or "
        "`pip install ccpdml[tf]`; `make install` does the CPU variant in .venv."
    )

# Every serialisable class is registered with Keras as soon as Keras is imported (`.keras` files
# load after a plain `import ccpdml`), without importing TensorFlow here.
_registration.install()
