"""conf/vmflow.conf documents every registered option, and loads cleanly."""
from __future__ import annotations

import re
from pathlib import Path

from topology.config import GROUPS, new_conf

SAMPLE = Path(__file__).resolve().parents[2] / "conf" / "vmflow.conf"
OPTION_LINE = re.compile(r"^#?\s*([a-z_][a-z0-9_]*)\s*=")


def sample_options() -> dict[str, set[str]]:
    """{section: {option, ...}} for set and commented-out options alike."""
    found: dict[str, set[str]] = {}
    section = None
    for line in SAMPLE.read_text().splitlines():
        header = re.match(r"^\[([^\]]+)\]$", line.strip())
        if header:
            section = header.group(1)
            found.setdefault(section, set())
            continue
        m = OPTION_LINE.match(line)
        if m and section is not None:
            found[section].add(m.group(1))
    return found


def test_every_registered_option_is_in_the_sample():
    found = sample_options()
    for group, opts in GROUPS.items():
        section = group or "DEFAULT"
        missing = {o.dest for o in opts} - found.get(section, set())
        assert not missing, f"conf/vmflow.conf [{section}] lacks {sorted(missing)}"


def test_sample_names_no_unknown_option():
    registered = {(g or "DEFAULT"): {o.dest for o in opts} for g, opts in GROUPS.items()}
    for section, names in sample_options().items():
        assert section in registered, f"unknown section [{section}]"
        assert names <= registered[section], f"[{section}] {sorted(names - registered[section])}"


def test_every_option_has_help():
    for group, opts in GROUPS.items():
        for o in opts:
            assert o.help, f"{group}.{o.dest} has no help text"


def test_sample_loads_and_gives_defaults():
    conf = new_conf()
    conf(args=[], default_config_files=[str(SAMPLE)], default_config_dirs=[])
    assert conf.api_listen == "127.0.0.1:9696"
    assert conf.api.workers == 4
    assert conf.api.auth_strategy == "noauth"
