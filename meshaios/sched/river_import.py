"""river's learners for the runtime model, imported without what the model does not use.

``river.linear_model`` imports all its models, and one of them (``BayesianLinearRegression``) imports
``river.proba``, which imports ``scipy.stats``: about 50 MB of resident memory in every node and a good part of a
node's start-up, for a module the runtime model never calls. Here ``river.proba`` is put in ``sys.modules`` as a
stand-in module that imports the real one on its first attribute access (under a lock, so two threads cannot both
start it), so ``river.proba`` and ``scipy.stats`` load only if something uses them -- a user's task that works with
river's distributions, say -- and then behave as they always do.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import Any

DEFERRED = ("river.proba",)
_lock = threading.Lock()


class _Deferred(types.ModuleType):
    """Imports the module it stands for on the first attribute it is asked for, then forwards to it."""

    def __getattr__(self, name: str) -> Any:
        with _lock:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
                importlib.import_module(self.__name__)  # sets the parent package's attribute to the real module
        return getattr(sys.modules[self.__name__], name)


def _defer(name: str) -> None:
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None:  # a river without it: nothing to defer
        return
    stand_in = _Deferred(name)
    stand_in.__spec__ = spec
    sys.modules[name] = stand_in
    parent, _, child = name.rpartition(".")
    setattr(importlib.import_module(parent), child, stand_in)


for _name in DEFERRED:
    _defer(_name)

from river import linear_model, optim, utils  # noqa: E402 - after the stand-ins

__all__ = ["linear_model", "optim", "utils"]
