"""Import torchvision without importing ``torch._dynamo`` (about 1.5 s of every run's start-up, measured).

``import torchvision`` imports all of ``torchvision.ops``, and ``torchvision.ops.roi_align`` imports one helper,
``is_compile_supported``, from ``torch._dynamo.utils``, which loads the whole of TorchDynamo -- used only if
someone calls ``roi_align`` under ``torch.compile``. warmstart never does on its default paths, so while
torchvision is first imported a stand-in ``torch._dynamo.utils`` offers that one name, a function that imports
the real one on its first call; the stand-in is removed from ``sys.modules`` right after, so a later
``import torch._dynamo`` (``torch.compile``, ``--compile``) loads the real package as usual.

Import this module before anything else imports torchvision (``warmstart.data`` does); if torchvision or
``torch._dynamo`` is already loaded it does nothing.
"""

from __future__ import annotations

import sys
import types

from warmstart import _process


def _is_compile_supported(device_type):
    from torch._dynamo.utils import is_compile_supported

    return is_compile_supported(device_type)


def _import_torchvision() -> None:
    if "torchvision" in sys.modules or "torch._dynamo" in sys.modules:
        return
    import torch  # noqa: F401  (the real package; only its _dynamo subpackage is stood in for)

    package = types.ModuleType("torch._dynamo")
    package.__path__ = []  # type: ignore[attr-defined]
    utils = types.ModuleType("torch._dynamo.utils")
    utils.is_compile_supported = _is_compile_supported  # type: ignore[attr-defined]
    package.utils = utils  # type: ignore[attr-defined]
    sys.modules["torch._dynamo"], sys.modules["torch._dynamo.utils"] = package, utils
    try:
        import torchvision  # noqa: F401
    except ImportError:
        # another torchvision release may want more of torch._dynamo at import time: forget the half-imported
        # torchvision and import it the ordinary way below (slower, never broken)
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
    finally:
        for name in ("torch._dynamo.utils", "torch._dynamo"):
            if sys.modules.get(name) in (package, utils):
                del sys.modules[name]
        if torch.__dict__.get("_dynamo") is package:
            del torch._dynamo
    import torchvision  # noqa: F401, F811  (a no-op when the fast import above worked)


_import_torchvision()
_process.settled()  # a command's own process: what torch and torchvision made lives until exit
