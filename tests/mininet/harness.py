"""A multi-host cloud on real Open vSwitch, for scenario tests.

    cloud = Cloud.start(tmp_path)                  # vmflow api + controller, temp SQLite store
    h1, h2 = cloud.add_host("h1"), cloud.add_host("h2")
    net = cloud.add_network("n1", cidr="10.0.0.0/24", vlan=101)
    a, b, c = cloud.add_vm(h1, net), cloud.add_vm(h1, net), cloud.add_vm(h2, net)
    assert a.ping(b) and a.ping(c)
    ...
    cloud.close()                                  # (the `cloud` fixtures do this)

What is built, per shared/TESTBED.md:
- a compute host = one OVS bridge (datapath_type=netdev, OpenFlow13,
  fail_mode=secure, its own datapath id) connected to the controller, with an
  uplink port (a veth) for physical network "physnet1" trunked to the fabric;
  it is registered through POST /v2.0/hosts;
- the fabric = a plain standalone bridge (NORMAL, no controller);
- a VM = a Mininet Host (a shell in its own network namespace) whose eth0 is
  one end of a veth; the other end is plugged into the host's bridge under the
  name the controller expects ("tap" + port id[:11], or
  binding:profile.interface_name). eth0 has the port's MAC and, unless the VM
  asks for DHCP, the port's first fixed IP configured statically. Checksum
  offload is off on both ends; IPv6 is off in the VM (no noise on the wire).

Everything a Cloud creates is named with a per-run prefix ("vmf" + 4 hex
digits) and torn down by close(), also after a failure. Crashed earlier runs
of this harness are swept at start: every run records its prefix and pid under
/run/vmflow-harness/; prefixes whose pid is dead get their bridges, veths and
processes removed. Nothing else on the machine is touched (no `mn -c`).
"""
from __future__ import annotations

import configparser
import ctypes
import ipaddress
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import requests

from controller.pipeline import COOKIE_SPACE, COOKIE_SPACE_MASK  # noqa: F401 (re-exported)

REPO = Path(__file__).resolve().parents[2]
# A run against a private OVS in its own network namespace (scripts/test
# --ovs-restart) keeps its own registry: it sees neither the machine's
# bridges nor its veths, so it must not sweep the machine's dead runs.
REGISTRY = Path(os.environ.get("VMFLOW_HARNESS_REGISTRY", "/run/vmflow-harness"))
PREFIX_RE = re.compile(r"^vmf[0-9a-f]{4}-")
OFCTL = ["ovs-ofctl", "-O", "OpenFlow13"]
PHYSNET = "physnet1"


class HarnessError(RuntimeError):
    """The test bed itself could not be built (not a vmflow failure)."""


# ---------------------------------------------------------------------------
# small helpers


def sh(cmd, *, check: bool = True, timeout: float = 30, input: Optional[str] = None) -> str:
    """Run a command in the root namespace; return stdout."""
    args = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, input=input)
    if check and p.returncode != 0:
        raise HarnessError(f"{' '.join(args)!r} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def wait_for(cond: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05,
             msg: str | Callable[[], str] = "condition") -> Any:
    """Poll cond() until it returns something truthy; return that, or fail
    with AssertionError after `timeout` seconds (msg may be a callable that
    describes the state at the time of failure)."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = cond()
            last_exc = None
            if value:
                return value
        except (HarnessError, requests.RequestException, OSError) as e:
            last_exc = e
        if time.monotonic() >= deadline:
            text = msg() if callable(msg) else msg
            extra = f" (last error: {last_exc})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {text}{extra}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pdeathsig():
    """preexec_fn: die with the harness (even on SIGKILL of pytest)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    os.setpgrp()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_COUNTER_RE = re.compile(r"\s*(duration|n_packets|n_bytes|idle_age|hard_age)=[^,\s]+,?")


def normalize_flow(line: str) -> str:
    line = _COUNTER_RE.sub("", line).strip()
    return re.sub(r"\s+", " ", line).strip(", ")


def flows(bridge: str, *, ours: bool = True, table: Optional[int] = None) -> list[str]:
    """The bridge's flows as sorted, counter-free lines (ovs-ofctl syntax).
    ours=True keeps only flows in vmflow's cookie space."""
    args = OFCTL + ["--no-names", "dump-flows", bridge]
    filt = []
    if ours:
        filt.append(f"cookie={COOKIE_SPACE:#x}/{COOKIE_SPACE_MASK:#x}")
    if table is not None:
        filt.append(f"table={table}")
    if filt:
        args.append(",".join(filt))
    out = sh(args)
    lines = [normalize_flow(l) for l in out.splitlines()
             if l.strip() and not l.startswith(("OFPST_FLOW", "NXST_FLOW"))]
    return sorted(lines)


def check_prerequisites() -> Optional[str]:
    """None when the test bed can run, else why not (tests fail, never skip)."""
    if os.geteuid() != 0:
        return "Mininet scenarios need root (run as root, as CI does)"
    for tool in ("ovs-vsctl", "ovs-ofctl", "mnexec", "ip", "ethtool", "tcpdump", "ping"):
        if not shutil.which(tool):
            return f"{tool} is missing: run scripts/setup"
    try:
        sh("ovs-vsctl --timeout=5 show")
    except (HarnessError, subprocess.TimeoutExpired) as e:
        return f"Open vSwitch is not running ({e}); start it with scripts/setup"
    try:
        import mininet.node  # noqa: F401
    except ImportError as e:
        return f"the mininet Python package is missing from the venv ({e})"
    return None


# ---------------------------------------------------------------------------
# crash leftovers


def sweep_stale() -> list[str]:
    """Remove what crashed runs of this harness left behind (their owner pid
    is dead). Returns what was removed, for the log."""
    removed = []
    owners: dict[str, int] = {}
    if REGISTRY.is_dir():
        for f in REGISTRY.iterdir():
            try:
                owners[f.name] = int(json.loads(f.read_text())["pid"])
            except (ValueError, KeyError, OSError):
                owners[f.name] = -1
    # Bridges carry their owner in external_ids too, in case the registry is gone.
    for br in sh("ovs-vsctl --timeout=10 list-br").split():
        if not PREFIX_RE.match(br):
            continue
        prefix = br.split("-", 1)[0]
        if prefix not in owners:
            ext = sh(["ovs-vsctl", "--timeout=10", "get", "bridge", br, "external_ids"], check=False)
            m = re.search(r'vmflow-harness="?(\w+):(\d+)', ext)
            owners[prefix] = int(m.group(2)) if m else -1
    for prefix, pid in owners.items():
        if pid > 0 and pid_alive(pid):
            continue
        for br in sh("ovs-vsctl --timeout=10 list-br").split():
            if br.startswith(prefix + "-"):
                sh(["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", br], check=False)
                removed.append(br)
        links = sh("ip -o link show", check=False)
        for m in re.finditer(r"^\d+: ([^:@\s]+)", links, re.M):
            if m.group(1).startswith(prefix + "-"):
                sh(["ip", "link", "del", m.group(1)], check=False)
                removed.append(m.group(1))
        state = REGISTRY / prefix
        try:
            info = json.loads(state.read_text())
            for child in info.get("children", []):
                # processes die with their parent (PDEATHSIG); this is a second net
                if pid_alive(child) and _cmdline_has(child, "vmflow-harness-" + prefix):
                    os.kill(child, signal.SIGKILL)
                    removed.append(f"pid {child}")
        except (OSError, ValueError):
            pass
        state.unlink(missing_ok=True)
    return removed


def _cmdline_has(pid: int, text: str) -> bool:
    try:
        return text.encode() in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


# ---------------------------------------------------------------------------
# vmflow processes


class VmflowProcess:
    """One `vmflow api|controller` process, restartable."""

    def __init__(self, cloud: "Cloud", command: str, extra_args: list[str], *,
                 config_path: Optional[Path] = None, name: Optional[str] = None):
        self.cloud = cloud
        self.command = command
        self.extra_args = extra_args
        self.config_path = config_path
        self.name = name or command
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = cloud.workdir / f"{self.name}.log"
        self.starts = 0

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def start(self) -> "VmflowProcess":
        if self.running:
            raise HarnessError(f"vmflow {self.command} is already running")
        env = dict(os.environ, PYTHONUNBUFFERED="1",
                   VMFLOW_HARNESS="vmflow-harness-" + self.cloud.prefix)
        log = open(self.log_path, "a")
        log.write(f"\n===== start #{self.starts + 1} at {time.strftime('%H:%M:%S')} =====\n")
        log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", self.command,
             "--config", str(self.config_path or self.cloud.config_path)] + self.extra_args,
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env,
            preexec_fn=_pdeathsig)
        log.close()
        self.starts += 1
        self.cloud._record_child(self.proc.pid)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, the whole process group (gunicorn workers included)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM, then SIGKILL after `timeout`."""
        if not self.running:
            self.kill()  # reap stragglers of the group, if any
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def restart(self) -> "VmflowProcess":
        self.stop()
        return self.start()

    def status(self) -> dict:
        """A controller process's status file (its `status_path`), or {} until
        this process has written one: a file an earlier run of it left does
        not count."""
        try:
            st = json.loads(self.status_path.read_text())
        except (AttributeError, OSError, ValueError):
            return {}
        return st if st.get("pid") == self.pid else {}

    def log(self, tail: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-tail:])

    def assert_running(self) -> None:
        if not self.running:
            raise AssertionError(f"vmflow {self.command} exited "
                                 f"({self.proc.returncode if self.proc else 'never started'}):\n"
                                 + self.log())


# ---------------------------------------------------------------------------
# the northbound API


class ApiError(AssertionError):
    def __init__(self, method, path, status, body):
        super().__init__(f"{method} {path} -> {status}: {body}")
        self.status = status
        self.body = body


class Api:
    """A thin Neutron v2.0 client: create/show/update/delete/list per collection."""

    SINGULAR = {"networks": "network", "subnets": "subnet", "ports": "port",
                "hosts": "host", "instances": "instance", "routers": "router",
                "floatingips": "floatingip", "security_groups": "security_group",
                "security_group_rules": "security_group_rule"}

    def __init__(self, base: str):
        self.base = base.rstrip("/")
        self.s = requests.Session()

    def request(self, method: str, path: str, body=None, expect=(200, 201, 204)):
        r = self.s.request(method, self.base + path, json=body, timeout=15)
        if expect and r.status_code not in expect:
            raise ApiError(method, path, r.status_code, r.text[:2000])
        return r.json() if r.content else None

    def create(self, kind: str, **fields) -> dict:
        one = self.SINGULAR[kind]
        return self.request("POST", self._path(kind), {one: fields})[one]

    def show(self, kind: str, id: str) -> dict:
        return self.request("GET", f"{self._path(kind)}/{id}")[self.SINGULAR[kind]]

    def update(self, kind: str, id: str, **fields) -> dict:
        one = self.SINGULAR[kind]
        return self.request("PUT", f"{self._path(kind)}/{id}", {one: fields})[one]

    def delete(self, kind: str, id: str) -> None:
        self.request("DELETE", f"{self._path(kind)}/{id}")

    @staticmethod
    def _path(kind: str) -> str:
        """The collection's URL: Neutron spells security-groups with a dash."""
        return "/v2.0/" + kind.replace("_", "-")

    def list(self, kind: str, **filters) -> list[dict]:
        q = "&".join(f"{k}={v}" for k, v in filters.items())
        return self.request("GET", self._path(kind) + (f"?{q}" if q else ""))[kind]

    def ready(self) -> bool:
        try:
            return self.s.get(self.base + "/v2.0/networks", timeout=2).status_code == 200
        except requests.RequestException:
            return False


# ---------------------------------------------------------------------------
# topology objects


@dataclass
class Network:
    cloud: "Cloud"
    doc: dict
    subnet: Optional[dict]

    @property
    def id(self) -> str:
        return self.doc["id"]

    @property
    def name(self) -> str:
        return self.doc["name"]

    @property
    def vlan(self) -> Optional[int]:
        return self.doc.get("provider:segmentation_id")

    @property
    def cidr(self) -> Optional[ipaddress.IPv4Network]:
        return ipaddress.ip_network(self.subnet["cidr"]) if self.subnet else None

    def delete(self) -> None:
        self.cloud.api.delete("networks", self.id)


@dataclass
class Host:
    """A compute host: its integration bridge and its API record."""
    cloud: "Cloud"
    name: str
    bridge: str
    dpid: int
    uplink: str                 # the bridge's uplink port (host side of the trunk)
    fabric_port: str            # the fabric's end of the trunk
    doc: Optional[dict] = None  # the API's host record once registered

    @property
    def dpid_hex(self) -> str:
        return f"{self.dpid:016x}"

    def register(self) -> dict:
        """POST /v2.0/hosts (add_host does this unless register=False)."""
        self.doc = self.cloud.api.create(
            "hosts", name=self.name, datapath_id=self.dpid_hex,
            physical_networks={PHYSNET: self.uplink})
        return self.doc

    def flows(self, **kw) -> list[str]:
        return flows(self.bridge, **kw)

    def ofport(self, ifname: str) -> Optional[int]:
        out = sh(["ovs-vsctl", "--timeout=10", "--if-exists", "get", "interface", ifname, "ofport"],
                 check=False).strip()
        return int(out) if out.lstrip("-").isdigit() and int(out) > 0 else None

    def connected(self) -> bool:
        rec = sh(["ovs-vsctl", "--timeout=10", "get", "bridge", self.bridge, "controller"], check=False)
        uuids = [u.strip() for u in rec.strip("[] \n").split(",") if u.strip()]
        if not uuids:
            return False
        # Several controllers: connected to every one of them.
        return all(sh(["ovs-vsctl", "--timeout=10", "get", "controller", u, "is_connected"],
                      check=False).strip() == "true" for u in uuids)

    def wait_connected(self, timeout: float = 15) -> None:
        wait_for(self.connected, timeout, 0.1, f"{self.bridge} to connect to the controller")


class Vm:
    """A VM: a Mininet host (network namespace + shell) with one NIC, eth0."""

    def __init__(self, cloud: "Cloud", name: str, host: Host, network: Network,
                 node, ifname: str, mac: str, ip: Optional[str], prefixlen: int,
                 port: Optional[dict]):
        self.cloud = cloud
        self.name = name
        self.host = host
        self.network = network
        self.node = node             # mininet.node.Host
        self.ifname = ifname         # switch-side interface name
        self.mac = mac
        self.ip = ip
        self.prefixlen = prefixlen
        self.port = port             # the API port, None until created
        self.procs: list[subprocess.Popen] = []

    def __repr__(self):
        return f"<Vm {self.name} {self.ip} {self.mac} on {self.host.name}>"

    # -- commands -------------------------------------------------------------
    def cmd(self, command: str) -> str:
        """Run a shell command in the VM and return its output (Mininet's cmd)."""
        return self.node.cmd(command)

    def run(self, args, timeout: float = 30, check: bool = False,
            input_text: Optional[str] = None) -> subprocess.CompletedProcess:
        """Run a command in the VM's namespace with an exit code (and
        input_text on its standard input)."""
        argv = shlex.split(args) if isinstance(args, str) else list(args)
        p = subprocess.run(["mnexec", "-a", str(self.node.pid)] + argv, input=input_text,
                           capture_output=True, text=True, timeout=timeout)
        if check and p.returncode:
            raise HarnessError(f"{self.name}: {argv} failed: {p.stdout}{p.stderr}")
        return p

    def popen(self, args, **kw) -> subprocess.Popen:
        """A background process in the VM's namespace; killed at teardown."""
        argv = shlex.split(args) if isinstance(args, str) else list(args)
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("text", True)
        p = subprocess.Popen(["mnexec", "-a", str(self.node.pid)] + argv,
                             preexec_fn=_pdeathsig, **kw)
        self.procs.append(p)
        self.cloud._record_child(p.pid)
        return p

    # -- traffic --------------------------------------------------------------
    def _addr(self, target) -> str:
        return target.ip if isinstance(target, Vm) else str(target)

    def ping(self, target, count: int = 1, timeout: float = 1.0, interval: float = 0.2) -> bool:
        """True when all `count` echo requests got replies."""
        p = self.run(["ping", "-n", "-q", "-c", str(count), "-i", str(interval),
                      "-W", str(timeout), self._addr(target)],
                     timeout=count * (interval + timeout) + 5)
        return p.returncode == 0

    def ping_stats(self, target, count: int, interval: float = 0.1,
                   timeout: float = 1.0) -> tuple[int, int]:
        """(transmitted, received) of a ping run."""
        p = self.run(["ping", "-n", "-q", "-c", str(count), "-i", str(interval),
                      "-W", str(timeout), self._addr(target)],
                     timeout=count * interval + timeout + 10)
        return parse_ping(p.stdout)

    def wait_ping(self, target, timeout: float = 10.0) -> None:
        """Poll until target answers a ping (convergence), or fail. Each try
        waits 2 s for its reply: on a loaded machine a new VM's first replies
        came back after 1.1-1.4 s, and a shorter wait threw them away."""
        wait_for(lambda: self.ping(target, timeout=2.0), timeout, 0.1,
                 f"{self.name} to ping {self._addr(target)}")

    def no_ping(self, target, count: int = 3, timeout: float = 0.5) -> bool:
        """True when none of `count` echo requests got a reply."""
        p = self.run(["ping", "-n", "-q", "-c", str(count), "-i", "0.2",
                      "-W", str(timeout), self._addr(target)], timeout=count + timeout + 5)
        return parse_ping(p.stdout)[1] == 0

    def tcp_server(self, port: int = 5001) -> subprocess.Popen:
        """An echo server on port (every connection, until teardown); returns
        once it listens."""
        p = self.popen([sys.executable, str(Path(__file__).with_name("tcpecho.py")),
                        "server", "0.0.0.0", str(port)])
        wait_for(lambda: p.stdout.readline().strip() == "listening" or p.poll() is not None,
                 10, 0, f"tcp echo server on {self.name}:{port}")
        if p.poll() is not None:
            raise HarnessError(f"tcp server on {self.name} exited: {p.stderr.read()}")
        return p

    def tcp_check(self, target, port: int = 5001, size: int = 200_000,
                  timeout: float = 5.0) -> bool:
        """Connect, send `size` bytes, read them back: True if all came back."""
        p = self.run([sys.executable, str(Path(__file__).with_name("tcpecho.py")),
                      "client", self._addr(target), str(port), str(size), str(timeout)],
                     timeout=timeout + 10)
        return p.returncode == 0 and p.stdout.strip() == f"ok {size}"

    # -- reconfiguration ----------------------------------------------------------
    def set_mac(self, mac: str) -> None:
        self.run(["ip", "link", "set", "eth0", "address", mac], check=True)

    def set_ip(self, ip: str, prefixlen: Optional[int] = None) -> None:
        self.run(["ip", "addr", "flush", "dev", "eth0"], check=True)
        self.run(["ip", "addr", "add", f"{ip}/{prefixlen or self.prefixlen}", "dev", "eth0"],
                 check=True)

    def arp_add(self, target: "Vm | str", mac: Optional[str] = None) -> None:
        """A static (permanent) neighbour entry for target."""
        ip = self._addr(target)
        mac = mac or target.mac
        self.run(["ip", "neigh", "replace", ip, "lladdr", mac, "dev", "eth0", "nud", "permanent"],
                 check=True)

    def arp_flush(self) -> None:
        self.run(["ip", "neigh", "flush", "dev", "eth0"], check=False)

    def dhcp(self, timeout: float = 15.0) -> str:
        """Hook for DHCP scenarios: run a DHCP client (udhcpc) on eth0 and
        return the address it configured. The script only touches this VM's
        namespace (no /etc/resolv.conf)."""
        script = self.cloud.workdir / "udhcpc.sh"
        if not script.exists():
            script.write_text(UDHCPC_SCRIPT)
            script.chmod(0o755)
        p = self.run(["udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5", "-T", "1",
                      "-s", str(script)], timeout=timeout)
        if p.returncode:
            raise AssertionError(f"{self.name}: udhcpc failed: {p.stdout}{p.stderr}")
        out = self.run(["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout
        m = re.search(r"inet (\S+)/(\d+)", out)
        if not m:
            raise AssertionError(f"{self.name}: no address after DHCP: {out}")
        self.ip, self.prefixlen = m.group(1), int(m.group(2))
        return self.ip

    def capture(self, filt: str = "", iface: str = "eth0") -> "Capture":
        """tcpdump on the VM's NIC (inside its namespace)."""
        return Capture(self.cloud, iface, filt, vm=self).start()

    # -- API side --------------------------------------------------------------------
    def create_port(self, **fields) -> dict:
        """For a VM plugged before its port exists: create the port now, with
        this VM's MAC, IP and interface name."""
        if self.port is not None:
            raise HarnessError(f"{self.name} already has port {self.port['id']}")
        body = dict(network_id=self.network.id, name=self.name,
                    mac_address=self.mac, **{"binding:host_id": self.host.name,
                                              "binding:profile": {"interface_name": self.ifname}})
        if self.ip and self.network.subnet:
            body["fixed_ips"] = [{"subnet_id": self.network.subnet["id"], "ip_address": self.ip}]
        body.update(fields)
        self.port = self.cloud.api.create("ports", **body)
        return self.port

    def delete_port(self) -> None:
        self.cloud.api.delete("ports", self.port["id"])

    def update_port(self, **fields) -> dict:
        self.port = self.cloud.api.update("ports", self.port["id"], **fields)
        return self.port

    @property
    def ofport(self) -> Optional[int]:
        return self.host.ofport(self.ifname)

    def unplug(self) -> None:
        """Take the NIC off its bridge (the VM stays; like a VM shut off)."""
        bridge = self.host.bridge if self.host else self.cloud.fabric
        sh(["ovs-vsctl", "--timeout=10", "--if-exists", "del-port", bridge, self.ifname],
           check=False)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()
        self.unplug()
        sh(["ip", "link", "del", self.ifname], check=False)
        if self.node is not None:
            try:
                self.node.terminate()
            except Exception:
                pass
            self.node = None


UDHCPC_SCRIPT = """#!/bin/sh
# udhcpc event script for harness VMs: configure eth0 only.
case "$1" in
  deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
    ;;
esac
exit 0
"""


def parse_ping(out: str) -> tuple[int, int]:
    m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", out)
    if not m:
        return (0, 0)
    return int(m.group(1)), int(m.group(2))


class Capture:
    """tcpdump in the root namespace (on a fabric or bridge port) or in a VM.

        with cloud.capture_fabric(h2, "icmp") as cap:
            a.ping(c)
        assert cap.vlans() == {101}
    """

    def __init__(self, cloud: "Cloud", iface: str, filt: str = "", vm: Optional[Vm] = None):
        self.cloud, self.iface, self.filt, self.vm = cloud, iface, filt, vm
        self.path = cloud.workdir / f"tcpdump-{iface}-{random.randrange(1 << 30)}.txt"
        self.proc: Optional[subprocess.Popen] = None
        self._lines: Optional[list[str]] = None

    def start(self) -> "Capture":
        argv = ["tcpdump", "-i", self.iface, "-nn", "-e", "-l", "-U"] + shlex.split(self.filt)
        out = open(self.path, "w")
        err_path = self.path.with_suffix(".err")
        err = open(err_path, "w")
        if self.vm is not None:
            argv = ["mnexec", "-a", str(self.vm.node.pid)] + argv
        self.proc = subprocess.Popen(argv, stdout=out, stderr=err, preexec_fn=_pdeathsig)
        out.close()
        err.close()
        self.cloud._record_child(self.proc.pid)
        self.cloud._captures.append(self)
        wait_for(lambda: "listening on" in err_path.read_text() or self.proc.poll() is not None,
                 10, 0.02, f"tcpdump on {self.iface} to start")
        if self.proc.poll() is not None:
            raise HarnessError(f"tcpdump on {self.iface} failed: {err_path.read_text()}")
        return self

    def stop(self) -> list[str]:
        if self.proc is not None and self.proc.poll() is None:
            time.sleep(0.1)  # let the last packets reach tcpdump's buffer
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._lines is None:
            self._lines = [l for l in self.path.read_text(errors="replace").splitlines() if l.strip()]
        return self._lines

    @property
    def lines(self) -> list[str]:
        return self.stop()

    def vlans(self) -> set[Optional[int]]:
        """The 802.1Q ids seen (None for an untagged frame)."""
        out = set()
        for l in self.lines:
            m = re.search(r"vlan (\d+)", l)
            out.add(int(m.group(1)) if m else None)
        return out

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class FlowMonitor:
    """Flow-table changes on a bridge as OVS reports them (`ovs-ofctl monitor
    BRIDGE watch:`, an ONF flow monitor): every flow added, modified or
    deleted by anyone, with the time it was seen. Independent of what the
    controller believes it sent.

        with cloud.flow_monitor(h1) as mon:
            ...
        assert mon.changes() == []
    """

    def __init__(self, cloud: "Cloud", bridge: str):
        import threading
        self.bridge = bridge
        self.events: list[tuple[float, str]] = []   # (time.monotonic(), event line)
        self.cond = threading.Condition()
        self._ready = threading.Event()
        # ovs-ofctl prints the initial reply on stdout but later updates on
        # stderr; stdout to a pipe is block-buffered (stdbuf: per line).
        self.proc = subprocess.Popen(["stdbuf", "-oL", "-eL"] + OFCTL + ["monitor", bridge, "watch:"],
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, preexec_fn=_pdeathsig)
        cloud._record_child(self.proc.pid)
        cloud._monitors.append(self)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        # Wait for the initial table dump: the monitor is registered by then.
        if not self._ready.wait(10):
            raise HarnessError(f"flow monitor on {bridge} did not start")

    def _read(self) -> None:
        # The monitor's first reply (the request's xid) is the initial dump;
        # every later change comes in a reply with xid=0x0.
        live = False
        for line in self.proc.stdout:
            if "FLOW_MONITOR reply" in line:
                live = "(xid=0x0)" in line
                self._ready.set()
                continue
            if live and "event=" in line:
                with self.cond:
                    self.events.append((time.monotonic(), line.strip()))
                    self.cond.notify_all()
        self._ready.set()

    def changes(self, ours: bool = True) -> list[str]:
        with self.cond:
            lines = [l for _t, l in self.events]
        if ours:
            lines = [l for l in lines if f"cookie={COOKIE_SPACE >> 48:#x}" in l]
        return lines

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------------------
# the cloud


class Cloud:
    """vmflow processes + fabric + hosts + VMs, all owned by this run."""

    def __init__(self, workdir: Path, config: Optional[dict] = None, *,
                 controllers: int = 1, etcd: Optional[str] = None, lease_ttl: int = 3,
                 store: Optional[str] = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.prefix = "vmf%04x" % random.randrange(0x10000)
        while any(br.startswith(self.prefix + "-") for br in sh("ovs-vsctl list-br").split()) \
                or (REGISTRY / self.prefix).exists():
            self.prefix = "vmf%04x" % random.randrange(0x10000)
        self.api_port = free_port()
        self.ofp_port = free_port()
        self.store_path = self.workdir / "vmflow.db"
        # store="etcd" (default: $VMFLOW_TEST_STORE, else "sqlite") runs the
        # cloud on a 3-member etcd cluster of its own (loopback, in workdir)
        # instead of the SQLite file. Several controllers (etcd given) keep
        # their documents in the etcd cluster that holds their membership.
        self.etcd = None
        store = store or os.environ.get("VMFLOW_TEST_STORE", "sqlite")
        if store not in ("sqlite", "etcd"):
            raise HarnessError(f"unknown test store {store!r}: sqlite or etcd")
        if etcd:
            self.store_url = "etcd://" + etcd
        elif store == "etcd":
            from topology.etcd_cluster import EtcdCluster
            self.etcd = EtcdCluster(3, workdir=str(self.workdir / "etcd"))
            self.store_url = self.etcd.store_url
        else:
            self.store_url = f"sqlite:///{self.store_path}"
        self.config_path = self.workdir / "vmflow.conf"
        self.status_path = self.workdir / "controller-status.json"
        self.hosts: dict[str, Host] = {}
        self.networks: dict[str, Network] = {}
        self.vms: list[Vm] = []
        self._children: list[int] = []
        self._captures: list[Capture] = []
        self._monitors: list[FlowMonitor] = []
        self._links: list[str] = []
        self._bridges: list[str] = []
        self._n_hosts = 0
        self._n_vms = 0
        self._extern: list = []
        self._store = None   # a reader of the cloud's store (store_revision)
        self.fabric = f"{self.prefix}-fab"
        self._write_config(config or {})
        self.api = Api(f"http://127.0.0.1:{self.api_port}")
        self.api_proc = VmflowProcess(self, "api", [])
        self.controller = VmflowProcess(self, "controller", [])
        # Several controllers (controllers > 1, or etcd given): each its own
        # OpenFlow port, status file and config, all in one etcd membership;
        # every bridge connects to all of them. self.controller is the first.
        self.controllers = [self.controller]
        self.ofp_ports = [self.ofp_port]
        if controllers > 1 or etcd:
            if not etcd:
                raise HarnessError("several controllers need etcd endpoints")
            self.controllers, self.ofp_ports = [], []
            for i in range(controllers):
                port = self.ofp_port if i == 0 else free_port()
                path = self.workdir / f"vmflow-c{i}.conf"
                status = self.workdir / f"controller-c{i}-status.json"
                self._write_config(config or {}, path=path, overrides={
                    "DEFAULT": {"ofp_listen": f"127.0.0.1:{port}"},
                    "controller": {"status_file": str(status)},
                    "cluster": {"etcd": etcd, "controller_id": f"c{i}",
                                "lease_ttl": str(lease_ttl)}})
                proc = VmflowProcess(self, "controller", [], config_path=path, name=f"controller-c{i}")
                proc.status_path = status
                proc.controller_id = f"c{i}"
                self.controllers.append(proc)
                self.ofp_ports.append(port)
            self.controller = self.controllers[0]
            self.status_path = self.controllers[0].status_path
        self._register()

    # -- life cycle -----------------------------------------------------------------
    @classmethod
    def start(cls, workdir: Path, config: Optional[dict] = None, *,
              controller: bool = True, controllers: int = 1, etcd: Optional[str] = None,
              lease_ttl: int = 3, store: Optional[str] = None) -> "Cloud":
        """Start vmflow (api, and controller unless controller=False) on a new
        store and build the fabric. `config` adds INI sections, e.g.
        {"controller": {"audit_interval": 2}}. controllers=N with etcd (the
        endpoints, host:port,...) starts N controllers holding roles, with
        their store on that etcd. store="etcd" gives a single controller a
        3-member etcd cluster of its own."""
        why = check_prerequisites()
        if why:
            raise HarnessError(why)
        sweep_stale()
        cloud = cls(workdir, config, controllers=controllers, etcd=etcd, lease_ttl=lease_ttl,
                    store=store)
        try:
            cloud._add_fabric()
            if cloud.etcd is not None:
                cloud.etcd.start()
            cloud.api_proc.start()
            if controller:
                for proc in cloud.controllers:
                    proc.start()
            wait_for(lambda: cloud.api.ready() or not cloud.api_proc.running, 30, 0.1,
                     "the API to answer")
            cloud.api_proc.assert_running()
        except BaseException:
            cloud.close()
            raise
        return cloud

    def _write_config(self, extra: dict, *, path: Optional[Path] = None,
                      overrides: Optional[dict] = None) -> None:
        cp = configparser.ConfigParser()
        cp["DEFAULT"] = {"store": self.store_url,
                         "api_listen": f"127.0.0.1:{self.api_port}",
                         "ofp_listen": f"127.0.0.1:{self.ofp_port}",
                         "log_level": "INFO"}
        cp["api"] = {"workers": "2"}
        cp["controller"] = {"status_file": str(self.status_path)}
        for section, values in extra.items():
            name = section or "DEFAULT"
            if name != "DEFAULT" and name not in cp:
                cp[name] = {}
            for k, v in values.items():
                cp[name][k] = str(v)
        for section, values in (overrides or {}).items():
            if section != "DEFAULT" and section not in cp:
                cp[section] = {}
            for k, v in values.items():
                cp[section][k] = str(v)
        with open(path or self.config_path, "w") as f:
            cp.write(f)

    def _register(self) -> None:
        REGISTRY.mkdir(parents=True, exist_ok=True)
        (REGISTRY / self.prefix).write_text(json.dumps(
            {"pid": os.getpid(), "workdir": str(self.workdir), "children": self._children}))

    def _record_child(self, pid: int) -> None:
        self._children.append(pid)
        self._register()

    def close(self) -> None:
        """Tear down everything this cloud made; never raises."""
        errors = []
        for mon in self._monitors:
            mon.stop()
        for cap in self._captures:
            try:
                cap.stop()
            except Exception as e:
                errors.append(e)
        for vm in self.vms:
            try:
                vm.stop()
            except Exception as e:
                errors.append(e)
        for node in self._extern:
            try:
                node.terminate()
            except Exception as e:
                errors.append(e)
        for br in self._bridges:
            sh(["ovs-vsctl", "--timeout=20", "--if-exists", "del-br", br], check=False)
        for link in self._links:
            sh(["ip", "link", "del", link], check=False)
        for proc in (*self.controllers, self.api_proc):
            try:
                proc.stop(5)
            except Exception as e:
                errors.append(e)
        for pid in self._children:
            if pid_alive(pid) and _cmdline_has(pid, "vmflow-harness-" + self.prefix):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self._store is not None:
            try:
                self._store.close()
            except Exception as e:
                errors.append(e)
        if self.etcd is not None:
            self.etcd.stop()
        (REGISTRY / self.prefix).unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- fabric and hosts ------------------------------------------------------------
    def _owner_ids(self) -> list[str]:
        return [f"external_ids:vmflow-harness={self.prefix}:{os.getpid()}"]

    def _add_fabric(self) -> None:
        self._bridges.append(self.fabric)
        sh(["ovs-vsctl", "--timeout=20", "add-br", self.fabric, "--", "set", "bridge", self.fabric,
            "datapath_type=netdev", "fail_mode=standalone", "other-config:disable-in-band=true",
            *self._owner_ids()])

    def _veth(self, a: str, b: str) -> None:
        self._links.append(a)
        sh(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
        for name in (a, b):
            sh(["ethtool", "-K", name, "tx", "off", "rx", "off"], check=False)
            sh(["ip", "link", "set", name, "up"])

    def add_host(self, name: str, *, register: bool = True, connect: bool = True) -> Host:
        """A compute host: bridge (own datapath id) connected to the controller,
        uplink trunked to the fabric, registered in the API. register=False
        leaves the API record to host.register(); connect=False leaves the
        bridge unconnected until cloud.connect(host)."""
        if name in self.hosts:
            raise HarnessError(f"host {name} exists")
        self._n_hosts += 1
        n = self._n_hosts
        bridge, uplink, fport = f"{self.prefix}-b{n}", f"{self.prefix}-u{n}", f"{self.prefix}-f{n}"
        dpid = (int(self.prefix[3:], 16) << 32) | (0x766D << 16) | n
        host = Host(self, name, bridge, dpid, uplink, fport)
        self._bridges.append(bridge)
        sh(["ovs-vsctl", "--timeout=20", "add-br", bridge, "--", "set", "bridge", bridge,
            "datapath_type=netdev", "protocols=OpenFlow13", "fail_mode=secure",
            f"other-config:datapath-id={host.dpid_hex}", "other-config:disable-in-band=true",
            *self._owner_ids()])
        self._veth(uplink, fport)
        sh(["ovs-vsctl", "--timeout=20", "add-port", bridge, uplink, "--",
            "add-port", self.fabric, fport])
        self.hosts[name] = host
        if register:
            host.register()
        if connect:
            self.connect(host)
        return host

    def connect(self, host: Host) -> None:
        """Point the host's bridge at the controller, or at every controller
        (short reconnect backoff), as service controllers, as the README says
        (OVS flushes a bridge's flows when it gains a primary controller, e.g.
        after `ovs-ctl restart`)."""
        cmd = ["ovs-vsctl", "--timeout=20"]
        for i, port in enumerate(self.ofp_ports):
            cmd += ["--", f"--id=@c{i}", "create", "controller",
                    f"target=\"tcp:127.0.0.1:{port}\"", "type=service", "max_backoff=1000",
                    "connection_mode=out-of-band", "inactivity_probe=5000"]
        refs = ",".join(f"@c{i}" for i in range(len(self.ofp_ports)))
        sh(cmd + ["--", "set", "bridge", host.bridge, f"controller=[{refs}]"])

    def add_external(self, name: str, ip: str, prefixlen: int = 24, vlan: Optional[int] = None,
                     mac: Optional[str] = None):
        """A host on the physical network (the fabric), optionally an access
        port in `vlan`. Returns a Vm-like object (no API port)."""
        from mininet.node import Host as MnHost
        self._n_vms += 1
        fside, inside = f"{self.prefix}-x{self._n_vms}", f"{self.prefix}-y{self._n_vms}"
        node = MnHost(f"{self.prefix}-{name}")
        self._extern.append(node)
        self._veth(fside, inside)
        cmd = ["ovs-vsctl", "--timeout=20", "add-port", self.fabric, fside]
        if vlan is not None:
            cmd += ["tag=%d" % vlan]
        sh(cmd)
        mac = mac or random_mac()
        _plug_into_namespace(node, inside, mac, ip, prefixlen)
        vm = Vm(self, name, None, None, node, fside, mac, ip, prefixlen, None)
        return vm

    # -- API objects -------------------------------------------------------------------
    def add_network(self, name: str, cidr: Optional[str] = "10.0.0.0/24", vlan: Optional[int] = None,
                    *, network_type: Optional[str] = None, physnet: str = PHYSNET,
                    enable_dhcp: bool = False, **fields) -> Network:
        """A network (+ one subnet when cidr is given) through the API. vlan
        given: a vlan provider network with that segmentation id; vlan None:
        flat unless network_type says otherwise."""
        ntype = network_type or ("vlan" if vlan is not None else "flat")
        body = {"name": name, "provider:network_type": ntype, "provider:physical_network": physnet}
        if vlan is not None:
            body["provider:segmentation_id"] = vlan
        body.update(fields)
        doc = self.api.create("networks", **body)
        subnet = None
        if cidr:
            subnet = self.api.create("subnets", network_id=doc["id"], cidr=cidr, ip_version=4,
                                     name=f"{name}-subnet", enable_dhcp=enable_dhcp)
        net = Network(self, doc, subnet)
        self.networks[name] = net
        return net

    def add_vm(self, host: Host, net: Network, name: Optional[str] = None, *,
               dhcp: bool = False, plug_first: bool = False, ip: Optional[str] = None,
               plug: bool = True, **port_fields) -> Vm:
        """A VM on `host` in `net`.

        Default: create the API port (binding:host_id=host), then plug a VM
        with the port's MAC and first fixed IP (static). dhcp=True: the VM's
        NIC gets the MAC but no address; call vm.dhcp() (the hook) to run a
        client. plug_first=True: plug the VM now with a fresh MAC, the given or
        a free IP and an interface name of its own; vm.create_port() makes
        the API port later. plug=False: API port only, vm.plug() later.
        port_fields go to the port body (e.g. port_security_enabled=False).
        """
        self._n_vms += 1
        name = name or f"vm{self._n_vms}"
        prefixlen = net.cidr.prefixlen if net.cidr else 24
        if plug_first:
            ifname = f"{self.prefix}-v{self._n_vms}"
            mac = random_mac()
            ip = ip or self.free_ip(net)
            vm = Vm(self, name, host, net, None, ifname, mac, None if dhcp else ip, prefixlen, None)
            vm._planned_ip = ip
        else:
            body = dict(network_id=net.id, name=name, **{"binding:host_id": host.name})
            if ip and net.subnet:
                body["fixed_ips"] = [{"subnet_id": net.subnet["id"], "ip_address": ip}]
            body.update(port_fields)
            port = self.api.create("ports", **body)
            profile = port.get("binding:profile") or {}
            ifname = profile.get("interface_name") or "tap" + port["id"][:11]
            fixed = port.get("fixed_ips") or []
            vm_ip = None if dhcp or not fixed else fixed[0]["ip_address"]
            vm = Vm(self, name, host, net, None, ifname, port["mac_address"], vm_ip, prefixlen, port)
        self.vms.append(vm)
        if plug:
            self.plug(vm)
        return vm

    def plug(self, vm: Vm) -> Vm:
        """Make the VM's namespace and NIC and plug it into its host's bridge."""
        from mininet.node import Host as MnHost
        if vm.node is not None:
            raise HarnessError(f"{vm.name} is already plugged")
        vm.node = MnHost(f"{self.prefix}-{vm.name}")
        inside = f"{self.prefix}-i{self._n_vms}{random.randrange(1000)}"[:15]
        self._veth(vm.ifname, inside)
        gw = vm.network.subnet.get("gateway_ip") if vm.network.subnet else None
        _plug_into_namespace(vm.node, inside, vm.mac, vm.ip, vm.prefixlen, gw)
        sh(["ovs-vsctl", "--timeout=20", "add-port", vm.host.bridge, vm.ifname, "--",
            "set", "interface", vm.ifname,
            f"external_ids:attached-mac=\"{vm.mac}\"", "external_ids:iface-status=active"]
           + ([f"external_ids:iface-id={vm.port['id']}"] if vm.port else []))
        return vm

    def free_ip(self, net: Network) -> str:
        """An address of net that no port has or is planned for, from the
        top of the range (IPAM allocates at random, so a fixed address a
        test picks may already be some port's)."""
        used = {ip["ip_address"] for p in self.api.list("ports", network_id=net.id)
                for ip in p.get("fixed_ips", [])}
        used |= {getattr(v, "_planned_ip", None) for v in self.vms}
        if net.subnet.get("gateway_ip"):
            used.add(net.subnet["gateway_ip"])
        hosts = list(net.cidr.hosts())
        for addr in reversed(hosts):  # from the top: IPAM allocates from the bottom
            if str(addr) not in used:
                return str(addr)
        raise HarnessError(f"no free address in {net.cidr}")

    # -- capture, status, controller ---------------------------------------------------
    def capture_fabric(self, host: Host, filt: str = "") -> Capture:
        """tcpdump on the fabric's end of host's trunk: what the host sends and
        receives. The filter matches tagged and untagged frames alike (the
        kernel hands tcpdump some frames with the tag inline, some with it
        in metadata, so a plain "icmp" would miss the inline-tagged ones)."""
        if filt:
            filt = f"({filt}) or (vlan and ({filt}))"
        return Capture(self, host.fabric_port, filt).start()

    def flow_monitor(self, host: "Host | str") -> FlowMonitor:
        """Watch a bridge's flow-table changes (see FlowMonitor)."""
        return FlowMonitor(self, host.bridge if isinstance(host, Host) else host)

    def status(self) -> dict:
        """The running controller's status file (controller/status.py), as
        written by the current controller process; HarnessError until it is."""
        try:
            st = json.loads(self.status_path.read_text())
        except (OSError, ValueError) as e:
            raise HarnessError(f"no controller status yet ({e})")
        if st.get("pid") != self.controller.pid:
            raise HarnessError("the status file is from another controller process")
        return st

    def switch_status(self, host: Host) -> dict:
        """The controller's status of host's bridge (flow_mods, repairs, in_sync, ...)."""
        sw = self.status()["switches"].get(host.dpid_hex)
        if sw is None:
            raise HarnessError(f"the controller does not list {host.dpid_hex} ({host.name})")
        return sw

    def unclaimed_datapaths(self) -> set[int]:
        """Connected datapaths no host claims, as the controller lists them."""
        return {int(d, 16) for d in self.status().get("unclaimed", [])}

    def controller_synced(self, hosts: Optional[Iterable[Host]] = None,
                          since: Optional[float] = None) -> bool:
        """True when the current controller lists every host's bridge as
        connected (after `since`, if given), claimed and in sync."""
        st = self.status()
        hosts = list(self.hosts.values()) if hosts is None else list(hosts)
        for h in hosts:
            sw = st["switches"].get(h.dpid_hex)
            if not sw or not sw.get("in_sync") or sw.get("busy"):
                return False
            if h.doc and not sw.get("claimed"):
                return False
            if since is not None and (sw.get("connected_at") or 0) < since:
                return False
        return bool(st.get("store_ok", True))

    def store_revision(self) -> Optional[int]:
        """The store's revision now, or None when it cannot be read."""
        from topology.store import StoreError, open_store
        try:
            if self._store is None:
                self._store = open_store(self.store_url, migrate=False)
            return self._store.revision()
        except StoreError:
            return None

    def wait_controller_synced(self, hosts: Optional[Iterable[Host]] = None,
                               timeout: float = 20, since: Optional[float] = None) -> dict:
        """Wait until the controller has every change made so far (its view
        at the store's revision of now) and every host's bridge is in sync
        with it. Without the first half a controller that has not yet read
        the latest change (etcd's watch, a busy machine) passed as synced."""
        hosts = list(self.hosts.values()) if hosts is None else list(hosts)
        revision = self.store_revision()

        def ok():
            self.controller.assert_running()
            if not self.controller_synced(hosts, since):
                return None
            st = self.status()
            if revision is not None and (st.get("revision") or 0) < revision:
                return None
            return st

        return wait_for(ok, timeout, 0.1,
                        lambda: "the controller to sync " + ", ".join(h.name for h in hosts)
                        + f"\n--- controller log:\n{self.controller.log(30)}")

    def kill_controller(self) -> None:
        self.controller.kill()

    def restart_controller(self) -> None:
        self.controller.kill()
        self.controller.start()

    def wait_flows_stable(self, hosts: Optional[Iterable[Host]] = None, quiet: float = 1.0,
                          timeout: float = 20) -> dict[str, list[str]]:
        """Wait until no host's flow table has changed for `quiet` seconds;
        return {bridge: flows}."""
        hosts = list(hosts or self.hosts.values())
        state = {"snap": None, "since": time.monotonic()}

        def settled():
            snap = {h.bridge: h.flows() for h in hosts}
            now = time.monotonic()
            if snap != state["snap"]:
                state["snap"], state["since"] = snap, now
                return None
            return snap if now - state["since"] >= quiet else None

        return wait_for(settled, timeout, 0.2, "flow tables to settle")


def random_mac() -> str:
    return "fa:16:3e:%02x:%02x:%02x" % tuple(random.randrange(256) for _ in range(3))


def _plug_into_namespace(node, inside: str, mac: str, ip: Optional[str], prefixlen: int,
                         gateway: Optional[str] = None) -> None:
    sh(["ip", "link", "set", inside, "netns", str(node.pid)])

    def run(*argv, check=True):
        p = subprocess.run(["mnexec", "-a", str(node.pid)] + list(argv),
                           capture_output=True, text=True, timeout=20)
        if check and p.returncode:
            raise HarnessError(f"{argv}: {p.stderr.strip()}")

    run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
    run("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
    run("ip", "link", "set", inside, "name", "eth0")
    run("ip", "link", "set", "eth0", "address", mac)
    run("ethtool", "-K", "eth0", "tx", "off", "rx", "off", check=False)
    run("ip", "link", "set", "lo", "up")
    run("ip", "link", "set", "eth0", "up")
    if ip:
        run("ip", "addr", "add", f"{ip}/{prefixlen}", "dev", "eth0")
        if gateway:
            run("ip", "route", "add", "default", "via", gateway, check=False)
