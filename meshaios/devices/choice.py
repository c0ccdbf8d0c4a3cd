"""A task's device as its submitter asks for it: ``submit(..., device="cpu" | "gpu" | "any")`` (docs/devices.md).

* ``"gpu"``: a hard constraint, the same as ``resources={"gpu": 1}`` (it becomes that resource);
* ``"cpu"``: the task runs on a CPU, even where its owner would offer placement the choice (``--gpu-choice``);
* ``"any"``: placement may choose: the owner offers EFT the task as ``"any"`` (``Owner.task_info``) whatever the
  node's ``--gpu-choice``, and EFT's pick is what runs (the RUN's ``device``); other policies run it on a CPU.

Only a kernel that runs on a GPU too may say ``"any"`` (a kernel registered ``gpu=False`` may not say ``"gpu"``
either); a plain function may ask for ``"gpu"``: it then runs in a GPU slot and may use cupy itself.
``SubmitTask.dev`` carries ``"cpu"`` and ``"any"``; ``"gpu"`` travels as the resource.

    >>> from meshaios.devices import default_registry
    >>> relu = default_registry().get("meshaios.relu")
    >>> submit_device("any", relu, {})
    ('any', {})
    >>> submit_device("gpu", relu, {"memory": 1024})
    ('', {'memory': 1024, 'gpu': 1})
    >>> submit_device("gpu ", relu, {})
    Traceback (most recent call last):
    ...
    ValueError: device must be None, 'cpu', 'gpu' or 'any', not 'gpu '
"""

from __future__ import annotations

from collections.abc import Mapping

from meshaios.devices.registry import Kernel

__all__ = ["SUBMIT_DEVICES", "submit_device"]

SUBMIT_DEVICES = ("cpu", "gpu", "any")  # what ``submit(device=...)`` accepts besides None (the node's policy)


def submit_device(device: object, fn: object, resources: Mapping[str, int]) -> tuple[str, dict[str, int]]:
    """Check ``submit``'s ``device`` against its function and resources. Returns what ``SubmitTask.dev`` carries
    (``"cpu"``, ``"any"``; ``""`` for ``"gpu"``) and the resources to send (``"gpu"`` adds one GPU). Raises
    ``ValueError`` for an unknown device, a contradiction with ``resources``, or a GPU asked of a function that
    cannot run on one."""
    if device not in SUBMIT_DEVICES:
        raise ValueError(f"device must be None, 'cpu', 'gpu' or 'any', not {device!r}")
    gpus = resources.get("gpu", 0)
    if gpus and device != "gpu":
        raise ValueError(
            f"device={device!r} contradicts resources={{'gpu': {gpus}}}, which is a hard GPU constraint: give only one"
        )
    if isinstance(fn, Kernel) and device != "cpu" and not fn.supports_gpu:
        raise ValueError(f"device={device!r}: kernel {fn.name!r} has no GPU implementation (registered gpu=False)")
    if device == "any" and not isinstance(fn, Kernel):
        raise ValueError(
            "device='any' lets placement run the task on a CPU or a GPU, so it needs a kernel that runs on both "
            f"(meshaios.devices.kernel), not {type(fn).__name__} {getattr(fn, '__qualname__', '')!s}; "
            "a function that uses a GPU itself asks for device='gpu'"
        )
    if device == "gpu":
        return "", {**resources, "gpu": max(1, gpus)}
    return str(device), dict(resources)
