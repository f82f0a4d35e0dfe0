"""`rediss://` with a password: a real redis-server with TLS on (Debian's build, from `redis-tools`, which the
Makefile installs), a certificate made here, and the store's own `connect()`."""

import shutil
import subprocess
from pathlib import Path

import pytest
import redis

from coordinator.records import State
from coordinator.runs import create_run
from coordinator.store import Store, connect
from shared.config import load_config
from tests.conftest import TINY, free_port, wait_for_redis

PASSWORD = "s3cret-pw"


def tls_redis_server(directory: Path) -> str:
    """A redis-server built with TLS. Debian's `redis-tools` ships the server as `redis-check-rdb`; it runs as the
    server when called by another name (the `redis-server` package only adds that symlink and a system service)."""
    binary = shutil.which("redis-check-rdb")
    if binary is None:
        pytest.fail("no TLS-capable redis-server: install Debian's redis-tools (`make system-deps` does)")
    link = directory / "redis-server"
    link.symlink_to(binary)
    return str(link)


@pytest.fixture(scope="module")
def tls_url(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("redis-tls")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    server = subprocess.Popen(
        [
            tls_redis_server(workdir),
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(cert),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            PASSWORD,
            "--save",
            "",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={cert}"
    wait_for_redis(url, server)
    yield url, port
    server.terminate()
    server.wait(timeout=10)


def test_store_works_over_rediss_with_a_password(tls_url, tmp_path):
    url, _ = tls_url
    client = connect(url, tmp_path / "unused")
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"
    store = Store(client, prefix="t-tls")
    create_run(load_config(TINY), store=store, run_id="tls-run", run_dir=tmp_path / "run")
    assert store.get_run("tls-run").state == State.PENDING
    assert [b.state for b in store.get_blocks("tls-run")] == [State.PENDING, State.PENDING]


def test_wrong_password_or_plain_text_is_refused(tls_url, tmp_path):
    url, port = tls_url
    with pytest.raises(redis.AuthenticationError):
        connect(url.replace(PASSWORD, "wrong"), tmp_path / "unused")
    with pytest.raises(redis.ConnectionError):  # a plain-text client cannot talk to the TLS port
        connect(f"redis://:{PASSWORD}@127.0.0.1:{port}/0", tmp_path / "unused")
