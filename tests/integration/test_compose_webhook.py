"""compose.yaml's Label Studio settings let the project webhook reach the backend, against the real server.

In the compose stack the backend sits at a private address (``http://backend:9090``). Label
Studio 1.23's SSRF protection, with its default list, refuses that webhook URL, and annotations
never reach the assistant. compose.yaml keeps the protection on with a list of its own; this test
starts the pinned Label Studio with exactly those values (read from compose.yaml) and connects two
stand-in backends: one on this machine's non-loopback address, which must get its webhook, and one
on loopback, which must still be refused (the protection is on).
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest
import yaml

from tests.integration.ls_harness import MULTILABEL_CONFIG, LSClient, RecordingBackend, running_server
from tests.integration.processes import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SSRF_SETTINGS = ("SSRF_PROTECTION_ENABLED", "USE_DEFAULT_BANNED_SUBNETS", "USER_ADDITIONAL_BANNED_SUBNETS")


def _outward_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address: str = sock.getsockname()[0]
    return None if address.startswith("127.") else address


def _webhooks(client: LSClient, project: int) -> list[str]:
    hooks = client.http.get("/api/webhooks/", params={"project": project}, headers=client.headers()).json()
    return [h["url"] for h in hooks]


def test_composes_label_studio_creates_the_webhook_to_a_private_backend_and_not_to_loopback(tmp_path: Path) -> None:
    from tests.integration.ls_harness import find_ls_venv

    if find_ls_venv() is None:
        pytest.skip("Label Studio venv not found: set ASSISTANT_LS_VENV or run `make ls-venv`")
    address = _outward_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to put a backend on")
    compose = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())
    environment = compose["services"]["label-studio"]["environment"]
    settings = {name: str(environment[name]) for name in SSRF_SETTINGS}
    assert settings["SSRF_PROTECTION_ENABLED"] == "true"
    banned = [ipaddress.ip_network(n) for n in settings["USER_ADDITIONAL_BANNED_SUBNETS"].split(",")]
    if any(ipaddress.ip_address(address) in net for net in banned if net.version == 4):
        pytest.skip(f"this machine's address {address} is one compose bans on purpose")

    with running_server(tmp_path, extra_env=settings) as server, LSClient.for_server(server) as client:
        private = client.create_project(MULTILABEL_CONFIG, title="private")
        with RecordingBackend(host=address) as backend:
            client.connect_ml_backend(private, backend.url)
        assert _webhooks(client, private) == [f"{backend.url}/webhook"]

        loopback = client.create_project(MULTILABEL_CONFIG, title="loopback")
        with RecordingBackend() as local, pytest.raises(Exception, match="403"):
            client.connect_ml_backend(loopback, local.url)
        assert _webhooks(client, loopback) == []
