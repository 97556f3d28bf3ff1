"""Model fingerprints (server/models/fingerprints.py): every machine of a cluster must hold the same
file under each name, and a replica whose files differ from the front end's is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.cluster.remote import RemoteWorker
from server.cluster.replica import ReplicaInfo
from server.models import fingerprints
from server.models.fingerprints import differing, fingerprint

BIG = 3 * fingerprints.SAMPLE


def rewritten(path: Path, change) -> Path:
    data = bytearray(path.read_bytes())
    change(data)
    path.write_bytes(bytes(data))
    return path


def flip(at: int):
    def change(data: bytearray) -> None:
        data[at] ^= 0xFF
    return change


CHANGES = [
    # what, change, noticed
    ("the same bytes", lambda data: None, False),
    ("a byte of the header", flip(10), True),
    ("a byte near the end", flip(BIG - 5), True),
    ("truncated", lambda data: data.__delitem__(slice(BIG // 2, None)), True),
    # Not read: the sample is what makes a start with 7 GB checkpoints take seconds.
    ("a byte in the unread middle", flip(BIG // 2), False),
]


@pytest.mark.parametrize(("what", "change", "noticed"), CHANGES, ids=[c[0] for c in CHANGES])
def test_a_file_fingerprint(tmp_path: Path, what: str, change, noticed: bool) -> None:
    original = tmp_path / "a" / "model.safetensors"
    copy = tmp_path / "b" / "model.safetensors"
    for path in (original, copy):
        path.parent.mkdir()
        path.write_bytes(bytes(range(256)) * (BIG // 256))
    assert (fingerprint(original) != fingerprint(rewritten(copy, change))) == noticed


def test_a_folder_fingerprint_covers_its_files_names(tmp_path: Path) -> None:
    for side in ("a", "b"):
        (tmp_path / side / "unet").mkdir(parents=True)
        (tmp_path / side / "unet" / "weights.safetensors").write_bytes(b"w" * 100)
    assert fingerprint(tmp_path / "a") == fingerprint(tmp_path / "b")
    (tmp_path / "b" / "unet" / "weights.safetensors").rename(tmp_path / "b" / "unet" / "other.safetensors")
    assert fingerprint(tmp_path / "a") != fingerprint(tmp_path / "b")


def test_differing_names_only_the_shared_names_with_other_files() -> None:
    assert differing({"checkpoint/a": "1", "checkpoint/b": "2"}, {"checkpoint/a": "1", "checkpoint/b": "3",
                                                                   "checkpoint/c": "4"}) == ["checkpoint/b"]


def test_a_replica_whose_files_differ_is_refused() -> None:
    """What the front end does with a replica's fingerprints when it starts or comes back."""
    info = ReplicaInfo(device="cpu (float32)", node="10.0.0.2", pid=1, loaded=[],
                       models={"checkpoint/a": "1", "checkpoint/b": "2"})
    same = RemoteWorker("underpaint-0", None, info, {"checkpoint/a": "1", "checkpoint/c": "3"}, outputs=None)
    assert same.has("a") and same.has("b") and not same.has("c") and not same.refused
    other = RemoteWorker("underpaint-1", None, info, {"checkpoint/a": "9"}, outputs=None)
    assert other.refused == ["checkpoint/a"] and not other.has("a") and not other.has("b")
