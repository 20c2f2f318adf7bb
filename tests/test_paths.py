"""The one atomic writer: readers see the old file or the new one, never half of one."""
import pytest
import torch

from teachclip_lite.paths import atomic_open, write_atomic


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "state.json"
    write_atomic(target, '{"epoch": 1}')
    with pytest.raises(RuntimeError):
        with atomic_open(target) as f:
            f.write(b'{"epo')
            raise RuntimeError("killed mid-write")
    assert target.read_text() == '{"epoch": 1}'
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]


def test_torch_save_through_atomic_open_round_trips(tmp_path):
    blob = {"w": torch.arange(6.0).reshape(2, 3), "step": 7}
    with atomic_open(tmp_path / "ckpt.pt") as f:
        torch.save(blob, f)
    back = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert back["step"] == 7 and torch.equal(back["w"], blob["w"])
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]
