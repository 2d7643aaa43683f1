"""Shared fixtures. Mininet scenarios (tests/mininet) never skip: without root,
Open vSwitch or mnexec they fail with the reason."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests check correctness, not speed: on a loaded 2-core CI machine
# an example can take longer than hypothesis' default 200 ms deadline, which
# failed otherwise sound runs. Speed is measured under bench/.
settings.register_profile("vmflow", deadline=None)
settings.load_profile("vmflow")

sys.path.insert(0, str(Path(__file__).resolve().parent / "mininet"))


@pytest.fixture(scope="session")
def mininet_ready():
    """Fails (never skips) when the Mininet test bed is not usable."""
    from harness import check_prerequisites, sweep_stale
    why = check_prerequisites()
    if why:
        pytest.fail(f"Mininet test bed unusable: {why}", pytrace=False)
    sweep_stale()
    return True


def pytest_generate_tests(metafunc):
    # A scenario marked both_stores runs once per store backend. Module
    # scope, so a module of them (pytestmark) shares one cloud per backend.
    if metafunc.definition.get_closest_marker("both_stores") \
            and "store_backend" in metafunc.fixturenames:
        metafunc.parametrize("store_backend", ["sqlite", "etcd"], indirect=True, scope="module")


@pytest.fixture(scope="module")
def store_backend(request):
    """The store a cloud runs on: a both_stores scenario's parameter, else
    $VMFLOW_TEST_STORE (sqlite when unset; etcd runs any scenario on etcd)."""
    return getattr(request, "param", None) or os.environ.get("VMFLOW_TEST_STORE", "sqlite")


def _start_cloud(workdir, config=None, store=None):
    from harness import Cloud
    return Cloud.start(workdir, config, store=store)


@pytest.fixture
def cloud(mininet_ready, tmp_path, store_backend):
    """A fresh vmflow (api + controller, own store: SQLite, or etcd for
    both_stores scenarios) and an empty fabric, torn down after the test even
    when it fails. Add hosts/networks/VMs with cloud.add_host / add_network /
    add_vm (tests/mininet/harness.py)."""
    c = _start_cloud(tmp_path / "cloud", store=store_backend)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def module_cloud(mininet_ready, tmp_path_factory, store_backend):
    """One cloud shared by the tests of a module (for tests that don't interfere)."""
    c = _start_cloud(tmp_path_factory.mktemp("cloud"), store=store_backend)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def cloud_factory(mininet_ready, tmp_path, store_backend):
    """cloud_factory(config={...}) for a cloud with its own configuration
    (e.g. {"controller": {"audit_interval": 2}}); all are torn down."""
    made = []

    def make(config=None):
        c = _start_cloud(tmp_path / f"cloud{len(made)}", config, store=store_backend)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.close()
