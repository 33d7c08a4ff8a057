"""The S3 target (`s3://bucket/prefix`): any S3-compatible store, through aiobotocore.

A file smaller than one part is one PUT; a larger one is a multipart upload of 8 MiB parts,
sent as the download goes (memory stays at about one part), and completed only when the whole
file is there: until then no object exists under the key, and a failure aborts the upload.
Uploads a crash left open under the prefix are aborted at start. A single PUT records the
file's sha256 in the object's metadata (`x-amz-meta-sha256`), so a copy committed just before a
crash counts as done; a multipart object has none and is copied again in that case.

Errors name the operation and the S3 error code, never a key, a credential or the endpoint's
answer in full.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Final

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from watcher.config.settings import MirrorConfig
from watcher.errors import MirrorError
from watcher.mirror.fetch import Fetched

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

PART_BYTES: Final = 8 * 1024 * 1024  # S3's minimum part is 5 MiB; 10,000 parts make 80 GiB
_SHA256_KEY: Final = "sha256"


def _error(what: str, exc: Exception) -> MirrorError:
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code") or "error"
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return MirrorError(f"{what}: {code}" + (f" (HTTP {status})" if status else ""))
    return MirrorError(f"{what}: {type(exc).__name__}")


class S3Target:
    """Objects under `prefix/` in `bucket`, one per key."""

    needs_sync = False  # an object exists, whole, once its PUT or upload is complete

    def __init__(self, config: MirrorConfig, *, part_bytes: int = PART_BYTES) -> None:
        assert config.bucket is not None
        self._config = config
        self.bucket = config.bucket
        self.prefix = config.prefix
        self.part_bytes = part_bytes
        self._stack = contextlib.AsyncExitStack()
        self._client: S3Client | None = None

    def object_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.object_key(key)}"

    async def client(self) -> S3Client:
        if self._client is None:
            s3 = self._config.s3
            secret = s3.secret_access_key.reveal() if s3.secret_access_key else None
            config = AioConfig(
                connect_timeout=30,
                read_timeout=60,
                retries={"max_attempts": 3, "mode": "standard"},
                max_pool_connections=max(10, self._config.max_concurrency * 2),
                # Most S3-compatible stores want the bucket in the path, not the host name.
                s3={"addressing_style": "path" if s3.endpoint_url else "auto"},
            )
            self._client = await self._stack.enter_async_context(
                get_session().create_client(
                    "s3",
                    endpoint_url=s3.endpoint_url,
                    region_name=s3.region,
                    aws_access_key_id=s3.access_key_id.reveal() if s3.access_key_id else None,
                    aws_secret_access_key=secret,
                    config=config,
                )
            )
        return self._client

    async def prepare(self, *, stale_before: float | None = None) -> int:
        client = await self.client()
        try:
            await client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise _error(f"cannot use the bucket {self.bucket}", exc) from None
        aborted = 0
        try:
            paginator = client.get_paginator("list_multipart_uploads")
            prefix = self.object_key("")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for upload in page.get("Uploads", []):
                    initiated = upload.get("Initiated")
                    if (
                        stale_before is not None
                        and initiated is not None
                        and initiated.timestamp() >= stale_before
                    ):
                        continue  # another instance may be uploading it now
                    await client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted += 1
        except (ClientError, BotoCoreError) as exc:
            raise _error("cannot abort the uploads a crash left", exc) from None
        return aborted

    def upload(self, key: str) -> S3Upload:
        return S3Upload(self, self.object_key(key))

    async def sync(self, keys: Sequence[str]) -> None:
        return None

    async def stat(self, key: str) -> Fetched | None:
        client = await self.client()
        try:
            head = await client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise _error("cannot look up a mirrored file", exc) from None
        except BotoCoreError as exc:
            raise _error("cannot look up a mirrored file", exc) from None
        sha256 = head.get("Metadata", {}).get(_SHA256_KEY)
        if not sha256:
            return None  # a multipart copy: fetched again rather than trusted unchecked
        return Fetched(sha256, head["ContentLength"], head.get("ContentType"))

    async def delete_older_than(self, before: float) -> list[str]:
        client = await self.client()
        prefix = self.object_key("")
        deleted: list[str] = []
        try:
            paginator = client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                old = [
                    o["Key"]
                    for o in page.get("Contents", [])
                    if _timestamp(o["LastModified"]) < before
                ]
                if not old:
                    continue
                await client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in old], "Quiet": True},
                )
                deleted += [k.removeprefix(prefix) for k in old]
        except (ClientError, BotoCoreError) as exc:
            raise _error("cannot delete expired mirrored files", exc) from None
        return deleted

    async def close(self) -> None:
        self._client = None
        await self._stack.aclose()


def _timestamp(value: datetime) -> float:
    return value.timestamp()


class S3Upload:
    """One object: a PUT when it fits in one part, else a multipart upload completed at the
    end. `commit` or `abort` ends it."""

    def __init__(self, target: S3Target, object_key: str) -> None:
        self._target = target
        self._key = object_key
        self._content_type: str | None = None
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []

    def start(self, content_type: str | None) -> None:
        self._content_type = content_type

    @property
    def _type(self) -> str:
        # S3 needs one; a file whose server named none is stored as bytes.
        return self._content_type or "application/octet-stream"

    @property
    def write_blocking(self) -> Callable[[bytes], None] | None:
        return None  # parts are sent from the event loop

    async def write(self, pieces: Sequence[bytes]) -> None:
        for piece in pieces:
            self._buffer += piece
        if len(self._buffer) >= self._target.part_bytes:
            await self._send_part()

    async def _send_part(self) -> None:
        client = await self._target.client()
        bucket = self._target.bucket
        body, self._buffer = bytes(self._buffer), bytearray()
        try:
            if self._upload_id is None:
                created = await client.create_multipart_upload(
                    Bucket=bucket, Key=self._key, ContentType=self._type
                )
                self._upload_id = created["UploadId"]
            number = len(self._parts) + 1
            part = await client.upload_part(
                Bucket=bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=body
            )
        except (ClientError, BotoCoreError) as exc:
            raise _error("the S3 upload failed", exc) from None
        self._parts.append({"PartNumber": number, "ETag": part["ETag"]})

    async def commit(self, fetched: Fetched) -> None:
        client = await self._target.client()
        bucket = self._target.bucket
        try:
            if self._upload_id is None:
                await client.put_object(
                    Bucket=bucket,
                    Key=self._key,
                    Body=bytes(self._buffer),
                    Metadata={_SHA256_KEY: fetched.sha256},
                    ContentType=self._type,
                )
                self._buffer = bytearray()
                return
            if self._buffer:
                await self._send_part()
            await client.complete_multipart_upload(
                Bucket=bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
            self._upload_id = None
        except (ClientError, BotoCoreError) as exc:
            raise _error("the S3 upload failed", exc) from None

    async def abort(self) -> None:
        self._buffer = bytearray()
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is None:
            return
        with contextlib.suppress(ClientError, BotoCoreError, OSError):
            client = await self._target.client()
            await client.abort_multipart_upload(
                Bucket=self._target.bucket, Key=self._key, UploadId=upload_id
            )
