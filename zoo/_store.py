"""The weights store: turn a card's weights variant into a verified local safetensors file.

Layout under the cache root (``ZOO_HOME``; no symlinks, so it can live on any filesystem)::

    weights/<sha256>.safetensors      verified weights, named by the sha256 on the card (for converted
                                      third-party files: the source's sha256; the file carries provenance
                                      and a content digest in its metadata)
    downloads/<sha256>-<name>.partial bytes of an interrupted download, kept so the next try resumes
    locks/<sha256>.lock               inter-process locks: N processes loading one model download once
    verified/<sha256>.json            (size, mtime) of local files already hashed, so a shipped file is
                                      not re-hashed on every load

A file appears under ``weights/`` only by an atomic rename after its hash matched, so anything there
is complete and verified; everything in progress is a ``.partial``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from . import _config
from ._card import WeightsVariant
from ._uri import ParsedUri, parse_uri, safe_file_name
from .errors import WeightsError

__all__ = ["CacheEntry", "Store"]

LOCAL_SCHEMES: Final = ("pkg", "file", "path")


@dataclass(frozen=True)
class CacheEntry:
    """One file in the cache, as `zoo cache ls` shows it."""

    path: Path
    sha256: str
    size: int
    kind: str  # "downloaded", "converted" or "partial"


def _warn(message: str, *args: object) -> None:
    import logging  # lazily: `zoo list` imports this module and rarely warns

    logging.getLogger("zoo").warning(message, *args)


def _zoo_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("visionzoo")
    except PackageNotFoundError:
        return "unknown"


class Store:
    """The cache root and every operation on it."""

    def __init__(self, root: Path | None = None) -> None:
        self.root: Final = root or _config.cache_root()
        self.weights_dir: Final = self.root / "weights"
        self.downloads_dir: Final = self.root / "downloads"
        self.locks_dir: Final = self.root / "locks"
        self.verified_dir: Final = self.root / "verified"

    # -- where things are --------------------------------------------------------------------------
    def cached_path(self, variant: WeightsVariant) -> Path:
        return self.weights_dir / f"{variant.sha256}.safetensors"

    def is_local(self, variant: WeightsVariant) -> bool:
        """Safetensors shipped in a package or on disk are used in place, never copied."""
        return variant.format == "safetensors" and parse_uri(variant.uri).scheme in LOCAL_SCHEMES

    def is_available(self, variant: WeightsVariant) -> bool:
        """Usable without a download: cached, or a local file that exists (not hashed here)."""
        if self.is_local(variant):
            try:
                return self._local_path(parse_uri(variant.uri)).is_file()
            except WeightsError:
                return False
        return self.cached_path(variant).is_file()

    def _local_path(self, parsed: ParsedUri) -> Path:
        if parsed.scheme != "pkg":
            return Path(parsed.location).expanduser()
        package, _, rel = parsed.location.partition("/")
        from importlib import resources

        try:
            base = Path(str(resources.files(package)))
        except (ModuleNotFoundError, TypeError) as exc:
            raise WeightsError(f"pkg://{parsed.location}: package {package!r} is not importable ({exc}).") from None
        path = (base / rel).resolve()
        if not path.is_relative_to(base.resolve()):  # a symlink inside the package pointing out of it
            raise WeightsError(f"pkg://{parsed.location} resolves outside package {package!r}; refusing it.")
        return path

    # -- the main entry point ----------------------------------------------------------------------
    def resolve(self, variant: WeightsVariant, *, model: str) -> Path:
        """A verified safetensors file for `variant`: from the cache, a mirror, disk or the network."""
        parsed = parse_uri(variant.uri)
        if self.is_local(variant):
            path = self._local_path(parsed)
            if not path.is_file():
                raise WeightsError(f"Weights file for {model!r} not found: {path} (from {variant.uri}).")
            self._verify_local(path, variant, model)
            return path
        target = self.cached_path(variant)
        if self._trusted(target, variant, model):
            return target
        from filelock import FileLock

        self.locks_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.locks_dir / f"{variant.sha256}.lock"), timeout=_config.lock_timeout()):
            if self._trusted(target, variant, model):  # another process finished while we waited
                return target
            source, owned = self._acquire(variant, parsed, model)
            self.weights_dir.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + f".{os.getpid()}.partial")
            try:
                if variant.format == "safetensors":
                    if owned:
                        os.replace(source, tmp)
                    else:
                        import shutil

                        shutil.copyfile(source, tmp)
                else:
                    from ._convert import convert_checkpoint

                    convert_checkpoint(source, tmp, variant.convert, metadata={
                        "source_uri": variant.uri,
                        "source_sha256": variant.sha256,
                        "source_format": variant.format,
                        "zoo_version": _zoo_version(),
                    }, name=parsed.file_name)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            self._write_stamp(target, variant.sha256)
            if owned:
                source.unlink(missing_ok=True)  # the converted file replaces the pickle
        return target

    def _trusted(self, target: Path, variant: WeightsVariant, model: str) -> bool:
        """True if `target` is the verified file; a cached file that changed since is re-checked.

        Files are verified when they enter the cache; a load then compares (size, mtime) with the
        stamp written at that moment, which catches truncation and replacement for the cost of a
        stat. A file that fails the full re-check is removed (and fetched again by the caller).
        """
        if not target.is_file():
            return False
        if self._stamp_matches(target, variant.sha256):
            return True
        problem = self.verify(CacheEntry(target, variant.sha256, target.stat().st_size, self._kind(target)))
        if problem is None:
            self._write_stamp(target, variant.sha256)
            return True
        _warn("zoo: cached weights for %r are corrupt (%s); removed, fetching again", model, problem)
        target.unlink(missing_ok=True)
        return False

    # -- sources -----------------------------------------------------------------------------------
    def _acquire(self, variant: WeightsVariant, parsed: ParsedUri, model: str) -> tuple[Path, bool]:
        """A local file whose sha256 matched, and whether the store owns it (may move/delete it)."""
        if parsed.scheme in LOCAL_SCHEMES:
            path = self._local_path(parsed)
            if not path.is_file():
                raise WeightsError(f"Weights file for {model!r} not found: {path} (from {variant.uri}).")
            self._check_hash(path, variant, model)
            return path, False
        mirrored = self._from_mirror(variant, parsed, model)
        if mirrored is not None:
            return mirrored, False
        if _config.offline():
            mirrors = os.pathsep.join(map(str, _config.mirror_dirs())) or "unset"
            raise WeightsError(
                f"Weights for {model!r} ({parsed.file_name}) are not cached and ZOO_OFFLINE=1 forbids "
                f"downloading {variant.uri}. Put {parsed.file_name} in a ZOO_MIRROR directory "
                f"(now: {mirrors}) or run 'zoo fetch {model}' with network access.")
        from ._download import download

        partial = self.downloads_dir / f"{variant.sha256}-{parsed.file_name}.partial"
        download(variant.uri, partial, expected_size=variant.size, desc=f"{model} {parsed.file_name}")
        try:
            self._check_hash(partial, variant, model)
        except WeightsError:
            partial.unlink(missing_ok=True)  # wrong bytes are never worth resuming
            raise
        return partial, True

    def _from_mirror(self, variant: WeightsVariant, parsed: ParsedUri, model: str) -> Path | None:
        if not safe_file_name(parsed.file_name):
            return None
        for directory in _config.mirror_dirs():
            candidate = directory / parsed.file_name
            if not candidate.is_file():
                continue
            try:
                self._check_hash(candidate, variant, model)
            except WeightsError as exc:
                _warn("zoo: ignoring mirror copy: %s", exc)
                continue
            return candidate
        return None

    # -- verification ------------------------------------------------------------------------------
    def _check_hash(self, path: Path, variant: WeightsVariant, model: str, *, local: bool = False) -> None:
        from ._hashing import sha256_file

        size = path.stat().st_size
        if variant.size is not None and size != variant.size:
            raise WeightsError(
                f"Weights file {path} for {model!r} has {size} bytes, the card expects {variant.size} "
                f"(truncated or wrong file; sha256 expected {variant.sha256}).")
        actual = sha256_file(path)
        if actual != variant.sha256:
            fix = ("if you changed the file on purpose, put its new sha256 on the card" if local
                   else "delete it or fetch it again")
            raise WeightsError(
                f"Weights file {path} for {model!r} is corrupt or not the expected file: sha256 {actual}, "
                f"expected {variant.sha256}. It was not loaded; {fix}.")

    def _verify_local(self, path: Path, variant: WeightsVariant, model: str) -> None:
        """Hash a local file once per (size, mtime): shipped weights are checked without a cost per load."""
        if not self._stamp_matches(path, variant.sha256):
            self._check_hash(path, variant, model, local=True)
            self._write_stamp(path, variant.sha256)

    @staticmethod
    def _stamp_of(path: Path) -> dict[str, object]:
        stat = path.stat()
        return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    def _stamp_matches(self, path: Path, sha256: str) -> bool:
        import json

        try:
            return json.loads((self.verified_dir / f"{sha256}.json").read_text()) == self._stamp_of(path)
        except (OSError, ValueError):
            return False

    def _write_stamp(self, path: Path, sha256: str) -> None:
        import json

        record = self.verified_dir / f"{sha256}.json"
        try:
            self.verified_dir.mkdir(parents=True, exist_ok=True)
            tmp = record.with_name(f"{record.name}.{os.getpid()}.partial")
            tmp.write_text(json.dumps(self._stamp_of(path)))
            os.replace(tmp, record)
        except OSError:
            pass  # a read-only cache only costs a re-check next time

    # -- cache management --------------------------------------------------------------------------
    def entries(self) -> list[CacheEntry]:
        out = []
        for path in sorted(self.weights_dir.glob("*.safetensors")):
            out.append(CacheEntry(path, path.stem, path.stat().st_size, self._kind(path)))
        for path in sorted(self.downloads_dir.glob("*.partial")):
            out.append(CacheEntry(path, path.name.split("-", 1)[0], path.stat().st_size, "partial"))
        return out

    @staticmethod
    def _kind(path: Path) -> str:
        from ._convert import read_provenance

        provenance = read_provenance(path)
        if provenance is not None and "source_format" in provenance:
            return "converted"
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy"):
                return "downloaded"
        except Exception:  # noqa: BLE001 - a broken header shows up in `verify`
            return "unreadable"

    def verify(self, entry: CacheEntry) -> str | None:
        """None when the file is intact, else what is wrong with it."""
        from ._hashing import sha256_file

        if entry.kind == "partial":
            return None
        actual = sha256_file(entry.path)
        if actual == entry.sha256:
            return None  # a downloaded file is named by its own sha256
        if entry.kind == "unreadable":
            return "not a readable safetensors file (damaged header or truncated)"
        if entry.kind != "converted":
            return f"sha256 {actual}, expected {entry.sha256}"
        from safetensors.torch import load_file

        from ._convert import content_digest, read_provenance

        provenance = read_provenance(entry.path) or {}
        try:
            digest = content_digest(load_file(str(entry.path)))
        except Exception as exc:  # noqa: BLE001
            return f"unreadable tensors ({type(exc).__name__}: {exc})"
        if provenance.get("source_sha256") != entry.sha256:
            return f"converted from {provenance.get('source_sha256')}, but the file name says {entry.sha256}"
        expected = provenance.get("content_sha256")
        return None if digest == expected else f"tensor content sha256 {digest}, expected {expected}"

    def remove(self, sha256: str) -> list[Path]:
        """Delete every cache file of one weights identity (the partial download included)."""
        removed = []
        candidates = [self.weights_dir / f"{sha256}.safetensors", self.verified_dir / f"{sha256}.json",
                      *self.downloads_dir.glob(f"{sha256}-*.partial")]
        for path in candidates:
            if path.is_file():
                path.unlink()
                removed.append(path)
        return removed
