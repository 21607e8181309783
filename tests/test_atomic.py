import os
import stat

import pytest
import torch

from mcil.atomic import atomic_torch_save, atomic_write, atomic_write_text


def test_text_round_trip_with_plain_file_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "sub" / "a.md", "x\r\ny\n")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"x\r\ny\n"  # newlines as given
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600
    assert [p.name for p in path.parent.iterdir()] == ["a.md"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = atomic_write_text(tmp_path / "r.json", "old")

    def boom(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(path, boom)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_torch_save(tmp_path):
    path = atomic_torch_save({"w": torch.arange(3)}, tmp_path / "s.pt")
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(3))
