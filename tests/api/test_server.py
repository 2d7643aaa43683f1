"""The process: SIGTERM stops gunicorn cleanly, a request in flight completes."""
from __future__ import annotations

import signal
import threading

import requests

from apihelpers import Client


def test_sigterm_is_a_clean_stop(make_api):
    api = make_api(workers=2)
    client = Client(api.url)
    statuses: list[int] = []
    ten_done = threading.Event()

    def busy():
        while True:
            try:
                statuses.append(client.call("POST", "/networks", {"network": {}}).status_code)
            except requests.ConnectionError:
                return
            if len(statuses) == 10:
                ten_done.set()

    t = threading.Thread(target=busy)
    t.start()
    assert ten_done.wait(20)
    api.proc.send_signal(signal.SIGTERM)
    assert api.proc.wait(15) == 0
    t.join(20)
    # Every answered request succeeded, and every success is in the store.
    assert set(statuses) == {201}
    store = api.open_store()
    with store.read() as r:
        assert len(r.list("networks")) == len(statuses)
    store.close()


def test_bad_token_file_fails_at_start(tmp_path):
    import subprocess
    import sys
    conf = tmp_path / "c.conf"
    conf.write_text(f"[api]\nauth_strategy = token\ntoken_file = {tmp_path}/missing.json\n")
    proc = subprocess.run([sys.executable, "-m", "controller.cli", "api", "--config", str(conf),
                           "--store", f"sqlite:///{tmp_path}/s.db", "--api-listen", "127.0.0.1:1"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "token_file" in proc.stderr


def test_noauth_refuses_a_non_loopback_address(tmp_path):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "controller.cli", "api",
                           "--store", f"sqlite:///{tmp_path}/s.db", "--api-listen", "0.0.0.0:1"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "noauth" in proc.stderr
