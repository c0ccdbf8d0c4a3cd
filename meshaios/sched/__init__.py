"""The scheduler's pure core: runtime model (``model``), gossiped load view (``loadview``), placement policies
(``placement``, ``eft``) and work stealing (``stealing``). See ``docs/scheduling.md``."""
