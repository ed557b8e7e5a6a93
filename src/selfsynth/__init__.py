"""selfsynth: fine-grained recognition with grounded explanations by self-synthesized data.

Importing the package makes the embedded model's custom vision tower known to transformers, so a
merged checkpoint loads with plain ``AutoModelForImageTextToText.from_pretrained(dir)`` after
``import selfsynth``. Registration needs torch, which takes seconds to import, so it is deferred
until transformers itself is imported (or done at once if it already is): commands that never
touch a model (``env``, ``data``, ``world``, ``status``) stay fast.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

__version__ = "0.1.0"


def _register_models() -> None:
    with contextlib.suppress(ImportError):  # transformers or torch missing: nothing to register
        from selfsynth.basevlm import tower_config  # registers the config with AutoConfig on import

        tower_config.on_first_config(_register_tower_model)


def _register_tower_model() -> None:
    from selfsynth.basevlm.tower import register_model

    register_model()


class _AfterImport(importlib.abc.Loader):
    """Runs the real loader of ``transformers``, then registers our model classes."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _register_models()


class _TransformersHook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):  # noqa: ANN001 (importlib protocol)
        if name != "transformers":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _AfterImport(spec.loader)
        return spec


if "transformers" in sys.modules:
    _register_models()
elif not any(isinstance(f, _TransformersHook) for f in sys.meta_path):
    sys.meta_path.insert(0, _TransformersHook())
