"""The embedded S3 server (the real `rclone serve s3`): its key pair reaches it through the environment,
never its command line, which any local user can read."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.platform.net import free_port
from service.platform.settings import Settings
from service.platform.storage import ObjectStore, S3Credentials, StoreError, start_embedded_s3, wait_for_store


def test_the_key_pair_is_not_on_the_command_line_and_is_enforced(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, s3_bucket="bkt")
    secret = 'se"cret-' + "x" * 20  # a quote survives the trip (rclone takes no comma in a key)
    port = free_port()
    proc = start_embedded_s3(
        settings, S3Credentials(None, "key1", secret, "us-east-1"), port, tmp_path / "log"
    )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        store = ObjectStore(S3Credentials(endpoint, "key1", secret, "us-east-1"), "bkt")
        wait_for_store(store, proc)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
        assert "rclone" in cmdline and secret not in cmdline and "key1" not in cmdline
        store.put_bytes("k", b"v")
        assert store.get_bytes("k") == b"v"
        wrong = ObjectStore(S3Credentials(endpoint, "key1", secret + "!", "us-east-1"), "bkt")
        with pytest.raises(StoreError):
            wrong.get_bytes("k")
    finally:
        proc.terminate()
        proc.wait(10)
