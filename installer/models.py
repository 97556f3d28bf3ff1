"""The model manifest (`models.json`) and putting its files into a models folder."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from . import InstallError
from .download import (
    SHA256,
    NetworkError,
    ProgressBar,
    VerifiedRecord,
    copy_verified,
    download,
    sha256_file,
    stated_hash,
)
from .network import NO_NETWORK, UNREACHABLE, Reach, probe

MANIFEST = Path(__file__).with_name("models.json")
RECORD_NAME = ".verified.json"
FIELDS = ("name", "url", "sha256", "destination", "family", "role")


@dataclass(frozen=True)
class ModelFile:
    name: str
    url: str
    # None where the list records none (`"sha256": null`): a download is checked against the hash
    # its host states for it (download.stated_hash), and the manifest's `note` says why.
    sha256: str | None
    destination: str  # relative to the models folder, with forward slashes
    family: str
    role: str


@dataclass(frozen=True)
class Manifest:
    files: dict[str, ModelFile]
    sets: dict[str, tuple[str, ...]]

    def select(self, set_names: Iterable[str]) -> list[ModelFile]:
        """The files of these sets, each once, in manifest order."""
        wanted: set[str] = set()
        for set_name in set_names:
            if set_name not in self.sets:
                raise InstallError(
                    f"there is no model set {set_name!r}",
                    f"choose one of: {', '.join(self.sets)}",
                )
            wanted.update(self.sets[set_name])
        return [file for name, file in self.files.items() if name in wanted]


def _check_file(raw: object, index: int) -> ModelFile:
    where = f"files[{index}]"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be an object with {', '.join(FIELDS)}")
    for field in FIELDS:
        if field == "sha256" and raw.get(field, "") is None:
            continue
        if not isinstance(raw.get(field), str) or not raw[field]:
            raise ValueError(f"{where}.{field} must be a non-empty string")
    if raw["sha256"] is not None and not SHA256.fullmatch(raw["sha256"]):
        raise ValueError(f"{where}.sha256 must be 64 lowercase hex digits or null, not {raw['sha256']!r}")
    if raw["sha256"] is None and not isinstance(raw.get("note"), str):
        raise ValueError(f"{where}.note must say why the SHA-256 is not recorded")
    if not raw["url"].startswith(("https://", "http://")):
        raise ValueError(f"{where}.url must be an http(s) address, not {raw['url']!r}")
    destination = PurePosixPath(raw["destination"])
    # A destination is joined to the user's models folder: it must stay inside it.
    if destination.is_absolute() or ".." in destination.parts or "\\" in raw["destination"]:
        raise ValueError(f"{where}.destination must be a relative path inside the models folder")
    return ModelFile(**{field: raw[field] for field in FIELDS})


def parse_manifest(data: object) -> Manifest:
    """A manifest from parsed JSON; ValueError names the field that is wrong."""
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise ValueError("the manifest must be an object with a 'files' list and a 'sets' object")
    files: dict[str, ModelFile] = {}
    for index, raw in enumerate(data["files"]):
        file = _check_file(raw, index)
        if file.name in files:
            raise ValueError(f"files[{index}].name {file.name!r} is used twice")
        files[file.name] = file
    sets = data.get("sets")
    if not isinstance(sets, dict):
        raise ValueError("sets must be an object of set name → list of file names")
    for set_name, names in sets.items():
        unknown = [name for name in names if name not in files] if isinstance(names, list) else None
        if unknown is None:
            raise ValueError(f"sets.{set_name} must be a list of file names")
        if unknown:
            raise ValueError(f"sets.{set_name} names files the manifest lacks: {', '.join(unknown)}")
    return Manifest(files, {name: tuple(names) for name, names in sets.items()})


def load_manifest(path: Path = MANIFEST) -> Manifest:
    try:
        return parse_manifest(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as error:
        raise InstallError(
            f"the model list {path} cannot be used: {error}",
            "download the installer again (the file may be damaged)",
        ) from error


def _offline_name(file: ModelFile) -> str:
    """What a file is found by in an offline folder: its destination below the kind's folder, which
    is its name, or the model folder and its name for a file of one (many folders hold a config.json)."""
    parts = PurePosixPath(file.destination).parts
    return PurePosixPath(*(parts[1:] or parts)).as_posix()


def _offline_copy(offline_dir: Path, file: ModelFile) -> Path | None:
    """The file in an offline folder: at its destination path, or anywhere under its name."""
    direct = offline_dir / file.destination
    if direct.is_file():
        return direct
    return next((found for found in sorted(offline_dir.rglob(_offline_name(file))) if found.is_file()), None)


def install_model(
    file: ModelFile,
    models_dir: Path,
    record: VerifiedRecord,
    *,
    verify: bool = False,
    offline_dir: Path | None = None,
    progress: Callable[[str], Callable[[int, int | None], None]] = ProgressBar,
    before_download: Callable[[ModelFile], None] = lambda file: None,
    **download_options,
) -> str:
    """Make sure `file` is in `models_dir` with the right hash; returns what was done.

    A file already recorded as verified (same size and time) is trusted unless `verify`;
    a bad file stays until a good copy replaces it. Where the list records no SHA-256, the one
    recorded when the file was placed stands in for it.
    """
    target = models_dir / file.destination
    damaged = target.exists()
    if damaged:
        expected = file.sha256 or record.recorded_sha256(target)
        if expected is not None:
            if not verify and record.is_verified(target, expected):
                return "already verified"
            if sha256_file(target, progress(f"checking {file.name}")) == expected:
                record.add(target, expected)
                return "verified"
        record.forget(target)
    if offline_dir is not None:
        source = _offline_copy(offline_dir, file)
        if source is None:
            raise InstallError(
                f"{file.name} ({_offline_name(file)}) is not in {offline_dir}",
                f"download {file.url} on a machine with network and put it into that folder",
            )
        # Without a recorded SHA-256 and without the network there is nothing to check a copy against.
        sha256 = file.sha256 or sha256_file(source)
        copy_verified(source, target, sha256, progress(file.name))
        done = "copied" if file.sha256 else "copied, not verified (the model list records no SHA-256 for it)"
    else:
        before_download(file)
        expected = file.sha256 or stated_hash(file.url, download_options.get("timeout", 60.0))
        sha256 = download(file.url, target, expected, progress=progress(file.name), **download_options)
        stated = "" if isinstance(expected, str) else f", checked against the {expected.kind.value} its host states"
        done = f"downloaded{stated}"
    record.add(target, sha256)
    return f"{done} (replacing a damaged copy)" if damaged else done


@dataclass(frozen=True)
class Failure:
    """A file that is not in place after this run, and why, in one line."""

    file: ModelFile
    reason: str

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.file.url).hostname or self.file.url


class HostCheck:
    """Each download host is probed once before its first download: one that cannot be reached
    fails its files at once, instead of after every retry of every file."""

    def __init__(self, reach: Callable[[str], Reach] = probe):
        self.reach = reach
        self.found: dict[str, Reach] = {}

    def __call__(self, file: ModelFile) -> None:
        host = urllib.parse.urlsplit(file.url).netloc
        if host not in self.found:
            self.found[host] = self.reach(file.url)
        found = self.found[host]
        if found.problem in (NO_NETWORK, UNREACHABLE):
            raise NetworkError(found.describe())


def install_models(
    files: list[ModelFile],
    models_dir: Path,
    *,
    log: Callable[[str], None] = print,
    reach: Callable[[str], Reach] = probe,
    **options,
) -> list[Failure]:
    """Put every file in place that can be; the ones that cannot are returned, not raised, so an
    install without a model host still finishes (the server then serves what it has)."""
    record = VerifiedRecord(models_dir / RECORD_NAME)
    check = HostCheck(reach)
    failures = []
    for file in files:
        try:
            done = install_model(file, models_dir, record, before_download=check, **options)
        except InstallError as error:
            failures.append(Failure(file, error.message))
            done = f"not installed: {error.message}"
        log(f"  {file.name}: {done}")
    return failures


def report_failures(
    failures: list[Failure], files: list[ModelFile], models_dir: Path, log: Callable[[str], None] = print
) -> None:
    """Tell the user, at the end, which files are missing, why, and what happens meanwhile."""
    if not failures:
        return
    failed = {failure.file.name for failure in failures}
    has_checkpoint = any(f.role.startswith("checkpoint") for f in files if f.name not in failed) or any(
        (models_dir / "checkpoints").glob("*.safetensors")
    )
    log("\nSome models could not be installed:")
    for failure in failures:
        log(f"  could not download {failure.file.name} from {failure.host}: {failure.reason}")
    if not has_checkpoint:
        log("The server will use the built-in demo model until a checkpoint is in place.")
    log("Run `underpaint models download` later to fetch them (finished parts are kept and resumed).")


def purge_downloads(models_dir: Path) -> int:
    """Delete the files this installer downloaded (those in its record, and unfinished `.part`
    files) and the folders they leave empty; other files in the folder stay. Returns the count."""
    record_path = models_dir / RECORD_NAME
    record = VerifiedRecord(record_path)
    files = [models_dir / key for key in record.entries] + list(models_dir.rglob("*.part"))
    removed = 0
    for file in files:
        if file.is_file():
            file.unlink()
            removed += 1
    record_path.unlink(missing_ok=True)
    folders = sorted((p for p in models_dir.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
    for folder in [*folders, models_dir]:
        if folder.exists() and not any(folder.iterdir()):
            folder.rmdir()
    return removed
