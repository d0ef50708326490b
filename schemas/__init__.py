"""Deprecated: the old home of the latent dataset contracts, kept for one release.

`schemas` held the contracts, the storage layer and the audio rule together. They now live in
`losatok_data` (contracts, reader, writer, verify, `losatok-data`), `losatok_storage`
(filesystems with retries, tar I/O, secrets, the fault proxy) and `losatok_input` (what counts
as audio). `import schemas` and `import schemas.<module>` still work, with a DeprecationWarning
naming the new path; the name `schemas` is also a PyPI distribution's, which is one reason it goes.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType

# old module -> its new home
MOVED = {
    "audio_shards": "losatok_input.rule",
    "faults": "losatok_storage.testing",
    "retry": "losatok_storage.retry",
    "secrets": "losatok_storage.secrets",
    "storage": "losatok_storage.filesystem",
    "tario": "losatok_storage.tario",
    **{
        name: f"losatok_data.{name}"
        for name in [
            "card",
            "checksums",
            "cli",
            "errors",
            "fields",
            "index",
            "layout",
            "ledger",
            "manifest",
            "reader",
            "sample",
            "stats",
            "testing",
            "verify",
            "versioning",
            "writer",
        ]
    },
}


def _warn(old: str, new: str) -> None:
    warnings.warn(
        f"{old} moved to {new}; the old path goes in the next release", DeprecationWarning, stacklevel=3
    )


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers `import schemas.<old>` with the module at its new home."""

    def find_spec(self, fullname: str, path: object = None, target: object = None):  # noqa: ANN201
        old = fullname.removeprefix(f"{__name__}.")
        if fullname.startswith(f"{__name__}.") and old in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec) -> ModuleType:  # noqa: ANN001
        new = MOVED[spec.name.removeprefix(f"{__name__}.")]
        _warn(spec.name, new)
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        pass  # already executed at its new home


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())

_warn("schemas", "losatok_data")
from losatok_data import *  # noqa: E402, F403
from losatok_data import __all__  # noqa: E402, F401
