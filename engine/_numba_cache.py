"""Drop numba's on-disk cache when any engine source changed.

numba keys a cached kernel on the timestamp and size of the file that defines it, not on the functions it calls
from other modules: after an edit to ``highdim/cones.py`` (or a ``git pull`` that touched only it), the compiled
region call of ``highdim/cone_kernel.py``, which inlines cones.py's numba functions, kept loading the OLD code, and
its bit-for-bit test failed until the cache was deleted by hand (issue 14, fifth session). A wrong kernel loaded
silently is a wrong number, so the engine keeps one digest of all its sources beside the cache and deletes every
``*.nbi`` / ``*.nbc`` under ``engine/`` when the digest changes; the kernels then recompile on first use (or in
``python -m engine.warmup``). With ``NUMBA_CACHE_DIR`` set the cache lives elsewhere and is not touched.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

STAMP = "numba-sources.sha256"


def sources_digest(root: Path) -> str:
    """sha256 over the relative paths and bytes of every ``*.py`` under ``root``, in sorted order."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def invalidate_stale(root: Path) -> bool:
    """Delete the numba cache files under ``root`` when its sources' digest differs from the stamp in
    ``root/__pycache__``; write the new stamp. True when files were deleted. A read-only tree is left alone."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return False
    stamp = root / "__pycache__" / STAMP
    digest = sources_digest(root)
    try:
        if stamp.exists() and stamp.read_text() == digest:
            return False
        stale = [p for pattern in ("*.nbi", "*.nbc") for p in root.rglob(f"__pycache__/{pattern}")]
        for path in stale:
            path.unlink(missing_ok=True)
        stamp.parent.mkdir(exist_ok=True)
        stamp.write_text(digest)
    except OSError:
        return False
    return bool(stale)
