"""nginx as a process in front of loopback nodes, configured by docker/nginx.conf itself
(only the upstream addresses and the listen port are swapped for loopback ones)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .helpers import free_port, wait_port

SHIPPED = Path(__file__).parent.parent / "docker" / "nginx.conf"


def render(node_ports: list[int], port: int) -> str:
    conf = SHIPPED.read_text()
    shipped_nodes = ["node-1:8080", "node-2:8080"]
    assert len(node_ports) == len(shipped_nodes)
    for name, node_port in zip(shipped_nodes, node_ports, strict=True):
        assert f"server {name} " in conf, name
        conf = conf.replace(f"server {name} ", f"server 127.0.0.1:{node_port} ")
    assert "listen 80;" in conf
    return conf.replace("listen 80;", f"listen 127.0.0.1:{port};")


@contextmanager
def nginx(node_ports: list[int], directory: Path) -> Iterator[str]:
    """nginx balancing `node_ports`; yields its URL."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "mikoto.conf").write_text(render(node_ports, port))
    temp = {name: directory / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    (directory / "nginx.conf").write_text(f"""
user root;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
daemon off;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {temp['body']};
    proxy_temp_path {temp['proxy']};
    fastcgi_temp_path {temp['fastcgi']};
    uwsgi_temp_path {temp['uwsgi']};
    scgi_temp_path {temp['scgi']};
    include {directory}/mikoto.conf;
}}
""")
    proc = subprocess.Popen([binary, "-p", str(directory), "-c", str(directory / "nginx.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port("127.0.0.1", port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        finally:
            proc.kill()
