"""Model downloads against a real HTTP server on 127.0.0.1 (Range support, dropped connections,
404s), and the manifest-driven install on top of them."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import re
import socket
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from installer.download import (
    CHUNK,
    ChecksumMismatch,
    DiskFull,
    NetworkError,
    NotFound,
    ProgressBar,
    VerifiedRecord,
    download,
    format_duration,
    format_progress,
    format_size,
    git_blob_id,
    part_path,
)
from installer.models import RECORD_NAME, ModelFile, install_models, purge_downloads

FAST = {"backoff": 0.0, "timeout": 5.0}


class FileServer(http.server.ThreadingHTTPServer):
    """Serves `files` by path; records each GET's path and Range header.

    `drop_after[path] = [n, ...]`: the next answers for path stop after n bytes (the connection
    closes mid-file); later answers are whole.
    """

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.redirects: dict[str, str] = {}
        self.drop_after: dict[str, list[int]] = {}
        self.claimed_length: dict[str, int] = {}
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []
        # path -> the SHA-256 stated for it, as the Hugging Face hub does for Git LFS files: a HEAD is
        # answered by a redirect to the file carrying it in X-Linked-Etag.
        self.stated: dict[str, str] = {}
        # path -> the ETag header of its HEAD answer, as the hub sends a git blob id for a file kept in git.
        self.etags: dict[str, str] = {}

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{urllib.parse.quote(path)}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FileServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        if path in self.server.redirects:
            self.send_response(302)
            self.send_header("Location", self.server.redirects[path])
        elif path not in self.server.files:
            self.send_error(404)
            return
        elif path in self.server.stated:
            self.send_response(302)
            self.send_header("X-Linked-Etag", f'"{self.server.stated[path]}"')
            self.send_header("Location", self.server.url(path + ".stored"))
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.server.files[path])))
        if path in self.server.etags:
            self.send_header("ETag", self.server.etags[path])
        self.end_headers()

    def do_GET(self) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        requested = self.headers.get("Range")
        self.server.requests.append((path, requested))
        if path in self.server.redirects:
            self.send_response(302)
            self.send_header("Location", self.server.redirects[path])
            self.end_headers()
            return
        if path in self.server.claimed_length:
            self.send_response(200)
            self.send_header("Content-Length", str(self.server.claimed_length[path]))
            self.end_headers()
            return
        data = self.server.files.get(path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if requested and not self.server.ignore_range:
            start = int(requested.removeprefix("bytes=").removesuffix("-"))
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if self.server.drop_after.get(path):
            body = body[: self.server.drop_after[path].pop(0)]
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[FileServer]:
    files = FileServer()
    thread = threading.Thread(target=files.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield files
    files.shutdown()
    files.server_close()


def payload(size: int, seed: int = 0) -> bytes:
    return bytes((index * 31 + seed) % 251 for index in range(size))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git_blob(data: bytes) -> str:
    """The id git gives these bytes, as the Hugging Face hub states it for a file kept in git itself."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_download_places_the_verified_file_and_reports_progress(server: FileServer, tmp_path: Path) -> None:
    data = payload(3 * 2**20 + 5)
    server.files["/model.safetensors"] = data
    seen: list[tuple[int, int | None]] = []
    dest = tmp_path / "model.safetensors"
    download(server.url("/model.safetensors"), dest, sha(data), progress=lambda *p: seen.append(p), **FAST)
    assert dest.read_bytes() == data
    assert not part_path(dest).exists()
    assert seen[-1] == (len(data), len(data))


def test_dropped_connection_resumes_with_a_range_request(server: FileServer, tmp_path: Path) -> None:
    data = payload(2_500_000)
    server.files["/big.bin"] = data
    server.drop_after["/big.bin"] = [1_000_000]
    dest = tmp_path / "big.bin"
    download(server.url("/big.bin"), dest, sha(data), **FAST)
    assert dest.read_bytes() == data
    assert server.requests == [("/big.bin", None), ("/big.bin", "bytes=1000000-")]


def test_part_left_by_an_earlier_run_is_resumed(server: FileServer, tmp_path: Path) -> None:
    data = payload(100_000)
    server.files["/m.bin"] = data
    dest = tmp_path / "m.bin"
    part_path(dest).write_bytes(data[:60_000])
    download(server.url("/m.bin"), dest, sha(data), **FAST)
    assert dest.read_bytes() == data
    assert server.requests == [("/m.bin", "bytes=60000-")]


def test_server_ignoring_range_makes_the_download_start_over(server: FileServer, tmp_path: Path) -> None:
    data = payload(100_000)
    server.files["/m.bin"] = data
    server.ignore_range = True
    dest = tmp_path / "m.bin"
    part_path(dest).write_bytes(data[:60_000])
    download(server.url("/m.bin"), dest, sha(data), **FAST)
    assert dest.read_bytes() == data


def test_part_longer_than_the_file_is_discarded(server: FileServer, tmp_path: Path) -> None:
    data = payload(1000)
    server.files["/m.bin"] = data
    dest = tmp_path / "m.bin"
    part_path(dest).write_bytes(payload(5000, seed=3))
    download(server.url("/m.bin"), dest, sha(data), **FAST)
    assert dest.read_bytes() == data
    assert server.requests == [("/m.bin", "bytes=5000-"), ("/m.bin", None)]


def test_complete_part_is_moved_into_place(server: FileServer, tmp_path: Path) -> None:
    data = payload(1000)
    server.files["/m.bin"] = data
    dest = tmp_path / "m.bin"
    part_path(dest).write_bytes(data)
    download(server.url("/m.bin"), dest, sha(data), **FAST)
    assert dest.read_bytes() == data
    assert server.requests == [("/m.bin", "bytes=1000-")]


def test_wrong_sha256_is_refused_retried_and_never_placed(server: FileServer, tmp_path: Path) -> None:
    data = payload(50_000)
    server.files["/m.bin"] = data
    dest = tmp_path / "models" / "m.bin"
    expected = "0" * 64
    with pytest.raises(ChecksumMismatch) as caught:
        download(server.url("/m.bin"), dest, expected, retries=2, **FAST)
    assert len(server.requests) == 3
    assert not dest.exists() and not part_path(dest).exists()
    assert sha(data) in str(caught.value) and expected in str(caught.value)
    assert "what to do:" in str(caught.value)


def test_connection_that_keeps_dropping_fails_and_the_next_run_resumes(server: FileServer, tmp_path: Path) -> None:
    data = payload(50_000)
    server.files["/m.bin"] = data
    server.drop_after["/m.bin"] = [20_000, 10_000]
    dest = tmp_path / "m.bin"
    with pytest.raises(NetworkError):
        download(server.url("/m.bin"), dest, sha(data), retries=1, **FAST)
    assert not dest.exists()
    assert part_path(dest).stat().st_size == 30_000
    download(server.url("/m.bin"), dest, sha(data), retries=0, **FAST)
    assert dest.read_bytes() == data
    assert [r for _, r in server.requests] == [None, "bytes=20000-", "bytes=30000-"]


def test_404_stops_at_once_with_a_clear_error(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "gone.safetensors"
    url = server.url("/gone.safetensors")
    with pytest.raises(NotFound) as caught:
        download(url, dest, "0" * 64, **FAST)
    message = str(caught.value)
    assert url in message and "404" in message
    assert str(dest) in message  # the hint says where to put a file downloaded by hand
    assert len(server.requests) == 1
    assert not dest.exists()


def test_paths_with_spaces_and_redirects(server: FileServer, tmp_path: Path) -> None:
    data = payload(10_000)
    server.files["/files/my model v2.safetensors"] = data
    server.redirects["/resolve/my model.safetensors"] = server.url("/files/my model v2.safetensors")
    dest = tmp_path / "my models" / "sub folder" / "my model.safetensors"
    download(server.url("/resolve/my model.safetensors"), dest, sha(data), **FAST)
    assert dest.read_bytes() == data


def test_no_network_is_reported_with_the_offline_option(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(NetworkError) as caught:
        download(f"http://127.0.0.1:{port}/m.bin", tmp_path / "m.bin", "0" * 64, retries=1, **FAST)
    assert "refused" in str(caught.value) and "--offline" in str(caught.value)


def test_file_larger_than_the_free_space_is_refused_before_writing(server: FileServer, tmp_path: Path) -> None:
    server.claimed_length["/huge.bin"] = 10**18
    dest = tmp_path / "huge.bin"
    with pytest.raises(DiskFull) as caught:
        download(server.url("/huge.bin"), dest, "0" * 64, **FAST)
    assert str(tmp_path) in str(caught.value) and "--dir" in str(caught.value)
    assert not dest.exists()


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 KB"),
        (2_500_000, "2.5 MB"),
        (4_270_000_000, "4.3 GB"),
        (10**13, "10000.0 GB"),
    ],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


@pytest.mark.parametrize(("seconds", "text"), [(0, "0:00"), (59.9, "0:59"), (61, "1:01"), (3725, "1:02:05")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("done", "total", "speed", "text"),
    [
        (0, 2_000_000_000, 0.0, "m  [--------------------]   0%  0 B / 2.0 GB  0 B/s  ETA ?"),
        (500_000_000, 2_000_000_000, 50e6, "m  [#####---------------]  25%  500.0 MB / 2.0 GB  50.0 MB/s  ETA 0:30"),
        (2_000_000_000, 2_000_000_000, 50e6, "m  [####################] 100%  2.0 GB / 2.0 GB  50.0 MB/s  ETA 0:00"),
        (1500, None, 1000.0, "m  1.5 KB  1.0 KB/s"),
    ],
)
def test_format_progress(done: int, total: int | None, speed: float, text: str) -> None:
    assert format_progress("m", done, total, speed) == text


def test_progress_bar_prints_whole_lines_when_not_on_a_terminal() -> None:
    stream = io.StringIO()
    bar = ProgressBar("m", stream=stream, quiet_interval=3600)
    bar(10, 100)
    bar(50, 100)  # within the interval: not printed
    bar(100, 100)  # finished: always printed
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[-1].startswith("m  [####################] 100%")


def test_record_trusts_only_unchanged_files(tmp_path: Path) -> None:
    file = tmp_path / "sub" / "a.bin"
    file.parent.mkdir()
    file.write_bytes(b"abc")
    record = VerifiedRecord(tmp_path / RECORD_NAME)
    record.add(file, sha(b"abc"))
    assert VerifiedRecord(tmp_path / RECORD_NAME).is_verified(file, sha(b"abc"))
    assert not record.is_verified(file, "0" * 64)
    file.write_bytes(b"abcd")
    assert not record.is_verified(file, sha(b"abc"))


# ---- the manifest's files into a models folder ----


def model_file(server: FileServer, name: str, data: bytes, destination: str) -> ModelFile:
    server.files[f"/{name}"] = data
    return ModelFile(name, server.url(f"/{name}"), sha(data), destination, "sd15", "checkpoint-artwork")


def quiet(name: str):
    return lambda done, total: None


def test_rerun_skips_verified_files_and_verify_rehashes(server: FileServer, tmp_path: Path) -> None:
    models = tmp_path / "my models"
    files = [
        model_file(server, "a.safetensors", payload(30_000, 1), "checkpoints/a.safetensors"),
        model_file(server, "b.safetensors", payload(20_000, 2), "loras/b.safetensors"),
    ]
    log: list[str] = []
    install_models(files, models, log=log.append, progress=quiet, **FAST)
    assert [line.split(": ")[1] for line in log] == ["downloaded", "downloaded"]
    assert len(server.requests) == 2

    # Damage a file without changing its size or time: the record is trusted on a re-run...
    target = models / "checkpoints" / "a.safetensors"
    stat = target.stat()
    target.write_bytes(payload(30_000, 9))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    log.clear()
    install_models(files, models, log=log.append, progress=quiet, **FAST)
    assert [line.split(": ")[1] for line in log] == ["already verified", "already verified"]
    assert len(server.requests) == 2

    # ...and --verify re-hashes everything and fetches the damaged one again.
    log.clear()
    install_models(files, models, verify=True, log=log.append, progress=quiet, **FAST)
    assert [line.split(": ")[1] for line in log] == ["downloaded (replacing a damaged copy)", "verified"]
    assert target.read_bytes() == payload(30_000, 1)
    assert len(server.requests) == 3


def test_a_file_without_a_recorded_sha256_is_checked_against_the_one_its_host_states(
        server: FileServer, tmp_path: Path) -> None:
    data = payload(5000, 3)
    for name, stated in (("good", sha(data)), ("wrong", sha(b"other")), ("silent", None)):
        server.files[f"/{name}.safetensors"] = data
        if stated:
            server.stated[f"/{name}.safetensors"] = stated
    files = [ModelFile(name, server.url(f"/{name}.safetensors"), None, f"vae-approx/{name}.safetensors", "sd15",
                       "tiny-autoencoder") for name in ("good", "wrong", "silent")]
    models, log = tmp_path / "models", []
    failures = install_models(files, models, log=log.append, progress=quiet, **FAST)
    assert log[0] == "  good: downloaded, checked against the SHA-256 its host states"
    assert (models / "vae-approx" / "good.safetensors").read_bytes() == data
    wrong, silent = failures
    assert wrong.file.name == "wrong"
    assert f"gave a file with SHA-256 {sha(data)}, expected {sha(b'other')}" in wrong.reason
    assert silent.file.name == "silent" and "states no SHA-256" in silent.reason
    assert not (models / "vae-approx" / "wrong.safetensors").exists()
    assert not (models / "vae-approx" / "silent.safetensors").exists()
    # The hash it was placed with stands in on a re-run: trusted unchanged, re-hashed with --verify.
    log.clear()
    install_models(files[:1], models, log=log.append, progress=quiet, **FAST)
    install_models(files[:1], models, verify=True, log=log.append, progress=quiet, **FAST)
    assert log == ["  good: already verified", "  good: verified"]


@pytest.mark.parametrize("data", [b"", b"Hello, World!", payload(CHUNK + 7)], ids=["empty", "short", "two chunks"])
def test_git_blob_id_is_the_id_git_gives_the_bytes(tmp_path: Path, data: bytes) -> None:
    file = tmp_path / "f"
    file.write_bytes(data)
    git = subprocess.run(["git", "hash-object", str(file)], capture_output=True, text=True, check=True)
    assert git_blob_id(file) == git.stdout.strip() == git_blob(data)


CONFIG = b'{"model_type": "depth_anything"}\n'
OTHER = b'{"model_type": "dpt"}\n'


@pytest.mark.parametrize(
    ("etag", "redirected", "refusal"),
    [
        pytest.param(f'"{git_blob(CONFIG)}"', False, None, id="blob id"),
        pytest.param(f'W/"{git_blob(CONFIG)}"', False, None, id="weak tag"),
        pytest.param(f'"{git_blob(OTHER)}"', False,
                     f"gave a file with git blob id {git_blob(CONFIG)}, expected {git_blob(OTHER)}", id="tampered"),
        pytest.param(f'"{git_blob(CONFIG).upper()}"', False, "states no SHA-256", id="upper case"),
        pytest.param(f'"{hashlib.md5(CONFIG).hexdigest()}"', False, "states no SHA-256", id="not a blob id"),
        pytest.param(f'"{git_blob(CONFIG)}"', True, "states no SHA-256", id="on a redirect"),
        pytest.param(None, False, "states no SHA-256", id="no tag"),
    ],
)
def test_a_file_kept_in_git_is_checked_against_the_blob_id_its_host_states(
        server: FileServer, tmp_path: Path, etag: str | None, redirected: bool, refusal: str | None) -> None:
    path = "/resolve/main/config.json"
    if redirected:
        server.files["/stored/config.json"] = CONFIG
        server.redirects[path] = server.url("/stored/config.json")
    else:
        server.files[path] = CONFIG
    if etag is not None:
        server.etags[path] = etag
    file = ModelFile("config", server.url(path), None, "annotators/depth/config.json", "any", "annotator-depth")
    models, log = tmp_path / "models", []
    failures = install_models([file], models, log=log.append, progress=quiet, **FAST)
    target = models / "annotators" / "depth" / "config.json"
    if refusal is None:
        assert failures == [] and log == ["  config: downloaded, checked against the git blob id its host states"]
        assert target.read_bytes() == CONFIG
        # Its SHA-256 is recorded as for any placed file, and stands in for the list's on a re-run.
        assert VerifiedRecord(models / RECORD_NAME).recorded_sha256(target) == sha(CONFIG)
        install_models([file], models, verify=True, log=log.append, progress=quiet, **FAST)
        assert log[-1] == "  config: verified"
    else:
        (failure,) = failures
        assert refusal in failure.reason and file.url in failure.reason
        assert not target.exists() and not part_path(target).exists()


def test_offline_folder_supplies_files_checked_like_downloads(tmp_path: Path) -> None:
    good, bad = payload(1000, 1), payload(1000, 2)
    offline = tmp_path / "usb stick"
    (offline / "nested").mkdir(parents=True)
    (offline / "nested" / "a.safetensors").write_bytes(good)
    (offline / "b.safetensors").write_bytes(bad)
    url = "https://example.invalid/x"
    a = ModelFile("a", url, sha(good), "checkpoints/a.safetensors", "sd15", "checkpoint-artwork")
    b = ModelFile("b", url, sha(good), "loras/b.safetensors", "sd15", "lora-live")
    c = ModelFile("c", url, sha(good), "loras/c.safetensors", "sd15", "lora-live")
    models = tmp_path / "models"
    install_models([a], models, offline_dir=offline, log=lambda _: None, progress=quiet)
    assert (models / "checkpoints" / "a.safetensors").read_bytes() == good
    (failed_b, failed_c) = install_models([b, c], models, offline_dir=offline, log=lambda _: None, progress=quiet)
    assert failed_b.file == b and f"has SHA-256 {sha(bad)}, expected {sha(good)}" in failed_b.reason
    assert not (models / "loras" / "b.safetensors").exists()
    assert not part_path(models / "loras" / "b.safetensors").exists()
    assert failed_c.file == c and re.search(r"c\.safetensors\) is not in .*usb stick", failed_c.reason)
    # Without a recorded SHA-256 there is nothing to check a copy against: it is placed, and says so.
    log: list[str] = []
    unrecorded = ModelFile("a", url, None, "vae-approx/a.safetensors", "sd15", "tiny-autoencoder")
    assert install_models([unrecorded], models, offline_dir=offline, log=log.append, progress=quiet) == []
    assert log == ["  a: copied, not verified (the model list records no SHA-256 for it)"]


def test_purge_removes_only_downloaded_files(server: FileServer, tmp_path: Path) -> None:
    models = tmp_path / "models"
    files = [model_file(server, "a.safetensors", payload(1000), "checkpoints/a.safetensors")]
    install_models(files, models, log=lambda _: None, progress=quiet, **FAST)
    (models / "loras").mkdir()
    part_path(models / "loras" / "b.safetensors").write_bytes(b"half")
    (models / "checkpoints" / "mine.safetensors").write_bytes(b"user's own")
    assert purge_downloads(models) == 2
    assert sorted(p.relative_to(models).as_posix() for p in models.rglob("*")) == [
        "checkpoints",
        "checkpoints/mine.safetensors",
    ]
