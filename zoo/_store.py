"""The weights store: turn a card's weights variant into a verified local safetensors file.

Layout under the cache root (``ZOO_HOME``; no symlinks, so it can live on any filesystem)::

    weights/<sha256>.safetensors      verified weights, named by the sha256 on the card (for converted
                                      third-party files: the source's sha256; the file carries provenance
                                      and a content digest in its metadata)
    downloads/<sha256>-<name>.partial bytes of an interrupted download, kept so the next try resumes
    locks/<sha256>.lock               inter-process locks: N processes loading one model download once
    verified/<sha256>.json            the store's own record of a file it verified: (size, mtime), so a
                                      load costs a stat, and the file's sha256 and kind ("downloaded",
                                      "converted", "local"); for a converted file the digest written when
                                      zoo converted it is the only thing it is checked against (#20)
    pins/<key>.json                   for cards that give only the publisher's sha256 prefix: the full sha256
                                      of the first download that matched it, enforced from then on

A file appears under ``weights/`` only by an atomic rename after its hash matched, so anything there
is complete and verified; everything in progress is a ``.partial`` (a conversion killed mid-way leaves
``weights/<sha256>.safetensors.<pid>.partial``, which `entries` lists and `zoo cache rm --partial` removes).

Nothing a file says about itself is trusted (#20): a converted file's metadata is provenance for people, and
verification compares its sha256 with the record zoo wrote outside it. Every file and directory under the
root is opened without following symlinks, so a link planted in the cache cannot send a write (or a
"verified" read) anywhere else on disk.

Prefix-pinned variants (``sha256_prefix`` on the card) cannot be named by a hash nobody knows in advance.
Until their first verified download, their lock and partial download are named by ``<key>``, the sha256 of
the card's URI and prefix; the accepted file is then named by its full sha256 like any other, and that
hash is written to ``pins/<key>.json`` (trust on first use, like ssh's known_hosts). Later downloads, mirror
copies and the cached file must match the recorded hash, not just the prefix.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from . import _config
from ._card import WeightsVariant
from ._hashing import open_nofollow
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


def _prefix(variant: WeightsVariant) -> str:
    """What a pinned-on-first-use variant's full sha256 must start with: the publisher's prefix; for an ``hf://``
    file pinned by the hub's own sha256, anything (the hub gave the full hash); never-matching otherwise."""
    if variant.sha256_prefix:
        return variant.sha256_prefix
    return "" if parse_uri(variant.uri).scheme == "hf" else "-"


def _copy_origin(source: Path, parsed: ParsedUri) -> str:
    """How a pin record names a file zoo did not download itself: a mirror's, or the Hugging Face cache's."""
    if parsed.scheme == "hf":
        from . import _hf

        if source.is_relative_to(_hf.cache_dir().resolve()) or source.is_relative_to(_hf.cache_dir()):
            return f"Hugging Face cache {source}"
    return f"mirror {source}"


def _is_link(path: Path) -> bool:
    return os.path.islink(path)


def _is_regular(path: Path) -> bool:
    """A regular file, not a link to one (`Path.is_file` follows links)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _is_regular_dir(path: Path) -> bool:
    """A directory, not a link to one: the store never lists (or deletes) through a planted link."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _read_nofollow(path: Path) -> str:
    """The text of a file zoo wrote; OSError (ELOOP) if a link was planted in its place."""
    with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "r") as f:
        return f.read()


def _write_atomic(target: Path, text: str) -> None:
    """Write `text` to `target` by a fresh temporary file (never through a link) and a rename, synced."""
    tmp = target.with_name(f"{target.name}.{os.getpid()}.partial")
    tmp.unlink(missing_ok=True)  # removes a planted link itself, never what it points at
    try:
        with os.fdopen(open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _os_error(exc: OSError, root: Path, model: str) -> WeightsError:
    """One line for what the OS refused while filling the cache (read-only home, full disk, a planted link)."""
    where = exc.filename or root
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return WeightsError(
            f"Cannot write the weights cache for {model!r}: {where} is not writable "
            f"({os.strerror(exc.errno)}). Set ZOO_HOME to a writable directory (now: {root})."
        )
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return WeightsError(
            f"Cannot write the weights cache for {model!r}: {os.strerror(exc.errno)} while writing "
            f"{where} (disk full or file size limit). Free some space or point ZOO_HOME at a larger "
            "disk, then try again; nothing half-written was kept."
        )
    if exc.errno == errno.ELOOP:
        return WeightsError(
            f"{where} is a symbolic link; zoo never reads or writes through a link in its cache. "
            "Remove it (zoo did not create it) and try again."
        )
    return WeightsError(f"Cannot use the weights cache for {model!r} at {where}: {exc.strerror or exc}.")


def _examine(store: Store, entry: CacheEntry) -> tuple[str | None, str | None]:
    """(What is wrong with a cached file or None, its sha256): see `Store.verify`."""
    from ._hashing import sha256_file

    if _is_link(entry.path):
        return "a symbolic link, not a file zoo wrote", None
    try:
        actual = sha256_file(entry.path, follow_symlinks=False)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})", None
    if actual == entry.sha256:
        return None, actual  # a downloaded file is named by its own sha256
    record = store._record(entry.sha256)
    converted = record is not None and record.get("kind") == "converted"
    if converted and actual == record.get("sha256"):  # type: ignore[union-attr]  # converted: record is set
        return None, actual
    if record is not None and "sha256" not in record and store._stamp_fields_match(record, entry.path):
        # A stamp written before #20: zoo's own record that it verified this very (size, mtime), no weaker than
        # the stat the load path trusts. Accepted once, then the caller records the digest (no re-download).
        return None, actual
    try:
        store._check_header(entry.path, model="")
    except WeightsError:
        return "not a readable safetensors file (damaged header or truncated)", actual
    if converted:
        assert record is not None
        return (
            f"sha256 {actual}, but zoo recorded {record.get('sha256')} when it converted the source "
            f"{entry.sha256[:12]}... (changed since)"
        ), actual
    return (
        f"sha256 {actual}, expected {entry.sha256}, and zoo has no record of converting it "
        f"({store.verified_dir / (entry.sha256 + '.json')})"
    ), actual


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
        """A verified safetensors file for `variant`: from the cache, a mirror, disk or the network.

        What the OS refuses on the way (a read-only ZOO_HOME, a full disk, a planted link) is one WeightsError.
        """
        try:
            return self._resolve(variant, model=model)
        except OSError as exc:
            raise _os_error(exc, self.root, model) from None

    def _resolve(self, variant: WeightsVariant, *, model: str) -> Path:
        parsed = parse_uri(variant.uri)
        if self.is_local(variant):
            if variant.sha256 is None:  # the card parser refuses this; a variant built in code may not
                raise WeightsError(
                    f"Local weights file {variant.uri} for {model!r} is used in place and needs the "
                    "full sha256 on the card, not a prefix."
                )
            path = self._local_path(parsed)
            if not path.is_file():
                raise WeightsError(f"Weights file for {model!r} not found: {path} (from {variant.uri}).")
            self._verify_local(path, variant, model)
            return path
        if variant.sha256 is None:
            if variant.sha256_prefix is None and parsed.scheme != "hf":  # the card parser refuses this too
                raise WeightsError(f"Weights {variant.uri} for {model!r} have no sha256 on the card; not fetched.")
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
            origin = variant.uri if owned or parsed.scheme in LOCAL_SCHEMES else _copy_origin(source, parsed)
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

    def _dir(self, path: Path) -> Path:
        """Create a directory of the store; one that is a link (to anywhere) is refused, not followed."""
        path.mkdir(parents=True, exist_ok=True)
        if _is_link(path):
            raise WeightsError(
                f"{path} is a symbolic link; zoo keeps its cache in real directories so that "
                f"nothing is written outside {self.root}. Remove the link and try again."
            )
        return path

    @contextmanager
    def _lock(self, key: str):  # noqa: ANN202 - a context manager
        """The inter-process lock on one weights identity; a time-out is a one-line error, not filelock's."""
        from filelock import FileLock, Timeout

        path = self._dir(self.locks_dir) / f"{key}.lock"
        timeout = _config.lock_timeout()
        lock = FileLock(str(path), timeout=timeout)
        try:
            lock.acquire()
        except Timeout:
            raise WeightsError(
                f"Another process has held the lock {path} for more than ZOO_LOCK_TIMEOUT={timeout:g} s while "
                "fetching the same weights. Wait for it (or stop it) and try again, or raise ZOO_LOCK_TIMEOUT."
            ) from None
        try:
            yield lock
        finally:
            lock.release()

    def _install(
        self, source: Path, owned: bool, variant: WeightsVariant, sha: str, parsed: ParsedUri, target: Path
    ) -> None:
        """Put hash-checked `source` (sha256 `sha`) into the cache as `target`, converting a pickle first.

        The record written beside it (verified/<sha>.json) holds the sha256 of what was installed: for a
        converted file, the digest of the output as zoo wrote it, which is what it is checked against later.
        """
        self._dir(self.weights_dir)
        tmp = target.with_name(target.name + f".{os.getpid()}.partial")
        tmp.unlink(missing_ok=True)  # a stale one of ours, or a planted link (the link goes, not its target)
        try:
            if variant.format == "safetensors":
                self._check_header(source, model=parsed.file_name)
                if owned:
                    os.replace(source, tmp)
                else:
                    self._copy_in(source, tmp)
                kind, digest = "downloaded", sha
            else:
                from ._convert import convert_checkpoint
                from ._hashing import sha256_file

                # the card parser gives every non-safetensors variant a ConvertSpec
                convert_checkpoint(
                    source,
                    tmp,
                    variant.convert,  # type: ignore[arg-type]
                    metadata={
                        "source_uri": variant.uri,
                        "source_sha256": sha,
                        "source_format": variant.format,
                        "zoo_version": _zoo_version(),
                    },
                    name=parsed.file_name,
                )
                kind, digest = "converted", sha256_file(tmp, follow_symlinks=False)
            # The record before the file: a rename keeps size and mtime, so it already describes `target`. Written
            # after, another process's unlocked check could find a converted file without its record in between,
            # call it corrupt and delete it (the soak saw this).
            self._write_stamp(target, sha, digest=digest, kind=kind, stat_of=tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        if owned:
            source.unlink(missing_ok=True)  # the converted file replaces the pickle

    @staticmethod
    def _copy_in(source: Path, tmp: Path) -> None:
        """Copy a mirror/local file into the cache, creating the copy without following links."""
        import shutil

        with (
            open(source, "rb") as src,
            os.fdopen(open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb") as dst,
        ):
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())

    @staticmethod
    def _check_header(path: Path, *, model: str) -> None:
        """A file whose hash matched can still be a damaged safetensors file (the card pinned a bad one)."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy"):
                pass
        except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, ValueError...: all "not readable"
            if not os.path.lexists(path):  # not a damaged file: a concurrent `zoo cache rm` took it (the soak)
                raise WeightsError(
                    f"Weights file {path} for {model!r} was removed by another process (a concurrent "
                    "'zoo cache rm'?) before it could be installed; nothing was loaded. Run the "
                    "command again."
                ) from None
            raise WeightsError(
                f"Weights file {path} for {model!r} matches the card's sha256 but is not a readable "
                f"safetensors file ({type(exc).__name__}: {str(exc)[:120]}); the card pins a damaged "
                "file. It was not loaded."
            ) from None

    def _trusted(self, target: Path, sha256: str, model: str) -> bool:
        """True if `target` is the verified file; a cached file that changed since is re-checked.

        Files are verified when they enter the cache; a load then compares (size, mtime) with the
        stamp written at that moment, which catches truncation and replacement for the cost of a
        stat. A file that fails the full re-check is removed (and fetched again by the caller).
        """
        if _is_link(target):
            _warn(
                "zoo: cached weights for %r are a symbolic link (%s), not a file zoo wrote; removed, fetching again",
                model,
                target,
            )
            target.unlink(missing_ok=True)
            return False
        if not _is_regular(target):
            return False
        if self._stamp_matches(target, sha256):
            return True
        # Not `self.verify`: the stamp is rewritten only on this function's own hash comparison, so a plugin
        # that patched `verify` while loaded cannot get a forged file stamped as trusted for later loads (#20).
        problem, digest = _examine(self, CacheEntry(target, sha256, target.stat().st_size, "cached"))
        if problem is None:
            self._write_stamp(
                target, sha256, digest=str(digest), kind="downloaded" if digest == sha256 else "converted"
            )
            return True
        _warn("zoo: cached weights for %r are corrupt (%s); removed, fetching again", model, problem)
        target.unlink(missing_ok=True)
        return False

    # -- sources -----------------------------------------------------------------------------------
    def _acquire(
        self, variant: WeightsVariant, parsed: ParsedUri, model: str, pin: Pin | None = None
    ) -> tuple[Path, bool, str]:
        """A local file whose sha256 matched, whether the store owns it (may move/delete it), and its sha256."""
        if parsed.scheme == "hf":
            return self._acquire_hf(variant, parsed, model, pin)
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
                f"(now: {mirrors}) or run 'zoo fetch {model}' with network access."
            )
        from ._download import download

        partial = self._dir(self.downloads_dir) / f"{self._key(variant)}-{parsed.file_name}.partial"
        if _is_link(partial):
            _warn("zoo: removed %s, a symbolic link zoo did not create (it is never written through)", partial)
            partial.unlink()
        download(variant.uri, partial, expected_size=variant.size, desc=f"{model} {parsed.file_name}")
        try:
            sha = self._check_hash(partial, variant, model, pin=pin)
        except WeightsError:
            partial.unlink(missing_ok=True)  # wrong bytes are never worth resuming
            raise
        return partial, True, sha

    def _acquire_hf(
        self, variant: WeightsVariant, parsed: ParsedUri, model: str, pin: Pin | None
    ) -> tuple[Path, bool, str]:
        """An ``hf://`` file (zoo/_hf.py): the Hugging Face cache, a mirror, then the hub, every copy checked
        against the expected sha256: the card's, else the one recorded on first use, else the one the hub publishes
        (asked once; offline, the name the Hugging Face cache gave the blob)."""
        from . import _hf
        from ._uri import parse_hf

        file = parse_hf(variant.uri)
        no_network = _config.offline() or _hf.offline()
        expected = variant.sha256 or (pin.sha256 if pin else None)
        hub = None
        if expected is None and not no_network:
            hub = _hf.hub_file(file, model=model)
            expected = hub.sha256  # set: hub_file refuses a file without one here
        found = _hf.cached_blob(file, expected)
        if found is not None:
            try:
                return found[0], False, self._check_hash(found[0], variant, model, pin=pin, expected=found[1])
            except WeightsError as exc:
                _warn("zoo: not using the Hugging Face cache's copy: %s", exc)
        mirrored = self._from_mirror(variant, parsed, model, pin, expected=expected) if expected else None
        if mirrored is not None:
            return mirrored[0], False, mirrored[1]
        if no_network:
            switch = "ZOO_OFFLINE=1" if _config.offline() else "HF_HUB_OFFLINE=1"
            raise WeightsError(
                f"Weights for {model!r} ({file.path} from {file.repo_id}) are in neither zoo's cache nor the Hugging "
                f"Face cache ({_hf.cache_dir()}), and {switch} forbids asking {_hf.endpoint()}. Run 'zoo fetch "
                f"{model}' with network access, or put the file in a ZOO_MIRROR directory."
            )
        if hub is None:
            hub = _hf.hub_file(file, model=model, need_sha256=variant.sha256 is None)
        if hub.sha256 is not None and hub.sha256 != expected:
            recorded = f"zoo recorded on its first download ({pin.recorded if pin else '?'})"
            whose = "the card pins" if variant.sha256 else recorded
            raise WeightsError(
                f"Weights for {model!r}: the hub now publishes sha256 {hub.sha256} for {file.path} in "
                f"{file.repo_id}@{file.revision}, but {whose} {expected}. The file was replaced upstream; nothing "
                f"was downloaded. Pin a revision (hf://{file.repo_id}@<commit>/{file.path}), or if you trust the "
                f"new file, 'zoo cache rm {model}' and fetch again."
            )
        from ._download import download

        partial = self._dir(self.downloads_dir) / f"{self._key(variant)}-{parsed.file_name}.partial"
        if _is_link(partial):
            _warn("zoo: removed %s, a symbolic link zoo did not create (it is never written through)", partial)
            partial.unlink()
        size = variant.size if variant.size is not None else hub.size
        download(hub.location, partial, expected_size=size, desc=f"{model} {parsed.file_name}")
        try:
            sha = self._check_hash(partial, variant, model, pin=pin, expected=expected)
        except WeightsError:
            partial.unlink(missing_ok=True)
            raise
        return partial, True, sha

    def _from_mirror(
        self,
        variant: WeightsVariant,
        parsed: ParsedUri,
        model: str,
        pin: Pin | None = None,
        *,
        expected: str | None = None,
    ) -> tuple[Path, str] | None:
        if not safe_file_name(parsed.file_name):
            return None
        for directory in _config.mirror_dirs():
            candidate = directory / parsed.file_name
            if not candidate.is_file():
                continue
            try:
                sha = self._check_hash(candidate, variant, model, pin=pin, expected=expected)
            except WeightsError as exc:
                _warn("zoo: ignoring mirror copy: %s", exc)
                continue
            return candidate, sha
        return None

    # -- verification ------------------------------------------------------------------------------
    def _check_hash(
        self,
        path: Path,
        variant: WeightsVariant,
        model: str,
        *,
        local: bool = False,
        pin: Pin | None = None,
        expected: str | None = None,
    ) -> str:
        """The file's sha256, if it is the card's file: the full sha256 on the card, else the one recorded
        for the card's prefix (`pin`), else (first download) any hash that starts with the prefix. `expected`:
        the full sha256 a source vouches for (the hub's, for hf://), which the bytes must have as well."""
        from ._hashing import sha256_file

        wanted = variant.sha256 or (pin.sha256 if pin else expected or f"{variant.sha256_prefix}...")
        size = path.stat().st_size
        if variant.size is not None and size != variant.size:
            raise WeightsError(
                f"Weights file {path} for {model!r} has {size} bytes, the card expects {variant.size} "
                f"(truncated or wrong file; sha256 expected {wanted})."
            )
        actual = sha256_file(path)
        if expected is not None and actual != expected:
            raise WeightsError(
                f"Weights file {path} for {model!r} is corrupt or not the expected file: sha256 {actual}, "
                f"expected {expected}. It was not used."
            )
        if variant.sha256 is not None and actual != variant.sha256:
            fix = (
                "if you changed the file on purpose, put its new sha256 on the card"
                if local
                else "delete it or fetch it again"
            )
            raise WeightsError(
                f"Weights file {path} for {model!r} is corrupt or not the expected file: sha256 {actual}, "
                f"expected {variant.sha256}. It was not loaded; {fix}."
            )
        if variant.sha256 is None and pin is not None and actual != pin.sha256:
            shares = "also starts" if actual.startswith(pin.sha256_prefix) else "does not even start"
            raise WeightsError(
                f"Weights file {path} for {model!r} has sha256 {actual}, but {variant.uri} was pinned to "
                f"{pin.sha256} on its first verified download ({pin.recorded}); the new hash {shares} with the "
                f"publisher's prefix {pin.sha256_prefix}. The publisher changed the file, or it was tampered "
                f"with; it was not loaded. If you trust the new file, reset the pin with 'zoo cache rm {model}' "
                f"and fetch again (record: {pin.path})."
            )
        if variant.sha256 is None and pin is None and expected is None and not actual.startswith(_prefix(variant)):
            raise WeightsError(
                f"Weights file {path} for {model!r} is corrupt or not the expected file: sha256 {actual} does not "
                f"start with the publisher's prefix {variant.sha256_prefix}. It was not loaded; delete it or "
                "fetch it again."
            )
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
            raw = json.loads(_read_nofollow(path))
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
            if not (
                isinstance(sha, str) and len(sha) == 64 and set(sha) <= _SHA256_HEX and sha.startswith(_prefix(variant))
            ):
                problem = f"its sha256 {sha!r} is not a full sha256 starting with {_prefix(variant) or '(any)'}"
        if problem is not None:
            raise WeightsError(
                f"Pin record {path} for {model!r} is damaged or not this card's ({problem}); without it the "
                f"publisher's file cannot be told from another, so nothing was loaded. Reset it with "
                f"'zoo cache rm {model}' and fetch again."
            )
        size = raw.get("size")
        return Pin(
            path,
            variant.uri,
            str(variant.sha256_prefix),
            raw["sha256"],
            size if isinstance(size, int) else 0,
            str(raw.get("recorded", "?")),
            str(raw.get("source", "?")),
        )

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
        self._dir(self.pins_dir)
        _write_atomic(self.pin_path(variant), json.dumps(record, indent=2, sort_keys=True) + "\n")

    def _verify_local(self, path: Path, variant: WeightsVariant, model: str) -> None:
        """Hash a local file once per (size, mtime): shipped weights are checked without a cost per load."""
        assert variant.sha256 is not None  # _resolve refuses a local variant without it
        if not self._stamp_matches(path, variant.sha256):
            self._check_hash(path, variant, model, local=True)
            self._check_header(path, model=model)
            self._write_stamp(path, variant.sha256, digest=variant.sha256, kind="local")

    @staticmethod
    def _stamp_of(path: Path, stat_of: Path | None = None) -> dict[str, object]:
        st = (stat_of or path).stat()
        return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def _record(self, sha256: str) -> dict[str, object] | None:
        """The store's record for the file named `sha256` (see the module docstring); None if absent or unreadable."""
        try:
            raw = json.loads(_read_nofollow(self.verified_dir / f"{sha256}.json"))
        except (OSError, ValueError):
            return None
        return raw if isinstance(raw, dict) else None

    def _stamp_matches(self, path: Path, sha256: str) -> bool:
        """The file is the one zoo recorded: same path, size and mtime, and a record with its digest (a stat)."""
        record = self._record(sha256)
        if record is None or not isinstance(record.get("sha256"), str):
            return False  # a record from before #20 (no digest): verified once more, then rewritten
        return self._stamp_fields_match(record, path)

    def _stamp_fields_match(self, record: dict[str, object], path: Path) -> bool:
        return {k: record.get(k) for k in ("path", "size", "mtime_ns")} == self._stamp_of(path)

    def _write_stamp(self, path: Path, sha256: str, *, digest: str, kind: str, stat_of: Path | None = None) -> None:
        """Record `path` as verified; `stat_of`: the file that is about to be renamed to `path`."""
        record = {**self._stamp_of(path, stat_of), "sha256": digest, "kind": kind}
        try:
            self._dir(self.verified_dir)
            _write_atomic(self.verified_dir / f"{sha256}.json", json.dumps(record))
        except (OSError, WeightsError):
            pass  # a read-only cache only costs a re-check next time

    # -- cache management --------------------------------------------------------------------------
    def entries(self) -> list[CacheEntry]:
        """Every file of the cache: verified weights, interrupted downloads and conversions, planted links."""
        out = []
        for path in sorted(self.weights_dir.glob("*.safetensors")) if _is_regular_dir(self.weights_dir) else []:
            if _is_link(path):
                out.append(CacheEntry(path, path.stem, 0, "link"))
            else:
                out.append(CacheEntry(path, path.stem, path.stat().st_size, self._kind(path)))
        # a conversion killed mid-way (kill -9, power loss) leaves weights/<sha>.safetensors.<pid>.partial (#20)
        partials = [*self.downloads_dir.glob("*.partial")] if _is_regular_dir(self.downloads_dir) else []
        partials += [*self.weights_dir.glob("*.partial")] if _is_regular_dir(self.weights_dir) else []
        for path in sorted(partials):
            sha = path.name.split("-", 1)[0] if path.parent == self.downloads_dir else path.name.split(".", 1)[0]
            out.append(CacheEntry(path, sha, os.lstat(path).st_size, "partial"))
        return out

    def _kind(self, path: Path) -> str:
        """What zoo's record says the file is; the file's own metadata is not asked (#20)."""
        record = self._record(path.stem)
        if record is not None and record.get("kind") in ("downloaded", "converted"):
            return str(record["kind"])
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy"):
                return "downloaded"  # no record: `verify` decides by the file's name alone
        except Exception:  # noqa: BLE001 - a broken header shows up in `verify`
            return "unreadable"

    def verify(self, entry: CacheEntry) -> str | None:
        """None when the file is intact, else what is wrong with it.

        Only the card's sha256 (the file's name) or the sha256 zoo recorded when it converted the file
        (verified/<sha>.json) count: a converted file's metadata, digest included, is written by whoever
        wrote the file, so it proves nothing (#20).
        """
        if entry.kind == "partial":
            return None
        return _examine(self, entry)[0]

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
        if pin_path.is_file() and _unlink_if_there(pin_path):
            removed.append(pin_path)
        return removed

    def remove(self, sha256: str) -> list[Path]:
        """Delete every cache file of one weights identity (the partial download included)."""
        removed = []
        candidates = [
            self.weights_dir / f"{sha256}.safetensors",
            self.verified_dir / f"{sha256}.json",
            *self.downloads_dir.glob(f"{sha256}-*.partial"),
            *self.weights_dir.glob(f"{sha256}.safetensors.*.partial"),
        ]
        for path in candidates:
            # A link is removed itself, never what it points at. Another `zoo cache rm` may take a file between
            # the check and the unlink (the soak saw a FileNotFoundError): it is gone either way.
            if (_is_regular(path) or _is_link(path)) and _unlink_if_there(path):
                removed.append(path)
        return removed


def _unlink_if_there(path: Path) -> bool:
    """Remove `path`; False if another process removed it first."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
