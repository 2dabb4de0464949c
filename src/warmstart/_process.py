"""A command's own process: tell CPython's garbage collector what lives until exit.

Importing torch and torchvision leaves a few hundred thousand objects (modules, functions, classes) that live
as long as the process. CPython's cyclic collector walks all of them in every full collection, and once more
while the interpreter shuts down. Measured on the default transfer run (hymenoptera, 25 epochs, idle 2-core
machine): 6 full collections took 0.55 s, and the interpreter took 0.7-1.1 s to exit after the command had
finished. So a process that runs one command and exits (the ``warmstart`` console script, ``python -m
warmstart``) moves every object that exists once torch and torchvision are imported into the permanent
generation (:func:`gc.freeze`, which exists for this), and does so again when the command has written
everything, so that shutdown skips the walk. Objects frozen are still freed by reference counting; only
cycles among them are left to the operating system at exit.

A notebook, a test or another program that imports warmstart is never touched: only :func:`own` (called by
the console entry point) turns this on.
"""

from __future__ import annotations

import gc

_owned = False


def own() -> None:
    """This process runs one warmstart command, then exits."""
    global _owned
    _owned = True


def settled() -> None:
    """The long-lived part of the heap is in place (torch and torchvision imported; or the command is done)."""
    if _owned:
        gc.freeze()
