"""`zmq-proxy --help` as a newcomer reads it: every flag described with its default, the socket
types and allowed pairs listed (and `zmq-proxy pairs` prints them as a table), and each heading
holding only flags of what it names."""

from __future__ import annotations

import re
import subprocess

from zmqpeers import proxy_bin

PAIRS = ("ROUTER/DEALER", "XSUB/XPUB", "SUB/PUB", "PULL/PUSH")


def _run(*args: str) -> str:
    res = subprocess.run([proxy_bin(), *args], capture_output=True, timeout=10, text=True)
    assert res.returncode == 0, res.stderr
    return res.stdout


def _sections(text: str) -> dict[str, dict[str, str]]:
    """Heading -> flag -> its description (the lines under it, joined)."""
    out: dict[str, dict[str, str]] = {}
    heading, flag = None, None
    for line in text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            heading, flag = line[:-1], None
            out[heading] = {}
            continue
        m = re.match(r"^\s+(?:-\w, )?(--[\w-]+)(?: <[^>]+>)?\s*(.*)$", line)
        if heading is not None and m and line.lstrip().startswith("-"):
            flag = m.group(1)
            out[heading][flag] = m.group(2)  # clap puts a short help on the flag's own line
        elif heading is not None and flag is not None and line.strip():
            out[heading][flag] += " " + line.strip()
    return out


def test_every_flag_has_a_description_and_its_default():
    sections = _sections(_run("--help"))
    flags = {f: d for s in sections.values() for f, d in s.items()}
    assert "--frontend-type" in flags and "--bind-host" in flags, sorted(flags)
    for flag, desc in flags.items():
        if flag in ("--help", "--version"):
            continue
        text = re.sub(r"\[env: [^\]]*\]", "", desc).strip()
        assert len(text) > 15 and not text.startswith("["), f"{flag} has no description: {desc!r}"
        assert "[default: " in desc, f"{flag} does not say its default: {desc!r}"


def test_help_lists_the_socket_types_and_allowed_pairs():
    text = _run("--help")
    for pair in PAIRS:
        assert pair in text, pair
    assert re.search(r"capture.*PUB, DEALER.*PUSH", text, re.I | re.S), text[-1500:]


def test_pairs_subcommand_prints_the_table():
    out = _run("pairs")
    for pair in PAIRS:
        front, back = pair.split("/")
        assert re.search(rf"\b{front}\b.*\b{back}\b", out), out
        assert re.search(rf"\b{back}\b.*\b{front}\b", out), f"either way round: {out}"
    assert "capture" in out.lower()


def test_headings_hold_only_flags_of_what_they_name():
    sections = _sections(_run("--help"))
    for heading, flags in sections.items():
        for socket in ("frontend", "backend", "capture", "control"):
            if heading.lower().startswith(socket):
                strays = [f for f in flags if not f.startswith(f"--{socket}-")]
                assert not strays, f"{heading!r} holds {strays}"
    for socket in ("frontend", "backend", "capture"):
        flag = f"--{socket}-heartbeat-interval"
        holder = [h for h, flags in sections.items() if flag in flags]
        assert holder and holder[0].lower().startswith(socket), f"{flag} is under {holder}"
