"""Large files over HTTP that never land half-written: bytes go to `<name>.part` (resumed with a
Range request after a dropped connection or on the next run), and the file is moved into place
only after its hash matches: the SHA-256 the model list records, or, where it records none, the hash
the host states for the file (`stated_hash`).
"""

from __future__ import annotations

import email.message
import enum
import errno
import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from . import APP_NAME, InstallError
from .network import failure_detail

CHUNK = 1 << 20
USER_AGENT = f"{APP_NAME}-installer"
# Space kept free beyond the download itself, so the disk is not filled to the last byte.
SPACE_MARGIN = 200 * 10**6
SHA256 = re.compile(r"[0-9a-f]{64}")
GIT_BLOB_ID = re.compile(r"[0-9a-f]{40}")
# The header in which the Hugging Face hub states the SHA-256 of a file it keeps in Git LFS.
STATED_SHA256 = "X-Linked-Etag"

Progress = Callable[[int, "int | None"], None]


class DownloadError(InstallError):
    """A file that could not be fetched; retrying later may help."""


class NotFound(DownloadError):
    """The server has no such file (HTTP 404/410): retrying does not help."""


class ChecksumMismatch(DownloadError):
    """Every attempt gave bytes with another hash than the expected one."""


class NetworkError(DownloadError):
    """No answer from the server after every retry."""


class DiskFull(DownloadError):
    """Not enough free space for the file."""


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _hash_file(hasher: hashlib._Hash, path: Path, progress: Progress | None = None) -> str:
    total, done = path.stat().st_size, 0
    with open(path, "rb") as source:
        for block in iter(lambda: source.read(CHUNK), b""):
            hasher.update(block)
            done += len(block)
            if progress:
                progress(done, total)
    return hasher.hexdigest()


def sha256_file(path: Path, progress: Progress | None = None) -> str:
    return _hash_file(hashlib.sha256(), path, progress)


def git_blob_id(path: Path) -> str:
    """The id git gives the file's bytes, as `git hash-object` prints it: the SHA-1 of a
    `blob <size>\\0` header followed by the bytes."""
    header = b"blob %d\0" % path.stat().st_size
    return _hash_file(hashlib.sha1(header, usedforsecurity=False), path)


def format_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def format_progress(name: str, done: int, total: int | None, speed: float, width: int = 20) -> str:
    """One line of the progress bar: name, size, percentage, speed and time left."""
    speed_text = f"{format_size(speed)}/s"
    if not total:
        return f"{name}  {format_size(done)}  {speed_text}"
    fraction = min(done / total, 1.0)
    filled = int(fraction * width)
    bar = "#" * filled + "-" * (width - filled)
    eta = format_duration((total - done) / speed) if speed > 0 else "?"
    return f"{name}  [{bar}] {fraction:4.0%}  {format_size(done)} / {format_size(total)}  {speed_text}  ETA {eta}"


class ProgressBar:
    """Redraws one line on a terminal (at most 10 times a second); elsewhere (logs, CI) prints a
    line every `quiet_interval` seconds so the output stays readable."""

    def __init__(self, name: str, stream: TextIO | None = None, quiet_interval: float = 10.0):
        self.name = name
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = 0.1 if self.tty else quiet_interval
        self.start = time.monotonic()
        self.first: int | None = None
        self.last_draw = float("-inf")

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if self.first is None:
            # Bytes that were already there (a resumed .part) do not count towards the speed.
            self.first, self.start = done, now
        finished = total is not None and done >= total
        if now - self.last_draw < self.interval and not finished:
            return
        self.last_draw = now
        elapsed = now - self.start
        speed = (done - self.first) / elapsed if elapsed > 0 else 0.0
        line = format_progress(self.name, done, total, speed)
        if self.tty:
            self.stream.write("\r" + line + ("\n" if finished else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


class _Part:
    """The `.part` file and the SHA-256 of its bytes, kept in step so a resumed download is
    hashed once, not re-read on every retry."""

    def __init__(self, path: Path):
        self.path = path
        self.hasher = hashlib.sha256()
        self.size = -1

    def sync(self) -> int:
        size = self.path.stat().st_size if self.path.exists() else 0
        if size != self.size:
            self.hasher, self.size = hashlib.sha256(), 0
            if size:
                with open(self.path, "rb") as source:
                    for block in iter(lambda: source.read(CHUNK), b""):
                        self.hasher.update(block)
                        self.size += len(block)
        return self.size

    def restart(self) -> None:
        self.path.unlink(missing_ok=True)
        self.hasher, self.size = hashlib.sha256(), 0

    def append_from(self, source, total: int | None, progress: Progress | None) -> None:
        try:
            with open(self.path, "ab") as out:
                for block in iter(lambda: source.read(CHUNK), b""):
                    out.write(block)
                    self.hasher.update(block)
                    self.size += len(block)
                    if progress:
                        progress(self.size, total)
        except OSError as error:
            if error.errno == errno.ENOSPC:
                raise DiskFull(
                    f"the disk is full while writing {self.path}",
                    f"free some space in {self.path.parent}, then run the installer again (it resumes)",
                ) from error
            raise


class HashKind(enum.Enum):
    SHA256 = "SHA-256"
    # What git names a file's bytes by; the Hugging Face hub states it for a file kept in git itself.
    GIT_BLOB_ID = "git blob id"


@dataclass(frozen=True)
class Expected:
    """The hash a file must have before it is placed."""

    kind: HashKind
    value: str

    def of(self, part: _Part) -> str:
        """The same kind of hash of the part's bytes."""
        return part.hasher.hexdigest() if self.kind is HashKind.SHA256 else git_blob_id(part.path)


def check_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed + SPACE_MARGIN:
        raise DiskFull(
            f"{format_size(needed)} are needed in {folder} but only {format_size(free)} are free",
            "free some space there, or install to another disk with --dir",
        )


def _total_size(response: http.client.HTTPResponse, offset: int) -> int | None:
    content_range = response.headers.get("Content-Range", "")
    if "/" in content_range and content_range.rsplit("/", 1)[1].strip().isdigit():
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _fetch(url: str, part: _Part, timeout: float, progress: Progress | None) -> None:
    offset = part.sync()
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
        if offset and response.status != 206:
            # The server ignored the Range request and sends the whole file.
            part.restart()
            offset = 0
        total = _total_size(response, offset)
        if total is not None:
            check_space(part.path.parent, total - offset)
        part.append_from(response, total, progress)
    if total is not None and part.size < total:
        raise http.client.IncompleteRead(b"", total - part.size)


def _http_error(error: urllib.error.HTTPError, url: str, dest: Path) -> DownloadError | None:
    """The error to stop with, or None when the status is worth retrying."""
    by_hand = f"download it in a browser and save it as {dest}, then run the installer again"
    if error.code in (404, 410):
        return NotFound(
            f"{url} was not found (HTTP {error.code})",
            f"the file may have moved: update Underpaint for a newer model list, or {by_hand}",
        )
    if error.code in (401, 403):
        return DownloadError(f"{url} refused the download (HTTP {error.code})", by_hand)
    return None


def _network_error(error: BaseException, url: str, timeout: float) -> NetworkError:
    host = urllib.parse.urlsplit(url).hostname
    what = "answered with an error" if isinstance(error, urllib.error.HTTPError) else "cannot be reached"
    return NetworkError(
        f"{host} {what}: {failure_detail(error, timeout)}",
        "check the internet connection and run the installer again (finished parts are kept); "
        "on a machine without network, install from a folder with --offline DIR",
    )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # the redirect itself is the answer: it carries the header


def _head(url: str, timeout: float) -> tuple[int, email.message.Message]:
    """The status and headers of the host's answer to a HEAD request. A redirect is read, not
    followed, so what the headers state comes from the host itself, not from where it sends us."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=timeout) as response:
            return response.status, response.headers
    except urllib.error.HTTPError as error:  # a redirect not followed arrives as one
        failure = _http_error(error, url, Path(urllib.parse.urlsplit(url).path).name)
        if failure is not None:
            raise failure from error
        return error.code, error.headers
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as error:
        raise _network_error(error, url, timeout) from error


def _tag_value(headers: email.message.Message, name: str) -> str:
    """An entity tag without its weak marker and quotes: `W/"abc"` → `abc`."""
    return (headers.get(name) or "").strip().removeprefix("W/").strip('"')


def stated_hash(url: str, timeout: float = 60.0) -> Expected:
    """The hash the host states for the file at `url`, for a file the model list has no SHA-256 for.

    The Hugging Face hub states the SHA-256 of a file it keeps in Git LFS in the `X-Linked-Etag` header
    of its redirect to the file's storage. A file it keeps in git itself (a small config) it serves
    directly, with the file's git blob id as the `ETag` (huggingface_hub's `get_hf_file_metadata`
    reads these two headers). Either is checked against the bytes before the file is placed.
    """
    status, headers = _head(url, timeout)
    sha256 = _tag_value(headers, STATED_SHA256)
    if SHA256.fullmatch(sha256):
        return Expected(HashKind.SHA256, sha256)
    blob_id = _tag_value(headers, "ETag")
    # A redirect's ETag names the redirect, not the file: only the file's own answer counts.
    if 200 <= status < 300 and GIT_BLOB_ID.fullmatch(blob_id):
        return Expected(HashKind.GIT_BLOB_ID, blob_id)
    host = urllib.parse.urlsplit(url).hostname
    raise DownloadError(
        f"{host} states no SHA-256 for {url} (nor, serving the file itself, its git blob id), and the model "
        "list records none, so the file cannot be checked",
        "update Underpaint for a newer model list, or download the file by hand and install it with --offline DIR",
    )


def download(
    url: str,
    dest: Path,
    expected: Expected | str,
    *,
    retries: int = 4,
    backoff: float = 2.0,
    timeout: float = 60.0,
    progress: Progress | None = None,
) -> str:
    """Fetch `url` to `dest`, which appears only with the `expected` hash (a string is a SHA-256);
    returns the placed file's SHA-256.

    Dropped connections resume from the `.part` file after `backoff`, 2×`backoff`, … seconds;
    a file with the wrong hash is deleted and fetched again; a 404 stops at once.
    """
    if isinstance(expected, str):
        expected = Expected(HashKind.SHA256, expected)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _Part(part_path(dest))
    failure: DownloadError | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            _fetch(url, part, timeout, progress)
        except urllib.error.HTTPError as error:
            # 416: the .part is as long as the file or longer. Either it is complete (a run stopped
            # just before moving it into place) or it is not a prefix of the file.
            if error.code != 416 or expected.of(part) != expected.value:
                if error.code == 416:
                    part.restart()
                failure = _http_error(error, url, dest)
                if failure is not None:
                    raise failure from error
                failure = _network_error(error, url, timeout)
                continue
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as error:
            failure = _network_error(error, url, timeout)
            continue
        actual = expected.of(part)
        if actual == expected.value:
            sha256 = part.hasher.hexdigest()
            os.replace(part.path, dest)
            return sha256
        part.restart()
        failure = ChecksumMismatch(
            f"{url} gave a file with {expected.kind.value} {actual}, expected {expected.value}",
            "the file on the server differs from the one Underpaint expects: update Underpaint for "
            "a newer model list, or report the problem if this persists",
        )
    assert failure is not None
    raise failure


def copy_verified(source: Path, dest: Path, sha256: str, progress: Progress | None = None) -> None:
    """Copy a local file (an offline install) with the same guarantee as `download`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _Part(part_path(dest))
    part.restart()
    check_space(dest.parent, source.stat().st_size)
    with open(source, "rb") as stream:
        part.append_from(stream, source.stat().st_size, progress)
    actual = part.hasher.hexdigest()
    if actual != sha256:
        part.restart()
        raise ChecksumMismatch(
            f"{source} has SHA-256 {actual}, expected {sha256}",
            "the file is damaged or another version: copy it again from a good source",
        )
    os.replace(part.path, dest)


class VerifiedRecord:
    """Files whose SHA-256 already matched, with the size and modification time they had, so a
    re-run trusts them without re-reading gigabytes; any change to a file makes it re-hashed."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.entries: dict[str, dict] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.entries = {}

    def _key(self, file: Path) -> str:
        return file.resolve().relative_to(self.path.parent.resolve()).as_posix()

    @staticmethod
    def _stamp(file: Path) -> dict:
        stat = file.stat()
        return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    def recorded_sha256(self, file: Path) -> str | None:
        """The SHA-256 the file had when it was placed, whatever it has now."""
        entry = self.entries.get(self._key(file))
        return entry.get("sha256") if entry is not None else None

    def is_verified(self, file: Path, sha256: str) -> bool:
        entry = self.entries.get(self._key(file))
        return entry is not None and file.exists() and entry == {"sha256": sha256, **self._stamp(file)}

    def add(self, file: Path, sha256: str) -> None:
        self.entries[self._key(file)] = {"sha256": sha256, **self._stamp(file)}
        self._save()

    def forget(self, file: Path) -> None:
        if self.entries.pop(self._key(file), None) is not None:
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(self.entries, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(temporary, self.path)
