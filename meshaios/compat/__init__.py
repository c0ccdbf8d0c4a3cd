"""Interfaces other Python libraries expect: ``concurrent.futures.Executor`` and a Dask scheduler."""

from meshaios.compat.executor import MeshExecutor

__all__ = ["MeshExecutor"]
