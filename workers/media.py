"""Fetching the images of Label Studio tasks: every URL form, tokens, limits, and per-image errors.

URL forms (docs/workers.md, "Images"):

- ``/data/upload/<pid>/<file>``: Label Studio's uploads, read from the mounted media directory
  when ``label_studio_media_root`` is set, else downloaded through Label Studio
  (``/storage-data/uploaded/?filepath=...``, falling back to ``/data/upload/...``).
- ``/data/local-files/?d=<rel>``: read under ``label_studio_local_files_root`` when mounted, else
  downloaded through Label Studio. ``..`` and absolute paths are refused (path traversal).
- ``s3://``, ``gs://``, ``azure-blob://``: through Label Studio's presign endpoint
  (``/tasks/<task_id>/presign/?fileuri=<base64url(uri)>``), which needs the task id.
- ``http(s)://``: downloaded directly; Label Studio's token goes only to Label Studio's origin.
- other absolute paths: plain local files, only under ``media_local_roots`` (the CLI, tests).

Security (no server-side request forgery): images come only from Label Studio's origin and the
hosts of ``media_allowed_hosts``; any other host is refused as ``forbidden_host`` before a byte is
sent, and every redirect is checked by the same rule (a cloud storage URL that Label Studio's
presign endpoint redirects to must be allowlisted too), dropping the token when it leaves Label
Studio. A name on the allowlist never reaches a link-local address (cloud metadata at
169.254.169.254) unless that address is listed itself. ``media_allow_public_hosts`` is an opt-in
for any other host whose every address is public (never loopback, private, link-local or
reserved). Responses are bounded in bytes, time and decoded pixels. Every failure is a
:class:`~workers.errors.MediaError` with a machine ``reason`` that the pipeline turns into a
per-image ``ImageFailure``, never a failed batch.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import httpx

from state.contracts import ImageRef
from state.settings import Settings
from studio.errors import StudioError
from studio.tokens import LabelStudioAuth
from workers.errors import MediaError

__all__ = ["MediaFetcher", "SourceInfo"]

logger = logging.getLogger(__name__)

CLOUD_SCHEMES = frozenset({"s3", "gs", "gcs", "azure-blob", "azure-spi"})
# Label Studio paths that are served by Label Studio itself (with its token).
_LS_PREFIXES = ("/data/", "/tasks/", "/storage-data/", "/api/")
_MAX_REDIRECTS = 5
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# A Retry-After longer than this is not worth holding a worker for; the image fails instead.
_MAX_RETRY_AFTER_S = 10.0
_CHUNK = 64 * 1024
# AWS's IPv6 instance metadata address: a unique-local (private) address, not a link-local one,
# yet as dangerous as 169.254.169.254 (instance credentials).
_METADATA_ADDRESSES = frozenset({ipaddress.ip_address("fd00:ec2::254")})

Resolver = Callable[[str, int], list[str]]


@dataclass(frozen=True)
class SourceInfo:
    """Where an image lives, for the feature cache's source index.

    Attributes:
        key: The location's identity (an absolute URL, a file path, a cloud URI).
        validator: Changes whenever the content may have changed (local files: size and mtime);
            None when nothing cheap can tell.
        max_age_s: How long the content may be assumed unchanged; None for immutable sources.
    """

    key: str
    validator: str | None
    max_age_s: float | None


@dataclass(frozen=True)
class _Local:
    path: Path
    roots: tuple[Path, ...]


@dataclass(frozen=True)
class _Remote:
    # Tried in order; the next one only when the previous answered 404, or 400 (LS 1.23 answers
    # /storage-data/uploaded/ with 400 when uploads are not served through nginx).
    urls: tuple[str, ...]
    immutable: bool = False
    identity: str | None = None


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    port = url.port or (443 if url.scheme == "https" else 80)
    return url.scheme, url.host.lower(), port


class MediaFetcher:
    """Downloads or reads task images; one per worker process (it owns connection and thread pools).

    Args:
        settings: The ``media_*``, ``label_studio_*`` settings.
        transport: An httpx transport to use instead of the network (tests: ``httpx.MockTransport``).
        resolver: Host name to addresses, for the public-address check (tests inject one).
    """

    def __init__(
        self, settings: Settings, *, transport: httpx.BaseTransport | None = None, resolver: Resolver | None = None
    ) -> None:
        self.settings = settings
        self._ls = httpx.URL(settings.label_studio_url.rstrip("/") + "/")
        timeout = httpx.Timeout(
            connect=settings.media_connect_timeout_s,
            read=settings.media_read_timeout_s,
            write=settings.media_read_timeout_s,
            pool=settings.media_read_timeout_s,
        )
        limits = httpx.Limits(max_connections=2 * settings.media_concurrency, max_keepalive_connections=32)
        self._client = httpx.Client(
            transport=transport,
            timeout=timeout,
            limits=limits,
            verify=settings.media_verify_ssl,
            follow_redirects=False,
        )
        self._auth = LabelStudioAuth(
            settings.label_studio_api_key.get_secret_value(), settings.label_studio_url, self._client
        )
        self._resolver = resolver or _system_resolver
        self._pool: ThreadPoolExecutor | None = None
        # Resolution is a pure function of the URL and the settings; re-tagging 10,000 images
        # would otherwise spend ~0.3 s parsing the same URLs again.
        self._resolve_cached = functools.lru_cache(maxsize=65_536)(self._resolve_url)

    # --- lifecycle ------------------------------------------------------------------------------
    @property
    def pool(self) -> ThreadPoolExecutor:
        """The download threads (created on first use, so never before a worker forks)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.settings.media_concurrency, thread_name_prefix="media")
        return self._pool

    def close(self) -> None:
        """Stop the threads and close the connections."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._client.close()

    # --- public API -----------------------------------------------------------------------------
    def fetch(self, ref: ImageRef) -> bytes:
        """The raw bytes of one image.

        Raises:
            MediaError: With ``reason`` ``not_found``, ``unauthorized``, ``forbidden``, ``timeout``,
                ``too_large``, ``forbidden_host``, ``bad_url`` or ``error``.
        """
        target = self._resolve(ref)
        if isinstance(target, _Local):
            return self._read_local(target)
        for i, url in enumerate(target.urls):
            try:
                return self._download(url)
            except MediaError as exc:
                if exc.reason not in ("not_found", "bad_url") or i == len(target.urls) - 1:
                    raise
        raise AssertionError("unreachable: a remote target has at least one URL")

    def source_info(self, ref: ImageRef) -> SourceInfo | None:
        """Identity and freshness of an image's location, or None when it cannot be told cheaply."""
        try:
            target = self._resolve(ref)
        except MediaError:
            return None
        if isinstance(target, _Local):
            try:
                stat = target.path.stat()
            except OSError:
                return None
            return SourceInfo(str(target.path), f"{stat.st_size}:{stat.st_mtime_ns}", None)
        key = target.identity or target.urls[-1]
        if target.immutable:
            return SourceInfo(key, None, None)
        ttl = self.settings.media_source_ttl_s
        return SourceInfo(key, None, float(ttl)) if ttl > 0 else None

    # --- resolution -----------------------------------------------------------------------------
    def _ls_url(self, path_and_query: str) -> str:
        return str(self._ls.join(path_and_query.lstrip("/")))

    def _resolve(self, ref: ImageRef) -> _Local | _Remote:
        return self._resolve_cached(ref.url, ref.task_id)

    def _resolve_url(self, url: str, task_id: int | None) -> _Local | _Remote:
        raw = url.strip()
        parts = urlsplit(raw)
        scheme = parts.scheme.lower()
        if scheme in ("http", "https") and not self._own_media(raw):
            return _Remote((raw,))
        if scheme in CLOUD_SCHEMES:
            return self._presign(task_id, raw)
        if scheme == "file":
            return self._plain_path(Path(unquote(parts.path)))
        if scheme not in ("", "http", "https") or not (scheme or raw.startswith("/")):
            raise MediaError(
                f"unsupported image URL {raw[:200]!r}",
                reason="bad_url",
                fix="use /data/upload/..., /data/local-files/?d=..., http(s)://, s3://, gs://, azure-blob:// "
                "or an absolute local path",
            )
        path = parts.path
        base = self._ls.path.rstrip("/")
        # Label Studio served under a path prefix (https://host/label-studio/) puts the prefix in
        # task URLs too; the SDK misses this case (label-studio-sdk#575).
        if base and path.startswith(base + "/data/"):
            path = path[len(base) :]
        if path.startswith("/data/upload/"):
            return self._upload(path[len("/data/upload/") :])
        if path.startswith("/data/local-files"):
            return self._local_files(parts.query)
        if path.startswith(_LS_PREFIXES):
            return _Remote((self._ls_url(raw),))
        return self._plain_path(Path(unquote(path)))

    def _own_media(self, url: str) -> bool:
        """An absolute URL of Label Studio's own uploads or local files, resolved like the relative ones.

        A synced Local Files storage gives its tasks absolute URLs on Label Studio's host
        (``http://127.0.0.1:8080/data/local-files/?d=photos/a.jpg`` with ``--host``, LS 1.23), so
        they too are read from disk under ``label_studio_local_files_root`` when it is set.
        """
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            return False
        base = self._ls.path.rstrip("/")
        return self._is_ls(parsed) and parsed.path.startswith((f"{base}/data/upload/", f"{base}/data/local-files"))

    def _presign(self, task_id: int | None, uri: str) -> _Remote:
        if task_id is None:
            raise MediaError(
                f"cannot fetch the cloud storage URI {uri[:200]!r} without its task id",
                reason="bad_url",
                why="Label Studio signs cloud URLs per task (/tasks/<id>/presign/)",
                fix="send the Label Studio task id in ImageRef.task_id",
            )
        encoded = base64.urlsafe_b64encode(uri.encode("utf-8")).decode("ascii")
        return _Remote((self._ls_url(f"tasks/{task_id}/presign/?fileuri={encoded}"),), identity=uri)

    def _upload(self, rel: str) -> _Local | _Remote:
        rel = unquote(rel)
        _check_relative(rel)
        root = self.settings.label_studio_media_root
        if root is not None:
            return _Local(root / "upload" / rel, (root,))
        quoted = quote(rel)
        return _Remote(
            (self._ls_url(f"storage-data/uploaded/?filepath=upload/{quoted}"), self._ls_url(f"data/upload/{quoted}")),
            immutable=True,
            identity=self._ls_url(f"data/upload/{quoted}"),
        )

    def _local_files(self, query: str) -> _Local | _Remote:
        values = parse_qs(query).get("d")
        if not values or not values[0]:
            raise MediaError(
                "a /data/local-files/ URL without ?d=", reason="bad_url", fix="use /data/local-files/?d=dir/file.jpg"
            )
        rel = values[0]
        _check_relative(rel)
        root = self.settings.label_studio_local_files_root
        if root is not None:
            return _Local(root / rel, (root,))
        return _Remote((self._ls_url(f"data/local-files/?d={quote(rel)}"),))

    def _plain_path(self, path: Path) -> _Local:
        roots = tuple(self.settings.media_local_roots)
        if not roots:
            raise MediaError(
                f"local image paths are not allowed here ({str(path)[:200]})",
                reason="forbidden",
                fix="set ASSISTANT_MEDIA_LOCAL_ROOTS to the folders images may be read from, "
                "e.g. '[\"/srv/images\"]', or serve the files through Label Studio",
            )
        return _Local(path, roots)

    # --- local files ----------------------------------------------------------------------------
    def _read_local(self, target: _Local) -> bytes:
        try:
            # Non-strict: the allowed-folder check comes first, so that nothing outside the
            # roots can be probed for existence.
            resolved = target.path.resolve()
        except OSError as exc:
            raise MediaError(f"cannot open image file {target.path}", reason="error", why=str(exc)) from exc
        if not any(resolved.is_relative_to(root.resolve()) for root in target.roots):
            raise MediaError(
                f"image file {target.path} is outside the allowed folders",
                reason="forbidden",
                why=f"it resolves to {resolved}; allowed: {[str(r) for r in target.roots]}",
            )
        if not resolved.exists():
            raise MediaError(f"image file {target.path} does not exist", reason="not_found")
        if not resolved.is_file():
            raise MediaError(f"{target.path} is not a file", reason="not_found")
        size = resolved.stat().st_size
        if size > self.settings.media_max_bytes:
            limit = self.settings.media_max_bytes
            raise MediaError(
                f"image file {target.path} is {size} bytes", reason="too_large", why=f"the limit is {limit}"
            )
        try:
            return resolved.read_bytes()
        except PermissionError as exc:
            raise MediaError(f"no permission to read {target.path}", reason="forbidden") from exc

    # --- HTTP -----------------------------------------------------------------------------------
    def _is_ls(self, url: httpx.URL) -> bool:
        return _origin(url) == _origin(self._ls)

    def _check_host(self, url: httpx.URL, redirected_from: httpx.URL | None = None) -> None:
        """Refuse a URL whose host is not allowed (``forbidden_host``) before anything is sent to it."""
        if url.scheme not in ("http", "https") or not url.host:
            raise MediaError(f"unsupported URL {_safe(url)!r}", reason="bad_url")
        host = url.host.lower()
        if self._is_ls(url):
            return
        if any(_host_matches(host, p) for p in self.settings.media_allowed_hosts):
            self._refuse_link_local(url, host)
            return
        if not self.settings.media_allow_public_hosts:
            origin = f"{_safe(redirected_from)} redirected to" if redirected_from is not None else "the image URL names"
            raise MediaError(
                f"{origin} the host {host}, which is not allowed",
                reason="forbidden_host",
                why="images are fetched only from Label Studio and the hosts of ASSISTANT_MEDIA_ALLOWED_HOSTS",
                fix=f"if {host} is trusted, add it (or a wildcard such as {_wildcard(host)!r}) to "
                "ASSISTANT_MEDIA_ALLOWED_HOSTS, a JSON list",
            )
        for ip in self._addresses(url, host):
            if not ip.is_global:
                raise MediaError(
                    f"host {host} resolves to the non-public address {ip}",
                    reason="forbidden_host",
                    why="loopback, private, link-local (cloud metadata) and reserved addresses are refused",
                    fix="add the host to ASSISTANT_MEDIA_ALLOWED_HOSTS if it is trusted",
                )

    def _refuse_link_local(self, url: httpx.URL, host: str) -> None:
        # An allowlisted *name* (a wildcard above all) may be pointed anywhere by whoever runs its
        # DNS; the one place it must never lead is the cloud metadata service.
        if _ip_literal(host) is not None:
            return  # the address itself is listed: the operator asked for it
        try:
            addresses = self._addresses(url, host)
        except MediaError as exc:
            if exc.reason == "not_found":
                return  # the download itself reports a name that does not resolve
            raise
        for ip in addresses:
            if ip.is_link_local or ip in _METADATA_ADDRESSES:
                raise MediaError(
                    f"the allowed host {host} resolves to the link-local address {ip}",
                    reason="forbidden_host",
                    why="link-local addresses serve cloud metadata (credentials at 169.254.169.254)",
                    fix=f"list {ip} itself in ASSISTANT_MEDIA_ALLOWED_HOSTS if {host} really lives there",
                )

    def _addresses(self, url: httpx.URL, host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        # An IP literal is taken as is; a name is resolved (every address it may connect to).
        literal = _ip_literal(host)
        if literal is not None:
            return [literal]
        try:
            resolved = self._resolver(host, _origin(url)[2])
        except OSError as exc:
            raise MediaError(f"host {host} does not resolve", reason="not_found", why=str(exc)) from exc
        found = []
        for address in resolved:
            ip = _ip_literal(address)
            if ip is None:
                raise MediaError(f"host {host} resolved to {address!r}, which is not an address", reason="error")
            found.append(ip)
        return found

    def _download(self, url_text: str) -> bytes:
        deadline = time.monotonic() + self.settings.media_total_timeout_s
        url = httpx.URL(url_text)
        previous: httpx.URL | None = None
        for _ in range(_MAX_REDIRECTS + 1):
            self._check_host(url, previous)
            status, location, body = self._get_with_retries(url, deadline)
            if location is None:
                return _expect_ok(status, body, url)
            previous, url = url, url.join(location)
        raise MediaError(f"too many redirects from {url_text[:200]}", reason="bad_url")

    def _get_with_retries(self, url: httpx.URL, deadline: float) -> tuple[int, str | None, bytes | None]:
        attempts = self.settings.media_retries + 1
        refreshed = False
        attempt = 0
        while True:
            headers = self._ls_headers(url)
            delay: float | None = None
            try:
                status, location, body, retry_after = self._get_once(url, headers, deadline)
            except httpx.TimeoutException as exc:
                failure = MediaError(f"timed out fetching {_safe(url)}", reason="timeout", why=type(exc).__name__)
            except httpx.TransportError as exc:
                why = f"{type(exc).__name__}: {exc}"
                failure = MediaError(f"could not fetch {_safe(url)}", reason="error", why=why)
            else:
                if status == 401 and headers and not refreshed and self._refresh_auth(headers):
                    refreshed = True
                    continue
                if status not in _RETRY_STATUSES:
                    return status, location, body
                failure = MediaError(f"the server of {_safe(url)} answered HTTP {status}", reason="error")
                delay = retry_after
            attempt += 1
            if attempt >= attempts:
                raise failure
            backoff = self.settings.media_retry_backoff_s * 2 ** (attempt - 1)
            wait = min(max(backoff, delay or 0.0), _MAX_RETRY_AFTER_S)
            if time.monotonic() + wait >= deadline:
                raise failure
            time.sleep(wait)

    def _ls_headers(self, url: httpx.URL) -> dict[str, str]:
        """Label Studio's ``Authorization`` header for its own URLs; a refused key fails this image."""
        if not self._is_ls(url):
            return {}
        try:
            return self._auth.headers()
        except StudioError as exc:
            raise MediaError(exc.what, reason="unauthorized", why=exc.why, fix=exc.fix) from exc

    def _refresh_auth(self, rejected: dict[str, str]) -> bool:
        try:
            return self._auth.refresh(rejected)
        except StudioError as exc:
            raise MediaError(exc.what, reason="unauthorized", why=exc.why, fix=exc.fix) from exc

    def _get_once(
        self, url: httpx.URL, headers: dict[str, str], deadline: float
    ) -> tuple[int, str | None, bytes | None, float | None]:
        limit = self.settings.media_max_bytes
        with self._client.stream("GET", url, headers=headers) as resp:
            if resp.is_redirect:
                return resp.status_code, resp.headers.get("location"), None, None
            if resp.status_code != 200:
                return resp.status_code, None, None, _retry_after(resp.headers.get("retry-after"))
            declared = resp.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise MediaError(
                    f"the image at {_safe(url)} is {declared} bytes", reason="too_large", why=f"the limit is {limit}"
                )
            chunks: list[bytes] = []
            size = 0
            for chunk in resp.iter_bytes(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise MediaError(f"the image at {_safe(url)} is larger than {limit} bytes", reason="too_large")
                if time.monotonic() > deadline:
                    # A server trickling bytes never trips the read timeout; the deadline does.
                    raise MediaError(
                        f"fetching {_safe(url)} took longer than {self.settings.media_total_timeout_s} s",
                        reason="timeout",
                    )
                chunks.append(chunk)
            return 200, None, b"".join(chunks), None


def _expect_ok(status: int, body: bytes | None, url: httpx.URL) -> bytes:
    if status == 200 and body is not None:
        return body
    where = _safe(url)
    if status in (404, 410):
        raise MediaError(f"image not found (HTTP {status}) at {where}", reason="not_found")
    if status == 401:
        raise MediaError(
            f"authentication needed (HTTP 401) for {where}",
            reason="unauthorized",
            fix="set ASSISTANT_LABEL_STUDIO_API_KEY to a valid Label Studio token",
        )
    if status == 403:
        raise MediaError(f"access refused (HTTP 403) to {where}", reason="forbidden")
    if status == 413:
        raise MediaError(f"the image is too large (HTTP 413) at {where}", reason="too_large")
    if status in (400, 414):
        raise MediaError(f"the request was rejected (HTTP {status}) by {where}", reason="bad_url")
    raise MediaError(f"the server of {where} answered HTTP {status}", reason="error")


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    return None


def _safe(url: httpx.URL) -> str:
    # Presigned URLs carry credentials in the query string: never put them in messages or logs.
    return str(url.copy_with(query=None))[:200]


def _host_matches(host: str, pattern: str) -> bool:
    pattern = pattern.strip().lower().strip("[]")
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    literal = _ip_literal(pattern)
    if literal is not None:
        # "::1" and "0:0:0:0:0:0:0:1" are one address.
        return _ip_literal(host) == literal
    return host == pattern


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _wildcard(host: str) -> str:
    # bucket.s3.amazonaws.com -> *.s3.amazonaws.com; a two-label name or an address stays itself.
    if _ip_literal(host) is not None or host.count(".") < 2:
        return host
    return "*." + host.split(".", 1)[1]


def _check_relative(rel: str) -> None:
    parts = rel.replace("\\", "/").split("/")
    if not rel or "\x00" in rel or rel.startswith(("/", "\\")) or ".." in parts:
        raise MediaError(
            f"refused the path {rel[:200]!r}",
            reason="bad_url",
            why="it is absolute or climbs out of its folder with '..' (path traversal)",
        )
