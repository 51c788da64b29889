"""Register every serialisable ccpdml class with Keras, without importing TensorFlow early.

`keras.saving.load_model` finds custom classes only once they are registered, i.e. once their
modules are imported. `import ccpdml` must stay light (`python -m ccpdml --help` does not import
TensorFlow), so it installs `_RegisterAfterKeras`: the first `import keras` in the process (which
every load of a `.keras` file needs) imports the modules below right after Keras itself. When
Keras is already imported, they are imported at once.
"""

import importlib
import importlib.abc
import importlib.util
import sys

# Every module defining a `register_keras_serializable` class (tests/test_package.py checks it).
SERIALIZABLE_MODULES = (
    "ccpdml.layers",
    "ccpdml.losses",
    "ccpdml.callbacks",
    "ccpdml.optimizers",
    "ccpdml.models.embedding_head",
)
# Registered when the trainer is imported (heavy: data pipelines, config); trainer-internal.
TRAINER_MODULES = ("ccpdml.train.nonfinite_guard",)


_registering = False


def _ccpdml_import_in_progress(finishing=None):
    """True while some ccpdml module (other than `finishing`, whose last line runs) is still
    executing its imports: importing more could then meet it half-initialised."""
    return any(
        name.startswith("ccpdml.")
        and name != finishing
        and getattr(getattr(mod, "__spec__", None), "_initializing", False)
        for name, mod in list(sys.modules.items())
    )


def register_all():
    """Import every module that registers ccpdml classes with Keras (idempotent)."""
    global _registering
    if _registering:
        return
    _registering = True
    try:
        for name in SERIALIZABLE_MODULES:
            importlib.import_module(name)
    finally:
        _registering = False


class _RegisterAfterKeras(importlib.abc.MetaPathFinder):
    """One-shot import hook: runs `register_all()` right after the module `keras` executes."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenRegister(spec.loader)
        return spec


class _ThenRegister(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        # Keras imported by a ccpdml module itself: that import registers at its end instead
        # (the subpackages call `install()` last), never here with a half-imported module.
        if not _ccpdml_import_in_progress():
            register_all()

    def __getattr__(self, name):  # the rest of the loader protocol (resources, ...)
        return getattr(self.loader, name)


def install(finishing=None):
    """Register now if Keras is loaded (and no other ccpdml import is half done), else right
    after the first import of Keras. Subpackages call it last with `finishing=__name__`."""
    if "keras" in sys.modules:
        if not _ccpdml_import_in_progress(finishing):
            register_all()
    elif not any(isinstance(f, _RegisterAfterKeras) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterKeras())
