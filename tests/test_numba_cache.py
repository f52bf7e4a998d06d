"""``engine._numba_cache``: numba's disk cache is dropped when any engine source changes (numba itself keys a kernel
on its own file only, so a kernel inlining an edited module's functions kept loading the old code)."""

from __future__ import annotations

from engine._numba_cache import STAMP, invalidate_stale, sources_digest


def _tree(tmp_path):
    root = tmp_path / "pkg"
    (root / "sub" / "__pycache__").mkdir(parents=True)
    (root / "a.py").write_text("x = 1\n")
    (root / "sub" / "b.py").write_text("y = 2\n")
    return root


def _cache_files(root):
    files = [root / "sub" / "__pycache__" / "b.f-1.py311.nbi", root / "sub" / "__pycache__" / "b.f-1.py311.1.nbc"]
    for f in files:
        f.write_bytes(b"cache")
    return files


def test_first_import_and_an_edit_in_another_module_drop_the_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    root = _tree(tmp_path)
    files = _cache_files(root)
    assert invalidate_stale(root)  # no stamp yet: whatever is cached may be stale
    assert not any(f.exists() for f in files)
    assert (root / "__pycache__" / STAMP).read_text() == sources_digest(root)
    files = _cache_files(root)
    assert not invalidate_stale(root)  # nothing changed: the cache stays
    assert all(f.exists() for f in files)
    (root / "a.py").write_text("x = 3\n")  # an edit in ANOTHER module than the cached kernel's
    assert invalidate_stale(root)
    assert not any(f.exists() for f in files)


def test_a_renamed_file_changes_the_digest(tmp_path):
    root = _tree(tmp_path)
    before = sources_digest(root)
    (root / "a.py").rename(root / "c.py")
    assert sources_digest(root) != before


def test_numba_cache_dir_is_left_alone(monkeypatch, tmp_path):
    root = _tree(tmp_path)
    files = _cache_files(root)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert not invalidate_stale(root)
    assert all(f.exists() for f in files)
