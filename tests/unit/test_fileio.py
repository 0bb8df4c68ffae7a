"""Atomic writes leave the old file intact when the writer fails."""
import pytest

from gluondet.fileio import atomic_path, atomic_write_text


def test_atomic_write_replaces(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_failed_write_keeps_old_file_and_no_temp(tmp_path):
    target = tmp_path / "best.params"
    target.write_text("good")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["best.params"]


def test_temp_name_keeps_suffix(tmp_path):
    with atomic_path(tmp_path / "curves.png") as tmp:
        assert tmp.endswith(".png")
        open(tmp, "wb").close()


def test_atomic_writes_respect_the_umask(tmp_path):
    import os
    import stat

    from gluondet.fileio import atomic_write_text

    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o640  # not mkstemp's 0600


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_respect_the_umask(tmp_path, umask, mode):
    import os
    import stat

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "split.txt", "a\n")
        with atomic_path(tmp_path / "w.params") as tmp:
            open(tmp, "wb").close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "split.txt").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "w.params").stat().st_mode) == mode
