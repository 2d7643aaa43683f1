"""vmflow's configuration: one oslo.config namespace, INI files as OpenStack
operators know them. Command-line flags override the file.

Each option group is declared here, next to the others, so that
`conf/vmflow.conf` can be checked against one list (tests/unit/test_config.py).
"""
from __future__ import annotations

from oslo_config import cfg

DEFAULT_OPTS = [
    cfg.StrOpt("store", default="sqlite:///var/vmflow.db",
               help="Where the topology store lives. sqlite:///RELATIVE/PATH or "
                    "sqlite:////ABSOLUTE/PATH (embedded SQLite, WAL mode), or "
                    "etcd://HOST:PORT[,HOST:PORT...][/PREFIX] (an etcd v3 cluster shared "
                    "by API servers and controllers on several machines)."),
    cfg.StrOpt("api_listen", default="127.0.0.1:9696",
               help="HOST:PORT the Neutron-compatible REST API listens on."),
    cfg.StrOpt("ofp_listen", default="0.0.0.0:6653",
               help="Where the OpenFlow 1.3 controller listens: HOST:PORT or "
                    "tcp:HOST:PORT for plain TCP, ssl:HOST:PORT for TLS with the "
                    "[openflow] ca_cert, certificate and private_key (every switch "
                    "must then present a certificate signed by ca_cert). Plain TCP "
                    "on an address other than loopback logs a warning: anyone who "
                    "reaches the port can claim to be a switch."),
    cfg.StrOpt("log_level", default="INFO", help="DEBUG, INFO, WARNING or ERROR."),
]

API_OPTS = [
    cfg.StrOpt("auth_strategy", default="noauth", choices=["noauth", "token"],
               help="noauth: every caller is admin (keep the API on loopback). "
                    "token: X-Auth-Token must be one of token_file's tokens."),
    cfg.StrOpt("token_file", default="",
               help="With auth_strategy=token: a JSON file {token: {project_id, role}} "
                    "where role is admin or member."),
    cfg.IntOpt("workers", default=4, min=1, help="gunicorn worker processes."),
    cfg.StrOpt("metrics_listen", default="",
               help="HOST:PORT where the API serves /metrics in Prometheus' text format: "
                    "request counts and latency by resource, method and status, summed "
                    "over every worker (topology/api/metrics.py). Empty: none."),
    cfg.StrOpt("base_mac", default="fa:16:3e:00:00:00",
               help="Port MACs are allocated under this base: the first three octets "
                    "are kept, the rest are random (as Neutron's base_mac)."),
    cfg.StrOpt("dvr_base_mac", default="fa:16:3f:00:00:00",
               help="Hosts' DVR MACs are allocated under this base (as Neutron's dvr_base_mac)."),
    cfg.StrOpt("external_base_mac", default="fa:16:3f:00:00:00",
               help="Hosts' external MACs (a host's source MAC on every external network: "
                    "floating IP ARP answers and NATed frames, like Neutron's fip gateway "
                    "port) are allocated under this base. A host's external MAC never "
                    "equals any host's DVR MAC, even under the same base."),
    cfg.IntOpt("default_mtu", default=1500, min=68, max=65535,
               help="MTU of a network created without one."),
    cfg.StrOpt("default_project", default="admin",
               help="project_id given to resources created under noauth without one."),
    cfg.ListOpt("network_vlan_ranges", default=["physnet1:1000:2999"],
                help="physnet:low:high ranges (as Neutron's ML2 option) from which a "
                     "network created without provider attributes, or a VLAN network "
                     "without a segmentation id, gets its VLAN."),
    cfg.IntOpt("graceful_timeout", default=30, min=1,
               help="Seconds a worker may finish its requests after SIGTERM."),
    cfg.IntOpt("timeout", default=60, min=1,
               help="Seconds a worker's event loop may go without a heartbeat before "
                    "gunicorn restarts the worker (requests run in threads and do not "
                    "stop the heartbeat)."),
    cfg.IntOpt("threads", default=8, min=1,
               help="Threads per worker that run requests. A request reaches a thread "
                    "only once it has arrived whole, so slow clients never hold one; "
                    "more threads help only while requests wait on the store."),
    cfg.IntOpt("worker_connections", default=1000, min=1,
               help="Connections one worker holds at once (arriving, running or kept "
                    "alive); beyond this it stops accepting until one closes."),
    cfg.IntOpt("keepalive_timeout", default=5, min=0,
               help="Seconds an idle kept-alive connection is held for its next "
                    "request; 0 closes the connection after each response."),
    cfg.FloatOpt("header_timeout", default=10.0, min=0.1,
                 help="Seconds a client has, from connecting (or from its last "
                      "response, on a kept-alive connection), to send a whole request "
                      "header; then it gets a 408 and is closed."),
    cfg.FloatOpt("body_timeout", default=30.0, min=0.1,
                 help="Seconds a client has, after its header, to send the whole body; "
                      "then it gets a 408 and is closed."),
    cfg.FloatOpt("response_timeout", default=30.0, min=0.1,
                 help="Seconds a client has to take in a whole response; a client "
                      "that reads too slowly is cut off so that it does not hold a "
                      "thread."),
    cfg.IntOpt("max_header_size", default=65536, min=1024,
               help="Bytes a request line and header may take; beyond this a 431."),
    cfg.IntOpt("max_body_size", default=1048576, min=1024,
               help="Bytes a request body may take; beyond this a 413 with nothing "
                    "written (Neutron's oslo.middleware default is 114688; vmflow's "
                    "is larger for bulk creates)."),
    cfg.FloatOpt("store_timeout", default=5.0, min=0.1,
                 help="Seconds a request waits for a locked or busy store before it "
                      "is answered 503 with Retry-After; the transaction it would "
                      "have made is not made. On etcd also how long a write that "
                      "keeps losing to concurrent writes is run again before a 409."),
]

CONTROLLER_OPTS = [
    cfg.IntOpt("audit_interval", default=60, min=1,
               help="Seconds between full re-reads of every switch's flows to repair drift. "
                    "A switch's flow monitor (OVS) reports a hand edit in vmflow's cookie "
                    "space at once and it is repaired then; the audit is the safety net for "
                    "a switch without one, or one that paused it."),
    cfg.FloatOpt("store_poll_interval", default=0.005, min=0.001,
                 help="Seconds between checks of the store's cheap change hint (SQLite: "
                      "PRAGMA data_version); the change feed itself is read only when "
                      "the hint moved, and at least once a second. The delay between "
                      "an API write and the controller noticing it is at most this."),
    cfg.IntOpt("controller_rate_pps", default=200, min=1,
               help="Packets per second each VM port may send to the controller "
                    "(ARP, DHCP, metadata); the rest is dropped by an OpenFlow meter."),
    cfg.IntOpt("controller_burst", default=100, min=1,
               help="Burst size, in packets, of the per-port controller meter."),
    cfg.IntOpt("packet_in_queue", default=4096, min=16,
               help="Packet-ins waiting for an app beyond this are dropped and counted."),
    cfg.ListOpt("apps", default=["l2", "arp", "dhcp", "metadata", "secgroup", "qos", "dvr", "nat"],
                help="Apps the controller runs (of l2, arp, dhcp, metadata, secgroup, qos, dvr, nat). Each one "
                     "listed must load: one that fails to import or start stops the "
                     "controller at startup rather than running without it."),
    cfg.StrOpt("metrics_listen", default="",
               help="HOST:PORT where the controller serves /metrics in Prometheus' text "
                    "format (switches, reconciler, packet-in, meters, store: "
                    "controller/metrics.py). Empty: no metrics server."),
    cfg.StrOpt("status_file", default="",
               help="Where the controller writes its status JSON (switches, claimed or "
                    "not, sync state, counters) every second. Empty: "
                    "controller-status.json next to the SQLite store file."),
    cfg.FloatOpt("port_status_interval", default=0.2, min=0.05,
                 help="Seconds between write-backs of port status (ACTIVE once a "
                      "port's flows are installed where it is plugged, DOWN otherwise); "
                      "each round writes every change in one transaction."),
]

OPENFLOW_OPTS = [
    cfg.FloatOpt("handshake_timeout", default=10.0, min=0.1,
                 help="Seconds a new OpenFlow connection has to finish the TLS and "
                      "OpenFlow handshakes (HELLO, FEATURES, port descriptions); "
                      "then it is closed."),
    cfg.IntOpt("max_half_open", default=256, min=1,
               help="OpenFlow connections still in their handshake held at once; a "
                    "connection beyond it is closed at accept."),
    cfg.FloatOpt("echo_timeout", default=3.0, min=0.1,
                 help="When a second connection claims a datapath id that is already "
                      "connected, the first is sent an echo request: if it answers "
                      "within this many seconds it keeps the datapath and the second "
                      "is refused; otherwise the first is closed and the second takes "
                      "over."),
    cfg.FloatOpt("inactivity_probe", default=5.0, min=0.5,
                 help="A connected switch from which nothing arrived for this many "
                      "seconds is sent an echo request; if nothing arrives for as "
                      "long again, the connection is closed (a switch gone without "
                      "a FIN, or frozen)."),
    cfg.StrOpt("ca_cert", default="",
               help="With ofp_listen ssl:...: the CA certificate (PEM) that every "
                    "switch certificate must be signed by (ovs-pki's "
                    "switchca/cacert.pem)."),
    cfg.StrOpt("certificate", default="",
               help="With ofp_listen ssl:...: the controller's certificate (PEM)."),
    cfg.StrOpt("private_key", default="",
               help="With ofp_listen ssl:...: the controller's private key (PEM)."),
]

DHCP_OPTS = [
    cfg.IntOpt("lease_time", default=86400, min=60, help="DHCP lease time in seconds."),
    cfg.StrOpt("dns_domain", default="openstacklocal",
               help="Domain name (option 15) handed to VMs, as Neutron's dns_domain."),
]

METADATA_OPTS = [
    cfg.IntOpt("max_connections", default=1024, min=1,
               help="Metadata TCP connections held at once, over all ports."),
    cfg.IntOpt("max_connections_per_port", default=16, min=1,
               help="Metadata TCP connections one VM port may hold at once."),
    cfg.IntOpt("idle_timeout", default=30, min=1,
               help="Seconds after which an idle metadata connection is forgotten."),
    cfg.StrOpt("mac", default="0e:a9:fe:a9:fe:fe",
               help="MAC that ARP for 169.254.169.254 is answered with and that every "
                    "metadata reply is sent from (locally administered; must not be a "
                    "port's MAC)."),
    cfg.StrOpt("token_secret", default="", secret=True,
               help="Key that signs IMDSv2 tokens. Empty (the default): a random key "
                    "the first controller stores in the store, shared by every "
                    "controller, so tokens survive restarts and failovers."),
]

CLUSTER_OPTS = [
    cfg.StrOpt("etcd", default="",
               help="Several controllers: the etcd cluster's client endpoints, "
                    "host:port[,host:port...]. Every controller connects to every switch; "
                    "liveness comes from an etcd lease per controller, and each switch's "
                    "master is chosen by a hash over the live ones (README: Several "
                    "controllers). Empty: this controller is the only one, master of "
                    "every switch, and etcd is not used."),
    cfg.StrOpt("controller_id", default="",
               help="This controller's name in the cluster; unique among the "
                    "controllers, and best kept across restarts. Empty: the host name "
                    "and the OpenFlow listen port."),
    cfg.IntOpt("lease_ttl", default=3, min=1,
               help="Seconds of the controller's etcd lease, kept alive every third of "
                    "it. A controller that dies loses its switches to the others once "
                    "its lease expires, within this; a shorter lease is a quicker "
                    "takeover and more etcd traffic (etcd's own minimum is about 1.5 "
                    "election timeouts)."),
]

# Neutron's [quotas] names. -1 is unlimited, the default here: a limit is set per
# project through /v2.0/quotas, or for every project by these options
# (Neutron's own defaults are network 100, subnet 100, port 500, router 10,
# floatingip 50, security_group 10, security_group_rule 100).
QUOTA_OPTS = [
    cfg.IntOpt(f"quota_{name}", default=-1, min=-1,
               help=f"Default {name.replace('_', ' ')} quota of a project (-1: unlimited).")
    for name in ("network", "subnet", "port", "router", "floatingip", "security_group",
                 "security_group_rule")
]

GROUPS = {
    None: DEFAULT_OPTS,
    "api": API_OPTS,
    "controller": CONTROLLER_OPTS,
    "openflow": OPENFLOW_OPTS,
    "dhcp": DHCP_OPTS,
    "metadata": METADATA_OPTS,
    "cluster": CLUSTER_OPTS,
    "quotas": QUOTA_OPTS,
}


def new_conf() -> cfg.ConfigOpts:
    """A fresh, fully registered option namespace (one per process or test)."""
    conf = cfg.ConfigOpts()
    for group, opts in GROUPS.items():
        conf.register_opts(opts, group=group)
    return conf


def split_hostport(value: str, field: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not (0 < int(port) < 65536):
        raise ValueError(f"{field}: expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def parse_ofp_listen(value: str, field: str = "ofp_listen") -> tuple[str, str, int]:
    """(scheme, host, port) from HOST:PORT, tcp:HOST:PORT or ssl:HOST:PORT."""
    scheme, sep, rest = value.partition(":")
    if sep and scheme in ("tcp", "ssl"):
        host, port = split_hostport(rest, field)
        return scheme, host, port
    host, port = split_hostport(value, field)
    if ":" in host and not value.startswith("["):
        raise ValueError(f"{field}: expected HOST:PORT, tcp:HOST:PORT or ssl:HOST:PORT, "
                         f"got {value!r}")
    return "tcp", host, port
