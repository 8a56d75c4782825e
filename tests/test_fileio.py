"""Safe writes: atomic replace, unique temporary names, no writing through symlinks."""

import os

import pytest

from multireward_grpo._fileio import atomic_write, atomic_writer, open_append
from multireward_grpo._validate import check_channel_index, check_choice, check_float, did_you_mean


def test_atomic_write_replaces_a_symlink_and_leaves_its_target_alone(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    link = tmp_path / "out.txt"
    link.symlink_to(target)
    atomic_write(link, "new")
    assert target.read_text() == "keep me"
    assert not link.is_symlink() and link.read_text() == "new"


def test_atomic_writer_keeps_the_old_file_on_error_and_leaves_no_temp(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_writer(path, "wb") as fh:
            fh.write(b"half")
            raise RuntimeError("crash mid-write")
    assert path.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["data.bin"]


def test_atomic_writer_temp_names_are_unique_and_in_the_target_folder(tmp_path):
    seen = []
    for _ in range(3):
        with atomic_writer(tmp_path / "x.json") as fh:
            seen += [name for name in os.listdir(tmp_path) if name != "x.json"]
            fh.write("{}")
    assert len(seen) == 3 and len(set(seen)) == 3
    assert all(name.startswith(".x.json.") and name != ".x.json.tmp" for name in seen)
    assert os.listdir(tmp_path) == ["x.json"]


def test_open_append_refuses_a_symlink(tmp_path):
    target = tmp_path / "victim"
    target.write_text("intact")
    link = tmp_path / "log.jsonl"
    link.symlink_to(target)
    with pytest.raises(ValueError, match="symbolic link"):
        open_append(link)
    assert target.read_text() == "intact"
    with open_append(tmp_path / "fresh.jsonl") as fh:
        fh.write("a\n")
    with open_append(tmp_path / "fresh.jsonl") as fh:
        fh.write("b\n")
    assert (tmp_path / "fresh.jsonl").read_text() == "a\nb\n"


def test_validators():
    assert did_you_mean("nna", ["na", "an"]) == " (did you mean 'na'?)"
    assert did_you_mean("zzzz", ["na", "an"]) == ""
    with pytest.raises(ValueError, match=r"unknown mode 'grop' \(did you mean 'grpo'\?\)"):
        check_choice("mode", "grop", ["grpo", "dr_grpo"])
    assert check_float("lr", "1e-3", minimum=0, strict_minimum=True) == 1e-3
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError):
            check_float("lr", bad, minimum=0, strict_minimum=True)
    for bad in (None, True, "abc", [1.0]):
        with pytest.raises(TypeError):
            check_float("lr", bad)
    with pytest.raises(ValueError, match="negative"):
        check_channel_index("gate", -2, 3)
    with pytest.raises(ValueError, match="only 3 channels"):
        check_channel_index("gate", 3, 3)
    assert check_channel_index("gate", 2, 3) == 2
