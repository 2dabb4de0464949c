"""warmstart: where a network starts — weight initialization and transfer learning.

The front door::

    import warmstart as ws
    r = ws.train("photos/", weights="imagenet", strategy="finetune-all", epochs=5)   # the recipe of `warmstart train`
    r.model, r.run_dir, r.summary, r.history, r.predict(["cat.jpg"])                 # inline HTML in a notebook
    ws.cache()                                      # the cache folder: list; ws.cache("prune", older_than=30), "clear"

Every name below is imported on first use (PEP 562), so ``import warmstart`` and ``warmstart --help`` stay
free of torch; ``UserError`` (what every fixable problem raises) is plain Python and imported now.
"""

from __future__ import annotations

from warmstart._lazy import lazy_names

from warmstart.errors import UserError

__version__ = "0.1.0"

#: public name -> module that defines it (imported lazily)
_LAZY = {
    # verbs
    "train": "warmstart.api",
    "compare": "warmstart.api",
    "rank": "warmstart.api",
    "load_run": "warmstart.api",
    "symmetry": "warmstart.api",
    "depth": "warmstart.api",
    "cache": "warmstart.data.cachestore",
    "demo": "warmstart.api",
    "path": "warmstart.api",
    "apply_init": "warmstart.init.spec",
    "symmetry_report": "warmstart.init.symmetry",
    "load_data": "warmstart.data.loading",
    "fetch": "warmstart.data.fetch",
    "resolve_weights": "warmstart.transfer.weights",
    "fit": "warmstart.engine.loop",
    "list_models": "warmstart.transfer.registry",
    "get_model": "warmstart.transfer.registry",
    "create_model": "warmstart.transfer.registry",  # the same door as get_model, under its older name
    # the types they take and return
    "TrainResult": "warmstart.results",
    "CompareResult": "warmstart.results",
    "RankResult": "warmstart.results",
    "SymmetryResult": "warmstart.results",
    "DepthResult": "warmstart.results",
    "PathResult": "warmstart.results",
    "DemoResult": "warmstart.results",
    "TrainConfig": "warmstart.engine.config",
}

__all__ = ["UserError", "__version__", *_LAZY]


__getattr__, __dir__ = lazy_names(__name__, _LAZY, aliases={"create_model": "get_model"})
