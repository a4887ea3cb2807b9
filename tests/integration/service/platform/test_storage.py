"""The object store client against the real embedded S3 server (rclone) of the test stack."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.awsrequest import AWSResponse

from service.platform.net import free_port
from service.platform.settings import Settings
from service.platform.storage import (
    ChecksumMismatch,
    ObjectNotFound,
    ObjectStore,
    S3Credentials,
    StoreUnavailable,
    store_credentials,
)
from tests.integration.helpers import RunningStack


@pytest.fixture(scope="module")
def store(stack: RunningStack) -> ObjectStore:
    creds = store_credentials(Settings(data_dir=stack.data_dir))
    creds = S3Credentials(
        stack.state["s3_endpoint_url"], creds.access_key_id, creds.secret_access_key, creds.region
    )
    return ObjectStore(creds, "tuneserve")


def test_put_get_head_list_delete(store: ObjectStore) -> None:
    info = store.put_bytes("t/a.txt", b"hello")
    assert info.sha256 == hashlib.sha256(b"hello").hexdigest()
    assert store.get_bytes("t/a.txt") == b"hello"
    assert store.get_bytes("t/a.txt", sha256=info.sha256) == b"hello"
    assert store.head("t/a.txt").size == 5
    store.put_json("t/b.json", {"x": 1})
    assert store.get_json("t/b.json") == {"x": 1}
    assert [o.key for o in store.list("t/")] == ["t/a.txt", "t/b.json"]
    store.delete("t/a.txt")
    assert not store.exists("t/a.txt")
    with pytest.raises(ObjectNotFound):
        store.get_bytes("t/a.txt")


def test_large_file_goes_up_in_parts_and_comes_back_intact(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(20 * 1024 * 1024))  # above the 8 MiB multipart threshold
    parts = []
    store._s3.meta.events.register("before-call.s3.UploadPart", lambda **kw: parts.append(1))
    info = store.put_file("big/big.bin", src)
    assert len(parts) == 3  # 20 MiB in 8 MiB parts
    out = store.download_file("big/big.bin", tmp_path / "back.bin")
    assert hashlib.sha256(out.read_bytes()).hexdigest() == info.sha256
    assert b"".join(store.open("big/big.bin")) == src.read_bytes()


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: object):
        yield self.data


def _break_uploads(
    store: ObjectStore, broken: int, code: str = "InternalError", status: int = 500
) -> list[str]:
    """Make the server answer every part of the first `broken` multipart uploads with an error, as the
    embedded rclone server does once its stream of an upload's parts to disk has failed; returns the ids of
    the uploads started."""
    uploads: list[str] = []

    def answer(request, **_: object) -> AWSResponse | None:
        upload = parse_qs(urlsplit(request.url).query)["uploadId"][0]
        if upload not in uploads:
            uploads.append(upload)
        if uploads.index(upload) >= broken:
            return None  # sent to the server
        body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
        return AWSResponse(request.url, status, {"Content-Type": "application/xml"}, _Body(body))

    store._s3.meta.events.register("before-send.s3.UploadPart", answer)
    return uploads


def test_an_upload_the_server_broke_is_started_again(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "state.bin"
    src.write_bytes(os.urandom(9 * 1024 * 1024))  # two parts
    own = ObjectStore(store.credentials, store.bucket)  # the injected errors stay with this client
    uploads = _break_uploads(own, broken=2)
    info = own.put_file("retry/state.bin", src)
    assert len(uploads) == 3  # two broken uploads, the third lands
    assert store.get_bytes("retry/state.bin", sha256=info.sha256) == src.read_bytes()


def test_an_upload_that_keeps_failing_or_is_refused_says_why(store: ObjectStore, tmp_path: Path) -> None:
    from service.platform.storage import StoreError

    src = tmp_path / "state.bin"
    src.write_bytes(os.urandom(9 * 1024 * 1024))
    own = ObjectStore(store.credentials, store.bucket)
    uploads = _break_uploads(own, broken=99)
    with pytest.raises(StoreError, match=r"InternalError \(s3://tuneserve/retry/lost.bin\)"):
        own.put_file("retry/lost.bin", src)
    assert len(uploads) == 3 and not store.exists("retry/lost.bin")
    # An error that a new try would not mend is not retried.
    refused = ObjectStore(store.credentials, store.bucket)
    uploads = _break_uploads(refused, broken=99, code="EntityTooLarge", status=400)
    with pytest.raises(StoreError, match="EntityTooLarge"):
        refused.put_file("retry/refused.bin", src)
    assert len(uploads) == 1


def test_folders_round_trip_and_delete_prefix(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "adapter"
    (src / "sub").mkdir(parents=True)
    (src / "adapter_config.json").write_text("{}")
    (src / "sub" / "weights.bin").write_bytes(b"\x00" * 100)
    assert len(store.put_folder("adapters/m1", src)) == 2
    back = store.get_folder("adapters/m1", tmp_path / "back")
    assert (back / "sub" / "weights.bin").read_bytes() == b"\x00" * 100
    assert (back / "adapter_config.json").read_text() == "{}"
    assert store.delete_prefix("adapters/m1/") == 3  # two files and the checksums
    with pytest.raises(ObjectNotFound):
        store.get_folder("adapters/m1", tmp_path / "again")
    # A file left out of the checksums may change later (an adapter's manifest gains eval results): the
    # folder still downloads. It once failed so, when a job's evals finished while its adapter was read.
    (src / "manifest.json").write_text('{"evals": []}')
    store.put_folder("adapters/m2", src, unchecked=("manifest.json",))
    store.put_bytes("adapters/m2/manifest.json", b'{"evals": [{"run_id": "r"}]}')
    again = store.get_folder("adapters/m2", tmp_path / "m2")
    assert json.loads((again / "manifest.json").read_text())["evals"] == [{"run_id": "r"}]
    store.put_folder("adapters/m3", src)  # as before: the manifest checked
    store.uncheck("adapters/m3", "manifest.json")
    store.put_bytes("adapters/m3/manifest.json", b"{}")
    assert (store.get_folder("adapters/m3", tmp_path / "m3") / "manifest.json").read_text() == "{}"


def test_corruption_on_disk_is_detected(store: ObjectStore, stack: RunningStack, tmp_path: Path) -> None:
    info = store.put_bytes("corrupt/x.bin", b"original bytes")
    src = tmp_path / "folder"
    src.mkdir()
    (src / "w.bin").write_bytes(b"weights")
    store.put_folder("corrupt/folder", src)
    bucket = stack.data_dir / "objects" / "tuneserve"
    (bucket / "corrupt" / "x.bin").write_bytes(b"tampered bytes")
    (bucket / "corrupt" / "folder" / "w.bin").write_bytes(b"WEIGHTS")
    with pytest.raises(ChecksumMismatch, match="corrupt/x.bin"):
        store.get_bytes("corrupt/x.bin", sha256=info.sha256)
    with pytest.raises(ChecksumMismatch, match="corrupt/folder/w.bin"):
        store.get_folder("corrupt/folder", tmp_path / "back")
    assert not (tmp_path / "back" / "w.bin").exists()  # a corrupt download is not left behind


def test_unreachable_store_is_a_clear_error() -> None:
    dead = ObjectStore(S3Credentials(f"http://127.0.0.1:{free_port()}", "a", "b", "us-east-1"), "tuneserve")
    with pytest.raises(StoreUnavailable, match="unreachable.*TUNESERVE_S3_ENDPOINT_URL"):
        dead.ping()


def test_wrong_credentials_name_the_settings(store: ObjectStore) -> None:
    from service.platform.storage import StoreError

    bad = ObjectStore(
        S3Credentials(store.credentials.endpoint_url, "wrong", "wrong", "us-east-1"), "tuneserve"
    )
    with pytest.raises(StoreError, match="TUNESERVE_S3_ACCESS_KEY_ID"):
        bad.put_bytes("x", b"y")
