"""Weights URIs: which schemes zoo reads and which file names it will ever write or look up.

Stdlib only: the registry validates URIs while listing models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit

__all__ = ["HfFile", "ParsedUri", "check_uri", "parse_hf", "parse_uri", "safe_file_name"]

SCHEMES: Final = ("https", "http", "hf", "file", "pkg")
_SAFE_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$")
# the Hugging Face hub's repo ids: "<namespace>/<name>", letters, digits, '-', '_', '.' (no '--' or '..')
_HF_PART: Final = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")
_HF_REVISION: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")


@dataclass(frozen=True)
class ParsedUri:
    scheme: str  # "https", "http", "hf", "file", "pkg" or "path"
    location: str  # the URL for http(s); the path for file/path; "<package>/<path>" for pkg; see HfFile for hf
    file_name: str


@dataclass(frozen=True)
class HfFile:
    """A file on the Hugging Face hub: ``hf://<namespace>/<name>[@<revision>]/<path in the repo>``.

    The form is the one ``huggingface_hub``'s ``HfFileSystem`` reads; a revision that contains '/' (``refs/pr/1``)
    is written URL-quoted (``@refs%2Fpr%2F1``).
    """

    repo_id: str
    revision: str  # "main" when the URI names none
    path: str


def parse_hf(uri: str) -> HfFile:
    """Split an ``hf://`` URI; ValueError with the reason when it is not one zoo reads."""
    parts = urlsplit(uri)
    if parts.scheme.lower() != "hf" or parts.query or parts.fragment:
        raise ValueError("is not hf://<namespace>/<repo>[@<revision>]/<file> (no query or fragment)")
    namespace = parts.netloc
    repo_rev, *rest = parts.path.lstrip("/").split("/")
    name, _, revision = repo_rev.partition("@")
    revision = unquote(revision) if revision else "main"
    if not (_HF_PART.match(namespace) and _HF_PART.match(name)) or "--" in namespace + name or ".." in namespace + name:
        raise ValueError("needs a repo id: hf://<namespace>/<repo>[@<revision>]/<file>")
    if not _HF_REVISION.match(revision) or ".." in revision:
        raise ValueError(f"has revision {revision!r}, which is not a branch, tag or commit name")
    segments = [unquote(seg) for seg in rest]
    if not segments or any(seg in ("", ".", "..") or "\\" in seg for seg in segments):
        raise ValueError("needs a file path inside the repo (no '..', no empty segments)")
    if not safe_file_name(segments[-1]):
        raise ValueError(f"ends in {segments[-1]!r}, which is not a plain file name")
    return HfFile(f"{namespace}/{name}", revision, "/".join(segments))


def safe_file_name(name: str) -> bool:
    """A bare file name with no directory part, no '..', no hidden file: safe to join to a directory."""
    return bool(_SAFE_NAME.match(name)) and ".." not in name


def parse_uri(uri: str) -> ParsedUri:
    """Split a weights URI; raise ValueError with the reason when zoo will not read it."""
    if "\x00" in uri:
        raise ValueError("contains a NUL byte")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if not parts.netloc:
            raise ValueError("has no host")
        segments = unquote(parts.path).split("/")
        if any(seg in (".", "..") for seg in segments):
            raise ValueError("has '.' or '..' path segments")
        name = segments[-1]
        if not safe_file_name(name):
            raise ValueError(f"ends in {name!r}, which is not a plain file name")
        return ParsedUri(scheme, uri, name)
    if scheme == "hf":
        hf = parse_hf(uri)
        return ParsedUri("hf", uri, hf.path.rsplit("/", 1)[-1])
    if scheme == "pkg":
        package = parts.netloc
        rel = unquote(parts.path).lstrip("/")
        if not re.match(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$", package):
            raise ValueError("pkg:// needs a package name: pkg://<package>/<path inside it>")
        segments = rel.split("/")
        if not rel or any(seg in ("", ".", "..") for seg in segments) or "\\" in rel:
            raise ValueError("pkg:// path must stay inside the package (no '..', no empty segments)")
        if not safe_file_name(segments[-1]):
            raise ValueError(f"ends in {segments[-1]!r}, which is not a plain file name")
        return ParsedUri("pkg", f"{package}/{rel}", segments[-1])
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(
                f"names host {parts.netloc!r}; a file URI needs an absolute path: file:///abs/path "
                "(or write a plain path, relative to the registry file)"
            )
        path = unquote(parts.path)
        return ParsedUri("file", path, Path(path).name)
    if scheme and len(scheme) > 1:  # "c:" is a Windows drive, not a scheme
        raise ValueError(f"unsupported scheme {scheme!r}; use one of {', '.join(SCHEMES)} or a plain path")
    return ParsedUri("path", uri, Path(uri).name)


def check_uri(uri: str) -> str | None:
    """The reason `uri` is unusable, or None."""
    try:
        parse_uri(uri)
    except ValueError as exc:
        return f"{uri!r} {exc}"
    return None
