"""Media download: URL forms, tokens, host policy (SSRF), redirects, retries, limits, local files.

Network-free through ``httpx.MockTransport`` and an injected DNS resolver, plus a real
``http.server`` on 127.0.0.1 for the timeout behaviour.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from state.contracts import ImageRef, PredictRequest
from state.settings import Settings
from tests.workers._helpers import serving, worker_settings
from workers.errors import MediaError
from workers.media import MediaFetcher
from workers.runtime import Runtime

LS = "http://ls.test:8080"
PNG = b"\x89PNG\r\n\x1a\n-fake-image-bytes"
# A JWT-shaped personal access token: header {"alg":"HS256","typ":"JWT"}.
PAT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.c2lnbmF0dXJl"

Handler = Callable[[httpx.Request], httpx.Response]


def _resolver(table: dict[str, list[str]]) -> Callable[[str, int], list[str]]:
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"unknown host {host}")
        return table[host]

    return resolve


def _fetcher(tmp_path: Path, handler: Handler, *, dns: dict[str, list[str]] | None = None, **kw: Any) -> MediaFetcher:
    settings = worker_settings(tmp_path / "home", "ViT-B-32", label_studio_url=LS, **kw)
    return MediaFetcher(settings, transport=httpx.MockTransport(handler), resolver=_resolver(dns or {}))


def _error(fetcher: MediaFetcher, url: str, task_id: int | None = None) -> MediaError:
    with pytest.raises(MediaError) as info:
        fetcher.fetch(ImageRef(key="k", url=url, task_id=task_id))
    return info.value


def _reason(fetcher: MediaFetcher, url: str, task_id: int | None = None) -> str:
    return _error(fetcher, url, task_id).reason


@pytest.mark.parametrize("storage_status", [404, 400])
def test_upload_through_ls_with_legacy_token_and_fallback(tmp_path: Path, storage_status: int) -> None:
    # LS 1.23 answers /storage-data/uploaded/ with 400 when uploads are not served by nginx.
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), request.headers.get("authorization")))
        if request.url.path == "/storage-data/uploaded/":
            return httpx.Response(storage_status)
        if request.url.raw_path == b"/data/upload/3/a%20b.png":
            return httpx.Response(200, content=PNG)
        return httpx.Response(500)

    fetcher = _fetcher(tmp_path, handler, label_studio_api_key="legacy123")
    assert fetcher.fetch(ImageRef(key="1", url="/data/upload/3/a%20b.png")) == PNG
    assert seen == [
        (f"{LS}/storage-data/uploaded/?filepath=upload/3/a%20b.png", "Token legacy123"),
        (f"{LS}/data/upload/3/a%20b.png", "Token legacy123"),
    ]
    info = fetcher.source_info(ImageRef(key="1", url="/data/upload/3/a%20b.png"))
    assert info is not None and info.max_age_s is None  # uploads are immutable


def test_ls_under_a_path_prefix(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        ok = request.url.path == "/label-studio/storage-data/uploaded/"
        return httpx.Response(200, content=PNG) if ok else httpx.Response(404)

    settings = worker_settings(tmp_path, "x", label_studio_url="http://ls.test/label-studio")
    fetcher = MediaFetcher(settings, transport=httpx.MockTransport(handler))
    assert fetcher.fetch(ImageRef(key="1", url="/label-studio/data/upload/1/x.png")) == PNG


def test_personal_access_token_is_exchanged_cached_and_refreshed(tmp_path: Path) -> None:
    calls = {"refresh": 0}
    valid = {"access-1": False, "access-2": True}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/token/refresh/":
            assert json.loads(request.content) == {"refresh": PAT}
            calls["refresh"] += 1
            return httpx.Response(200, json={"access": f"access-{calls['refresh']}"})
        token = (request.headers.get("authorization") or "").removeprefix("Bearer ")
        return httpx.Response(200, content=PNG) if valid.get(token) else httpx.Response(401)

    fetcher = _fetcher(tmp_path, handler, label_studio_api_key=PAT)
    ref = ImageRef(key="1", url="/data/local-files/?d=set/a.png")
    # access-1 gets a 401 (expired): refreshed once, then the request succeeds with access-2.
    assert fetcher.fetch(ref) == PNG
    assert fetcher.fetch(ref) == PNG
    assert calls["refresh"] == 2


def test_refused_pat_is_unauthorized(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"detail": "token not valid"})

    assert _reason(_fetcher(tmp_path, handler, label_studio_api_key=PAT), "/data/upload/1/a.png") == "unauthorized"


def test_token_only_to_ls_and_allowlisted_hosts(tmp_path: Path) -> None:
    seen: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[request.url.host] = request.headers.get("authorization")
        return httpx.Response(200, content=PNG)

    dns = {"images.example.com": ["93.184.216.34"]}
    fetcher = _fetcher(
        tmp_path, handler, dns=dns, label_studio_api_key="legacy123", media_allowed_hosts=["images.example.com"]
    )
    assert fetcher.fetch(ImageRef(key="1", url="https://images.example.com/a.png")) == PNG
    assert fetcher.fetch(ImageRef(key="2", url=f"{LS}/data/upload/1/a.png")) == PNG
    assert seen == {"images.example.com": None, "ls.test": "Token legacy123"}


def test_by_default_only_label_studio_is_fetched(tmp_path: Path) -> None:
    # The default refuses every host but Label Studio's origin, public ones included, before any
    # request is sent (server-side request forgery), with the setting to change in the message.
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(str(request.url))
        return httpx.Response(200, content=PNG)

    dns = {"images.example.com": ["93.184.216.34"]}
    fetcher = _fetcher(tmp_path, handler, dns=dns)
    assert fetcher.settings.media_allowed_hosts == [] and fetcher.settings.media_allow_public_hosts is False
    assert Settings.model_fields["media_allow_public_hosts"].default is False
    for url in (
        "https://images.example.com/a.png",
        "http://93.184.216.34/a.png",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://ls.test:9999/data/upload/1/a.png",  # Label Studio's host, another port: another origin
    ):
        with pytest.raises(MediaError) as info:
            fetcher.fetch(ImageRef(key="1", url=url))
        assert info.value.reason == "forbidden_host", url
        assert "ASSISTANT_MEDIA_ALLOWED_HOSTS" in info.value.message
    assert "'*.images.example.com'" in _error(fetcher, "https://cdn.images.example.com/a.png").message
    assert sent == []
    assert fetcher.fetch(ImageRef(key="2", url=f"{LS}/data/upload/1/a.png")) == PNG


def test_refused_hosts_are_per_image_errors_in_a_batch(runtime: Runtime, image_dir: Path) -> None:
    from workers import pipeline

    refs = [ImageRef(key=p.name, url=str(p)) for p in sorted(image_dir.glob("*.png"))[:2]]
    refs += [
        ImageRef(key="public", url="https://images.example.com/a.png"),
        ImageRef(key="metadata", url="http://169.254.169.254/latest/meta-data/"),
    ]
    result = pipeline.predict(runtime, PredictRequest(labels=["cat", "dog"], images=refs))
    errors = {item.key: item.error for item in result.items if item.error is not None}
    assert set(errors) == {"public", "metadata"}
    assert {e.reason for e in errors.values()} == {"forbidden_host"}
    assert "not allowed" in errors["public"].message and "ASSISTANT_MEDIA_ALLOWED_HOSTS" in errors["public"].message
    assert all(item.scores is not None for item in result.items if item.key not in errors)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.4",
        "169.254.169.254",
        "100.64.0.1",
        "::1",
        "fd00:ec2::254",
        "::ffff:10.0.0.1",
    ],
)
def test_non_public_addresses_are_refused_even_with_public_hosts_on(tmp_path: Path, address: str) -> None:
    ok = lambda r: httpx.Response(200, content=PNG)  # noqa: E731
    fetcher = _fetcher(tmp_path, ok, dns={"evil.example": [address]}, media_allow_public_hosts=True)
    assert _reason(fetcher, "http://evil.example/a.png") == "forbidden_host"
    literal = f"[{address}]" if ":" in address else address
    assert _reason(fetcher, f"http://{literal}/a.png") == "forbidden_host"


def test_allowlist_and_the_public_opt_in(tmp_path: Path) -> None:
    ok = lambda r: httpx.Response(200, content=PNG)  # noqa: E731
    dns = {
        "minio.internal": ["10.0.0.5"],
        "cdn.example.com": ["93.184.216.34"],
        "mixed.example.com": ["93.184.216.34", "10.0.0.9"],
    }
    fetcher = _fetcher(tmp_path, ok, dns=dns, media_allowed_hosts=["*.internal", "::1"])
    assert fetcher.fetch(ImageRef(key="1", url="http://minio.internal/b/a.png")) == PNG  # private, but listed
    assert fetcher.fetch(ImageRef(key="2", url="http://[0:0::1]:9000/a.png")) == PNG  # the listed address
    assert _reason(fetcher, "http://internal/a.png") == "forbidden_host"  # "*.internal" needs a subdomain
    assert _reason(fetcher, "http://cdn.example.com/a.png") == "forbidden_host"
    public = _fetcher(tmp_path, ok, dns=dns, media_allow_public_hosts=True)
    assert public.fetch(ImageRef(key="3", url="http://cdn.example.com/a.png")) == PNG
    assert _reason(public, "http://mixed.example.com/a.png") == "forbidden_host"  # one private address suffices
    assert _reason(public, "http://minio.internal/a.png") == "forbidden_host"  # private and not listed
    assert _reason(public, "http://nowhere.example/a.png") == "not_found"  # does not resolve


@pytest.mark.parametrize("address", ["169.254.169.254", "fe80::1", "fd00:ec2::254"])
def test_an_allowlisted_name_never_reaches_the_metadata_service(tmp_path: Path, address: str) -> None:
    ok = lambda r: httpx.Response(200, content=PNG)  # noqa: E731
    dns = {"rebound.example.com": [address]}
    fetcher = _fetcher(tmp_path, ok, dns=dns, media_allowed_hosts=["*.example.com"])
    error = _error(fetcher, "http://rebound.example.com/a.png")
    assert error.reason == "forbidden_host" and "link-local" in error.message
    # Listing the address itself is the operator's explicit choice.
    literal = f"[{address}]" if ":" in address else address
    explicit = _fetcher(tmp_path, ok, dns=dns, media_allowed_hosts=[address])
    assert explicit.fetch(ImageRef(key="1", url=f"http://{literal}/a.png")) == PNG


def test_redirects_are_checked_by_the_same_rule_and_drop_the_token(tmp_path: Path) -> None:
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.headers.get("authorization")))
        if request.url.host == "ls.test" and "presign" in request.url.path:
            return httpx.Response(303, headers={"location": "https://bucket.s3.example.com/a.png?X-Amz-Signature=s"})
        if request.url.host == "ls.test" and request.url.path == "/data/upload/1/moved.png":
            return httpx.Response(302, headers={"location": "http://10.0.0.7/moved.png"})
        if request.url.host == "bucket.s3.example.com":
            return httpx.Response(200, content=PNG)
        if request.url.host == "public.example.com":
            return httpx.Response(302, headers={"location": "http://169.254.169.254/latest/meta-data/"})
        return httpx.Response(404)

    dns = {"bucket.s3.example.com": ["52.1.2.3"], "public.example.com": ["93.184.216.34"]}
    s3 = ImageRef(key="1", url="s3://bucket/dir/a.png", task_id=42)
    # Cloud storage that Label Studio presigns is another host: refused until it is allowlisted,
    # with the redirect and the wildcard to add in the message (never the signature).
    strict = _fetcher(tmp_path, handler, dns=dns, label_studio_api_key="legacy123")
    with pytest.raises(MediaError) as info:
        strict.fetch(s3)
    assert info.value.reason == "forbidden_host"
    assert "redirected to the host bucket.s3.example.com" in info.value.message
    assert "'*.s3.example.com'" in info.value.message and "Signature" not in info.value.message
    assert seen == [("ls.test", "Token legacy123")]

    seen.clear()
    allowed = ["*.s3.example.com", "public.example.com"]
    fetcher = _fetcher(tmp_path, handler, dns=dns, label_studio_api_key="legacy123", media_allowed_hosts=allowed)
    assert fetcher.fetch(s3) == PNG
    assert seen == [("ls.test", "Token legacy123"), ("bucket.s3.example.com", None)]
    # A trusted page redirecting to the metadata service, and Label Studio redirecting to an
    # unlisted private host, are refused at the redirect, before any request goes there.
    assert _reason(fetcher, "http://public.example.com/img") == "forbidden_host"
    assert _reason(fetcher, "/data/upload/1/moved.png") == "forbidden_host"
    opt_in = _fetcher(tmp_path, handler, dns=dns, media_allow_public_hosts=True)
    assert _reason(opt_in, "http://public.example.com/img") == "forbidden_host"
    assert {host for host, _ in seen} == {"ls.test", "bucket.s3.example.com", "public.example.com"}


def test_presign_url_and_task_id(tmp_path: Path) -> None:
    urls: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        urls.append(request.url)
        return httpx.Response(200, content=PNG)

    fetcher = _fetcher(tmp_path, handler)
    uri = "gs://bucket/some dir/ü.png"
    fetcher.fetch(ImageRef(key="1", url=uri, task_id=7))
    assert urls[0].path == "/tasks/7/presign/"
    assert base64.urlsafe_b64decode(urls[0].params["fileuri"]).decode() == uri
    assert _reason(fetcher, "azure-blob://container/a.png") == "bad_url"  # no task id
    info = fetcher.source_info(ImageRef(key="1", url=uri, task_id=7))
    assert info is not None and info.key == uri  # the identity survives re-signing


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (404, "not_found"),
        (410, "not_found"),
        (401, "unauthorized"),
        (403, "forbidden"),
        (413, "too_large"),
        (400, "bad_url"),
        (418, "error"),
    ],
)
def test_status_codes_map_to_reasons(tmp_path: Path, status: int, reason: str) -> None:
    assert _reason(_fetcher(tmp_path, lambda r: httpx.Response(status)), f"{LS}/data/upload/1/a.png") == reason


def test_transient_errors_are_retried(tmp_path: Path) -> None:
    answers = [httpx.Response(503), httpx.Response(200, content=PNG)]
    fetcher = _fetcher(tmp_path, lambda r: answers.pop(0), media_retries=1)
    assert fetcher.fetch(ImageRef(key="1", url=f"{LS}/data/upload/1/a.png")) == PNG

    attempts = {"n": 0}

    def down(request: httpx.Request) -> httpx.Response:
        attempts["n"] += 1
        raise httpx.ConnectError("connection refused", request=request)

    assert _reason(_fetcher(tmp_path, down, media_retries=2), f"{LS}/a.png") == "error"
    assert attempts["n"] == 3


def test_size_limits(tmp_path: Path) -> None:
    big = b"x" * 2000
    declared = _fetcher(tmp_path, lambda r: httpx.Response(200, content=big), media_max_bytes=1000)
    assert _reason(declared, f"{LS}/data/upload/1/a.png") == "too_large"

    def streamed(request: httpx.Request) -> httpx.Response:
        # No Content-Length: the limit must hold while streaming.
        return httpx.Response(200, stream=httpx.ByteStream(big), headers={"transfer-encoding": "chunked"})

    assert _reason(_fetcher(tmp_path, streamed, media_max_bytes=1000), f"{LS}/data/upload/1/a.png") == "too_large"


@pytest.mark.parametrize(
    "url",
    [
        "/data/local-files/?d=../secret.png",
        "/data/local-files/?d=/etc/passwd",
        "/data/upload/../../x.png",
        "/data/local-files/",
        "ftp://host/a.png",
        "relative/path.png",
        "data:image/png;base64,AAAA",
    ],
)
def test_bad_urls(tmp_path: Path, url: str) -> None:
    assert _reason(_fetcher(tmp_path, lambda r: httpx.Response(200, content=PNG)), url) == "bad_url"


def test_local_files_from_mounted_roots(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "set").mkdir(parents=True)
    (docs / "set" / "a.png").write_bytes(PNG)
    (tmp_path / "outside.png").write_bytes(PNG)
    (docs / "set" / "link.png").symlink_to(tmp_path / "outside.png")
    fail = lambda r: httpx.Response(500)  # noqa: E731 - nothing may go over HTTP here
    fetcher = _fetcher(tmp_path, fail, label_studio_local_files_root=docs, media_local_roots=[docs])
    assert fetcher.fetch(ImageRef(key="1", url="/data/local-files/?d=set/a.png")) == PNG
    assert fetcher.fetch(ImageRef(key="2", url=str(docs / "set" / "a.png"))) == PNG
    assert fetcher.fetch(ImageRef(key="3", url=f"file://{docs}/set/a.png")) == PNG
    assert _reason(fetcher, "/data/local-files/?d=set/link.png") == "forbidden"  # a symlink out of the root
    assert _reason(fetcher, str(tmp_path / "outside.png")) == "forbidden"
    assert _reason(fetcher, str(docs / "set" / "missing.png")) == "not_found"
    info = fetcher.source_info(ImageRef(key="1", url=str(docs / "set" / "a.png")))
    assert info is not None and info.validator is not None and info.max_age_s is None
    no_roots = _fetcher(tmp_path, fail)
    assert _reason(no_roots, str(docs / "set" / "a.png")) == "forbidden"


def test_absolute_urls_of_label_studios_own_media_are_read_from_disk_too(tmp_path: Path) -> None:
    # A synced Local Files storage writes http://<LS host>/data/local-files/?d=... (LS 1.23 with --host).
    docs, media = tmp_path / "docs", tmp_path / "media"
    (docs / "photos").mkdir(parents=True)
    (docs / "photos" / "a.png").write_bytes(PNG)
    (media / "upload" / "4").mkdir(parents=True)
    (media / "upload" / "4" / "f.png").write_bytes(PNG)
    asked: list[str] = []

    def elsewhere(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(200, content=b"from-the-network")

    fetcher = _fetcher(
        tmp_path, elsewhere, label_studio_local_files_root=docs, label_studio_media_root=media,
        media_allowed_hosts=["other.test"], dns={"other.test": ["10.0.0.9"]},
    )  # fmt: skip
    assert fetcher.fetch(ImageRef(key="1", url=f"{LS}/data/local-files/?d=photos/a.png")) == PNG
    assert fetcher.fetch(ImageRef(key="2", url=f"{LS}/data/upload/4/f.png")) == PNG
    assert asked == []
    assert _reason(fetcher, f"{LS}/data/local-files/?d=../outside.png") in {"forbidden", "bad_url"}
    # The same path on another host is that host's file: downloaded from it, never read from disk.
    assert (
        fetcher.fetch(ImageRef(key="3", url="http://other.test/data/local-files/?d=photos/a.png"))
        == b"from-the-network"
    )
    assert asked == ["http://other.test/data/local-files/?d=photos/a.png"]


def test_uploads_from_mounted_media_root(tmp_path: Path) -> None:
    media = tmp_path / "media"
    (media / "upload" / "4").mkdir(parents=True)
    (media / "upload" / "4" / "f.png").write_bytes(PNG)
    fetcher = _fetcher(tmp_path, lambda r: httpx.Response(500), label_studio_media_root=media)
    assert fetcher.fetch(ImageRef(key="1", url="/data/upload/4/f.png")) == PNG


def test_local_file_size_limit(tmp_path: Path) -> None:
    (tmp_path / "big.png").write_bytes(b"x" * 5000)
    fetcher = _fetcher(tmp_path, lambda r: httpx.Response(500), media_local_roots=[tmp_path], media_max_bytes=100)
    assert _reason(fetcher, str(tmp_path / "big.png")) == "too_large"


def test_real_server_timeout_and_success(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(PNG)
    with serving(tmp_path) as server:
        settings = worker_settings(
            tmp_path / "home", "x", media_allowed_hosts=["127.0.0.1"], media_read_timeout_s=0.3, media_retries=0
        )
        fetcher = MediaFetcher(settings)
        try:
            assert fetcher.fetch(ImageRef(key="1", url=f"{server.url}/a.png")) == PNG
            assert _reason(fetcher, f"{server.url}/missing.png") == "not_found"
            server.delay_s = 1.0
            assert _reason(fetcher, f"{server.url}/a.png") == "timeout"
        finally:
            fetcher.close()
        # Without the allowlist, loopback is refused before any request is made.
        before = server.total_requests()
        strict = MediaFetcher(worker_settings(tmp_path / "home", "x"))
        try:
            assert _reason(strict, f"{server.url}/a.png") == "forbidden_host"
        finally:
            strict.close()
        assert server.total_requests() == before
