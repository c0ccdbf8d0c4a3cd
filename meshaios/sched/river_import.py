"""river's learners for the runtime model, imported without what the model does not use.

``river.linear_model`` imports all its models, and one of them (``BayesianLinearRegression``) imports
``river.proba``, which imports ``scipy.stats``: about 50 MB of resident memory in every node and a good part of a
node's start-up, for a module the runtime model never calls. Here ``river.proba`` is put in ``sys.modules`` as a
stand-in module that imports the real one on its first attribute access (under a lock, so two threads cannot both
start it), so ``river.proba`` and ``scipy.stats`` load only if something uses them -- a user's task that works with
river's distributions, say -- and then behave as they always do.

``scipy.special`` the same (another ~24 MB of every node: river's losses import it for the losses the runtime model
does not use, the squared loss needs none of it). One river module takes a name from it as it loads
(``from scipy.special import ndtri``, river's ``AdPredictor``): that module gets a function that imports
``scipy.special`` when it is called, and only that module -- the stand-in forgets the name once river is
imported, so an import of it from anywhere else gets the real one.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

DEFERRED = ("river.proba", "scipy.special")
# names river's own modules import from a deferred module while they load: bound to a function that imports the
# module when called (``_late``), for those modules only
BOUND_LATE = {"scipy.special": ("ndtri",)}
# one lock per deferred module, re-entrant: loading one may touch another (``scipy.stats`` imports from
# ``scipy.special``), or itself again, on the same thread
_locks = {name: threading.RLock() for name in DEFERRED}


class _Deferred(types.ModuleType):
    """Imports the module it stands for on the first attribute it is asked for, then forwards to it."""

    def __getattr__(self, name: str) -> Any:
        with _locks[self.__name__]:
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
    for attr in BOUND_LATE.get(name, ()):
        setattr(stand_in, attr, _late(name, attr))
    if name in BOUND_LATE and spec.submodule_search_locations is not None:
        # ``from <package> import name`` asks for ``__path__`` first: a package's, so that asking does not load it
        stand_in.__path__ = list(spec.submodule_search_locations)
    sys.modules[name] = stand_in
    parent, _, child = name.rpartition(".")
    setattr(importlib.import_module(parent), child, stand_in)


def _late(module: str, attr: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    call.__name__ = call.__qualname__ = attr
    return call


for _name in DEFERRED:
    _defer(_name)

from river import linear_model, optim, utils  # noqa: E402 - after the stand-ins

for _name, _attrs in BOUND_LATE.items():
    _module = sys.modules.get(_name)
    if isinstance(_module, _Deferred):
        for _attr in _attrs:
            _module.__dict__.pop(_attr, None)  # from now on the real module's, loaded on first use

__all__ = ["linear_model", "optim", "utils"]
