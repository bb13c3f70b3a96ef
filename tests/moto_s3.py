"""moto's S3 server on 127.0.0.1, from its own venv ``.venv-moto`` (``make install`` builds it from
requirements-moto.lock). If it is missing or does not start, the test that needs it fails: never skipped."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MOTO_SERVER = PROJECT_ROOT / ".venv-moto" / "bin" / "moto_server"
START_ATTEMPTS = 300  # x 0.1 s: moto imports a lot before it listens


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def env(self) -> dict[str, str]:
        """The standard AWS variables that resources.objectstore reads (moto accepts any credentials)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "moto-test",
            "AWS_SECRET_ACCESS_KEY": "moto-test-secret",
            "AWS_REGION": "us-east-1",
        }

    def filesystem(self) -> pafs.S3FileSystem:
        return pafs.S3FileSystem(
            access_key="moto-test",
            secret_key="moto-test-secret",
            region="us-east-1",
            endpoint_override=self.endpoint.removeprefix("http://"),
            scheme="http",
            allow_bucket_creation=True,
        )

    def new_bucket(self, prefix: str = "test") -> str:
        bucket = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.filesystem().create_dir(bucket)
        return bucket

    def put(self, key: str, data: bytes) -> None:
        """Write ``bucket/key`` as is (no transparent compression of .gz names)."""
        with self.filesystem().open_output_stream(key, compression=None) as stream:
            stream.write(data)

    def upload_tree(self, local: Path, bucket_prefix: str) -> int:
        """Copy every file under ``local`` to ``bucket/prefix/<relative path>``; returns the number of files."""
        files = sorted(p for p in local.rglob("*") if p.is_file())
        for path in files:
            self.put(f"{bucket_prefix}/{path.relative_to(local).as_posix()}", path.read_bytes())
        return len(files)


@contextlib.contextmanager
def moto_server() -> Iterator[S3Server]:
    if not MOTO_SERVER.exists():
        raise RuntimeError(f"{MOTO_SERVER} is missing: run `make install` (it builds .venv-moto)")
    port = free_port()
    # a file, not a pipe: moto logs every request and a full pipe would block it
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            for _ in range(START_ATTEMPTS):
                if process.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(
                        f"moto_server exited with {process.returncode}: {log.read().decode(errors='replace')[-2000:]}"
                    )
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                raise RuntimeError(f"moto_server did not listen on 127.0.0.1:{port}")
            yield S3Server(f"http://127.0.0.1:{port}")
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
