"""The weights store: turn a card's weights variant into a verified local safetensors file.

Layout under the cache root (``ZOO_HOME``; no symlinks, so it can live on any filesystem)::

    weights/<sha256>.safetensors      verified weights, named by the sha256 on the card (for converted
                                      third-party files: the source's sha256; the file carries provenance
                                      and a content digest in its metadata)
    downloads/<sha256>-<name>.partial bytes of an interrupted download, kept so the next try resumes
    locks/<sha256>.lock               inter-process locks: N processes loading one model download once
    verified/<sha256>.json            (size, mtime) of local files already hashed, so a shipped file is
                                      not re-hashed on every load
    pins/<key>.json                   for cards that give only the publisher's sha256 prefix: the full sha256
                                      of the first download that matched it, enforced from then on

A file appears under ``weights/`` only by an atomic rename after its hash matched, so anything there
is complete and verified; everything in progress is a ``.partial``.

Prefix-pinned variants (``sha256_prefix`` on the card) cannot be named by a hash nobody knows in advance.
Until their first verified download, their lock and partial download are named by ``<key>``, the sha256 of
the card's URI and prefix; the accepted file is then named by its full sha256 like any other, and that
hash is written to ``pins/<key>.json`` (trust on first use, like ssh's known_hosts). Later downloads, mirror
copies and the cached file must match the recorded hash, not just the prefix.
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
_SHA256_HEX: Final = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Pin:
    """The full sha256 recorded on a prefix-pinned variant's first verified download."""

    path: Path  # pins/<key>.json
    uri: str
    sha256_prefix: str
    sha256: str
    size: int
    recorded: str  # ISO 8601, UTC
    source: str  # where those bytes came from: the URL or a mirror file


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
        self.pins_dir: Final = self.root / "pins"

    # -- where things are --------------------------------------------------------------------------
    def cached_path(self, variant: WeightsVariant) -> Path | None:
        """Where the variant's verified file is (or will be); None for a prefix pin not yet recorded."""
        sha = self.known_sha256(variant)
        return self.weights_dir / f"{sha}.safetensors" if sha else None

    def known_sha256(self, variant: WeightsVariant) -> str | None:
        """The card's full sha256, or the one recorded for its prefix (None: not yet, or a damaged record)."""
        if variant.sha256 is not None:
            return variant.sha256
        try:
            pin = self.read_pin(variant, model=variant.tag)
        except WeightsError:
            return None
        return pin.sha256 if pin else None

    @staticmethod
    def pin_key(variant: WeightsVariant) -> str:
        """Names the lock, partial and pin record of a prefix-pinned variant: its URI and prefix, hashed.

        Hashed rather than spelt out so that no URL ever becomes a path; keyed on the prefix too so that a
        card whose author changed the prefix starts a new record instead of tripping over the old one.
        """
        import hashlib

        return hashlib.sha256(f"zoo-pin|{variant.uri}|{variant.sha256_prefix}".encode()).hexdigest()

    def _key(self, variant: WeightsVariant) -> str:
        """What locks and partial downloads are named by: the full sha256, else the pin key."""
        return variant.sha256 if variant.sha256 is not None else self.pin_key(variant)

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
        target = self.cached_path(variant)
        return target is not None and target.is_file()

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
            if variant.sha256 is None:  # the card parser refuses this; a variant built in code may not
                raise WeightsError(f"Local weights file {variant.uri} for {model!r} is used in place and needs the "
                                   "full sha256 on the card, not a prefix.")
            path = self._local_path(parsed)
            if not path.is_file():
                raise WeightsError(f"Weights file for {model!r} not found: {path} (from {variant.uri}).")
            self._verify_local(path, variant, model)
            return path
        if variant.sha256 is None:
            return self._resolve_prefix_pinned(variant, parsed, model)
        target = self.weights_dir / f"{variant.sha256}.safetensors"
        if self._trusted(target, variant.sha256, model):
            return target
        with self._lock(variant.sha256):
            if self._trusted(target, variant.sha256, model):  # another process finished while we waited
                return target
            source, owned, _ = self._acquire(variant, parsed, model)
            self._install(source, owned, variant, variant.sha256, parsed, target)
        return target

    def _resolve_prefix_pinned(self, variant: WeightsVariant, parsed: ParsedUri, model: str) -> Path:
        """Like `resolve`, for a card that gives only the publisher's sha256 prefix (trust on first use)."""
        pin = self.read_pin(variant, model=model)
        if pin is not None and self._trusted(self.weights_dir / f"{pin.sha256}.safetensors", pin.sha256, model):
            return self.weights_dir / f"{pin.sha256}.safetensors"
        with self._lock(self.pin_key(variant)):
            pin = self.read_pin(variant, model=model)  # another process may have recorded it while we waited
            if pin is not None:
                target = self.weights_dir / f"{pin.sha256}.safetensors"
                if self._trusted(target, pin.sha256, model):
                    return target
            source, owned, sha = self._acquire(variant, parsed, model, pin=pin)
            size = source.stat().st_size
            origin = f"mirror {source}" if not owned and parsed.scheme not in LOCAL_SCHEMES else variant.uri
            target = self.weights_dir / f"{sha}.safetensors"
            # The full hash now names the file, so a card that pins the same bytes by their full sha256 shares it.
            with self._lock(sha):
                if self._trusted(target, sha, model):
                    if owned:
                        source.unlink(missing_ok=True)
                else:
                    self._install(source, owned, variant, sha, parsed, target)
            if pin is None:
                self._write_pin(variant, sha, size, source=origin)
        return target

    def _lock(self, key: str):  # noqa: ANN202 - a filelock.FileLock
        from filelock import FileLock

        self.locks_dir.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.locks_dir / f"{key}.lock"), timeout=_config.lock_timeout())

    def _install(self, source: Path, owned: bool, variant: WeightsVariant, sha: str, parsed: ParsedUri,
                 target: Path) -> None:
        """Put hash-checked `source` (sha256 `sha`) into the cache as `target`, converting a pickle first."""
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
                    "source_sha256": sha,
                    "source_format": variant.format,
                    "zoo_version": _zoo_version(),
                }, name=parsed.file_name)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        self._write_stamp(target, sha)
        if owned:
            source.unlink(missing_ok=True)  # the converted file replaces the pickle

    def _trusted(self, target: Path, sha256: str, model: str) -> bool:
        """True if `target` is the verified file; a cached file that changed since is re-checked.

        Files are verified when they enter the cache; a load then compares (size, mtime) with the
        stamp written at that moment, which catches truncation and replacement for the cost of a
        stat. A file that fails the full re-check is removed (and fetched again by the caller).
        """
        if not target.is_file():
            return False
        if self._stamp_matches(target, sha256):
            return True
        problem = self.verify(CacheEntry(target, sha256, target.stat().st_size, self._kind(target)))
        if problem is None:
            self._write_stamp(target, sha256)
            return True
        _warn("zoo: cached weights for %r are corrupt (%s); removed, fetching again", model, problem)
        target.unlink(missing_ok=True)
        return False

    # -- sources -----------------------------------------------------------------------------------
    def _acquire(self, variant: WeightsVariant, parsed: ParsedUri, model: str,
                 pin: Pin | None = None) -> tuple[Path, bool, str]:
        """A local file whose sha256 matched, whether the store owns it (may move/delete it), and its sha256."""
        if parsed.scheme in LOCAL_SCHEMES:
            path = self._local_path(parsed)
            if not path.is_file():
                raise WeightsError(f"Weights file for {model!r} not found: {path} (from {variant.uri}).")
            return path, False, self._check_hash(path, variant, model, pin=pin)
        mirrored = self._from_mirror(variant, parsed, model, pin)
        if mirrored is not None:
            return mirrored[0], False, mirrored[1]
        if _config.offline():
            mirrors = os.pathsep.join(map(str, _config.mirror_dirs())) or "unset"
            raise WeightsError(
                f"Weights for {model!r} ({parsed.file_name}) are not cached and ZOO_OFFLINE=1 forbids "
                f"downloading {variant.uri}. Put {parsed.file_name} in a ZOO_MIRROR directory "
                f"(now: {mirrors}) or run 'zoo fetch {model}' with network access.")
        from ._download import download

        partial = self.downloads_dir / f"{self._key(variant)}-{parsed.file_name}.partial"
        download(variant.uri, partial, expected_size=variant.size, desc=f"{model} {parsed.file_name}")
        try:
            sha = self._check_hash(partial, variant, model, pin=pin)
        except WeightsError:
            partial.unlink(missing_ok=True)  # wrong bytes are never worth resuming
            raise
        return partial, True, sha

    def _from_mirror(self, variant: WeightsVariant, parsed: ParsedUri, model: str,
                     pin: Pin | None = None) -> tuple[Path, str] | None:
        if not safe_file_name(parsed.file_name):
            return None
        for directory in _config.mirror_dirs():
            candidate = directory / parsed.file_name
            if not candidate.is_file():
                continue
            try:
                sha = self._check_hash(candidate, variant, model, pin=pin)
            except WeightsError as exc:
                _warn("zoo: ignoring mirror copy: %s", exc)
                continue
            return candidate, sha
        return None

    # -- verification ------------------------------------------------------------------------------
    def _check_hash(self, path: Path, variant: WeightsVariant, model: str, *, local: bool = False,
                    pin: Pin | None = None) -> str:
        """The file's sha256, if it is the card's file: the full sha256 on the card, else the one recorded
        for the card's prefix (`pin`), else (first download) any hash that starts with the prefix."""
        from ._hashing import sha256_file

        expected = variant.sha256 or (pin.sha256 if pin else f"{variant.sha256_prefix}...")
        size = path.stat().st_size
        if variant.size is not None and size != variant.size:
            raise WeightsError(
                f"Weights file {path} for {model!r} has {size} bytes, the card expects {variant.size} "
                f"(truncated or wrong file; sha256 expected {expected}).")
        actual = sha256_file(path)
        if variant.sha256 is not None and actual != variant.sha256:
            fix = ("if you changed the file on purpose, put its new sha256 on the card" if local
                   else "delete it or fetch it again")
            raise WeightsError(
                f"Weights file {path} for {model!r} is corrupt or not the expected file: sha256 {actual}, "
                f"expected {variant.sha256}. It was not loaded; {fix}.")
        if variant.sha256 is None and pin is not None and actual != pin.sha256:
            shares = "also starts" if actual.startswith(pin.sha256_prefix) else "does not even start"
            raise WeightsError(
                f"Weights file {path} for {model!r} has sha256 {actual}, but {variant.uri} was pinned to "
                f"{pin.sha256} on its first verified download ({pin.recorded}); the new hash {shares} with the "
                f"publisher's prefix {pin.sha256_prefix}. The publisher changed the file, or it was tampered "
                f"with; it was not loaded. If you trust the new file, reset the pin with 'zoo cache rm {model}' "
                f"and fetch again (record: {pin.path}).")
        if variant.sha256 is None and pin is None and not actual.startswith(variant.sha256_prefix or "-"):
            raise WeightsError(
                f"Weights file {path} for {model!r} is corrupt or not the expected file: sha256 {actual} does not "
                f"start with the publisher's prefix {variant.sha256_prefix}. It was not loaded; delete it or "
                "fetch it again.")
        return actual

    # -- pins (prefix-pinned variants) ---------------------------------------------------------------
    def pin_path(self, variant: WeightsVariant) -> Path:
        return self.pins_dir / f"{self.pin_key(variant)}.json"

    def read_pin(self, variant: WeightsVariant, *, model: str) -> Pin | None:
        """The recorded full sha256 of a prefix-pinned variant; None before its first verified download.

        A record that cannot be read, or that does not fit the card, is an error rather than "no record":
        treating it as absent would let the next download pin whatever the server sends.
        """
        import json

        if variant.sha256 is not None or not self.pins_dir.is_dir():  # `zoo list` on a fresh cache: no hashing
            return None
        path = self.pin_path(variant)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raw = f"unreadable ({type(exc).__name__})"
        problem = None
        if not isinstance(raw, dict):
            problem = raw if isinstance(raw, str) else "not a JSON object"
        elif raw.get("uri") != variant.uri or raw.get("sha256_prefix") != variant.sha256_prefix:
            problem = f"it records {raw.get('uri')!r} with prefix {raw.get('sha256_prefix')!r}"
        else:
            sha = raw.get("sha256")
            if not (isinstance(sha, str) and len(sha) == 64 and set(sha) <= _SHA256_HEX
                    and sha.startswith(variant.sha256_prefix or "-")):
                problem = f"its sha256 {sha!r} is not a full sha256 starting with {variant.sha256_prefix}"
        if problem is not None:
            raise WeightsError(
                f"Pin record {path} for {model!r} is damaged or not this card's ({problem}); without it the "
                f"publisher's file cannot be told from another, so nothing was loaded. Reset it with "
                f"'zoo cache rm {model}' and fetch again.")
        size = raw.get("size")
        return Pin(path, variant.uri, str(variant.sha256_prefix), raw["sha256"], size if isinstance(size, int) else 0,
                   str(raw.get("recorded", "?")), str(raw.get("source", "?")))

    def _write_pin(self, variant: WeightsVariant, sha256: str, size: int, *, source: str) -> None:
        """Record the full sha256 of the first verified file for a prefix pin (atomically, synced)."""
        import json
        from datetime import datetime, timezone

        record = {
            "uri": variant.uri,
            "sha256_prefix": variant.sha256_prefix,
            "sha256": sha256,
            "size": size,
            "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source": source,
            "zoo_version": _zoo_version(),
        }
        target = self.pin_path(variant)
        self.pins_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.partial")
        try:
            with open(tmp, "w") as f:
                f.write(json.dumps(record, indent=2, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

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

    def remove_variant(self, variant: WeightsVariant) -> list[Path]:
        """Delete a variant's cached files; for a prefix pin also its record and partial (a reset)."""
        if variant.sha256 is not None:
            return self.remove(variant.sha256)
        removed = []
        pin_path = self.pin_path(variant)
        try:
            pin = self.read_pin(variant, model=variant.tag)
        except WeightsError:
            pin = None  # a damaged record is removed all the same: that is the reset it asks for
        if pin is not None:
            removed += self.remove(pin.sha256)
        removed += self.remove(self.pin_key(variant))  # the partial download, named by the pin key
        if pin_path.is_file():
            pin_path.unlink()
            removed.append(pin_path)
        return removed

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
