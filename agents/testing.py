"""Test helpers for the agents' side (importable by the project's tests and by users' own suites)."""

from __future__ import annotations

import base64
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

__all__ = ["malicious_sb3_zip"]


def malicious_sb3_zip(src: str | Path, dst: str | Path, marker: str | Path) -> Path:
    """Copy the SB3 zip ``src`` to ``dst`` with a ``data`` entry whose pickle writes the file ``marker`` when it is
    unpickled: what a hostile policy file looks like (loading it must be refused unless pickles are trusted)."""

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (exec, (f"open({str(marker)!r}, 'w').write('pwned')",))

    with zipfile.ZipFile(src) as zin:
        entries = {n: zin.read(n) for n in zin.namelist()}
    data = json.loads(entries["data"])
    data["evil"] = {":type:": "<class 'object'>", ":serialized:": base64.b64encode(pickle.dumps(Payload())).decode()}
    entries["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(dst, "w") as zout:
        for n, b in entries.items():
            zout.writestr(n, b)
    return Path(dst)
