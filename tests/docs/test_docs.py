"""The documentation points at things that exist.

README.md, CHANGELOG.md, docs/*.md and the crates' and test tiers' READMEs are read as GitHub shows
them. Nothing is run here: links, anchors, repository paths, example files and the `cargo`
commands the pages show are checked against the checkout and the workspace's Cargo.toml files.
Commands that need a cluster (kubectl, helm, docker) only have their file arguments checked; the
README's first command runs in proxy/tests/peers/test_readme.py, and `bash tests/run.sh` is every
tier.
"""

from __future__ import annotations

import glob
import re
import shlex
import tomllib
import unicodedata
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PAGES = sorted(
    [REPO / "README.md", REPO / "CHANGELOG.md"]
    + list((REPO / "docs").glob("*.md"))
    + [
        REPO / "operator" / "README.md",
        REPO / "proxy" / "tests" / "peers" / "README.md",
        REPO / "proxy" / "tests" / "peers_ops" / "README.md",
    ]
)
# Pages of the user's documentation proper: short headings, no deeper than ###.
USER_PAGES = [p for p in PAGES if p.parent == REPO / "docs" or p.parent == REPO]

# Top-level entries of the repository a path in backticks may start with.
TOP = ("api/", "probe/", "proxy/", "operator/", "charts/", "crds/", "docs/", "examples/", "tests/",
       "docker/", ".ci/", ".github/")
# Folders the docs name that a build or a run makes rather than the checkout holds.
MADE = ("target/", ".tools/", "e2e-artifacts/")
# Paths of the layout docs/development.md describes that a reshape creates: allowed to be missing
# until it lands in the same tree, and reported by test_pending_layout_paths meanwhile.
PENDING: set[str] = set()


def rel(p: Path) -> str:
    return str(p.relative_to(REPO))


def ids(pages):
    return [rel(p) for p in pages]


FENCE = re.compile(r"^(```|~~~)")


def split_code(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(prose lines with fenced blocks blanked, [(info string, block text)])."""
    prose, blocks, block, info, fence = [], [], [], "", None
    for line in text.splitlines():
        m = FENCE.match(line.strip())
        if fence is None and m:
            fence, info, block = m.group(1), line.strip()[3:].strip(), []
            prose.append("")
        elif fence is not None and line.strip().startswith(fence):
            blocks.append((info, "\n".join(block)))
            fence = None
            prose.append("")
        elif fence is not None:
            block.append(line)
            prose.append("")
        else:
            prose.append(line)
    return prose, blocks


def code_spans(line: str) -> list[str]:
    return [m.group(2).strip() for m in re.finditer(r"(`+)(.+?)\1", line)]


def strip_code_spans(line: str) -> str:
    return re.sub(r"(`+)(.+?)\1", "", line)


def github_anchor(heading: str) -> str:
    """GitHub's heading id: markup dropped, lower case, punctuation but '-' and '_' removed,
    spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links keep their text
    text = re.sub(r"<[^>]+>", "", text)
    text = text.replace("`", "").strip().lower()
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in "-_" or cat[0] in "LN" or cat == "Mn":
            out.append(ch)
        elif ch == " ":
            out.append("-")
    return "".join(out)


@cache
def anchors(page: Path) -> frozenset[str]:
    prose, _ = split_code(page.read_text())
    seen: dict[str, int] = {}
    found = set()
    for line in prose:
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = github_anchor(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return frozenset(found)


def links(page: Path) -> list[str]:
    prose, _ = split_code(page.read_text())
    out = []
    for line in prose:
        line = strip_code_spans(line)
        out += [m.group(1) for m in re.finditer(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", line)]
    return out


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES))
def test_relative_links_resolve(page: Path):
    problems = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            problems.append(f"{target}: {rel(dest) if dest.is_relative_to(REPO) else dest} does not exist")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: no heading with anchor #{anchor} in {rel(dest)}")
    assert not problems, f"{rel(page)}:\n  " + "\n  ".join(problems)


def repo_paths(text: str) -> set[str]:
    """Tokens that look like paths of this repository: in code spans of the prose, and in the
    words of code blocks."""
    prose, blocks = split_code(text)
    tokens = [t for line in prose for t in code_spans(line)]
    for _, block in blocks:
        for line in block.splitlines():
            tokens += re.split(r"[\s=,;()'\"]+", line.split(" #")[0])
    found = set()
    for token in tokens:
        token = token.strip().rstrip(".,:;")
        if " " in token or not token.startswith(TOP + ("Cargo.toml", "README.md", "CHANGELOG.md")):
            continue
        if any(c in token for c in "<>{}$") or "..." in token:
            continue
        found.add(token)
    return found


def path_exists(token: str, page: Path) -> bool:
    for base in (REPO, page.parent):
        if any(ch in token for ch in "*?["):
            if glob.glob(str(base / token)):
                return True
        elif (base / token).exists():
            return True
    return False


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES))
def test_repository_paths_exist(page: Path):
    missing = sorted(
        t for t in repo_paths(page.read_text())
        if not t.startswith(MADE) and t not in PENDING and not path_exists(t, page)
    )
    assert not missing, f"{rel(page)} names paths that do not exist: {missing}"


def test_pending_layout_paths():
    """The layout's paths that the code reshape creates: once they all exist, PENDING can go."""
    still = sorted(p for p in PENDING if not (REPO / p).exists())
    print(f"layout paths not in this tree yet: {still}")
    for p in PENDING:
        assert p in (REPO / "docs" / "development.md").read_text(), f"{p} is no longer in the layout"


@cache
def workspace() -> dict[str, dict[str, set[str]]]:
    """package name -> {"bin": names, "bench": names, "test": names}, as cargo discovers them."""
    root = tomllib.loads((REPO / "Cargo.toml").read_text())
    packages = {}
    for member in root["workspace"]["members"]:
        crate = REPO / member
        manifest = tomllib.loads((crate / "Cargo.toml").read_text())
        name = manifest["package"]["name"]
        targets = {"bin": set(), "bench": set(), "test": set()}
        for kind in targets:
            targets[kind] |= {t["name"] for t in manifest.get(kind, [])}
        if (crate / "src" / "main.rs").exists():
            targets["bin"].add(name)
        targets["bin"] |= {p.stem for p in (crate / "src" / "bin").glob("*.rs")}
        targets["bin"] |= {p.parent.name for p in (crate / "src" / "bin").glob("*/main.rs")}
        targets["bench"] |= {p.stem for p in (crate / "benches").glob("*.rs")}
        targets["test"] |= {p.stem for p in (crate / "tests").glob("*.rs")}
        targets["test"] |= {p.parent.name for p in (crate / "tests").glob("*/main.rs")}
        packages[name] = targets
    return packages


def commands(text: str) -> list[str]:
    """Shell command lines of the page: code block lines (continuations joined) and code spans."""
    prose, blocks = split_code(text)
    out = [span for line in prose for span in code_spans(line)]
    for _, block in blocks:
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            out += [part.strip() for part in re.split(r"&&|\|\||;|\|", line.split(" #")[0])]
    return [c for c in out if c]


def cargo_problems(cmd: str) -> list[str]:
    try:
        words = shlex.split(cmd)
    except ValueError:
        words = cmd.split()
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):  # VAR=value prefixes
        words.pop(0)
    if len(words) < 2 or words[0] != "cargo" or words[1] not in ("run", "bench", "test", "build"):
        return []
    if "--" in words:
        words = words[: words.index("--")]
    packages = workspace()
    problems = []
    pkg = None
    for flag, value in zip(words, words[1:]):
        if flag in ("-p", "--package"):
            pkg = value
            if pkg not in packages:
                problems.append(f"{cmd}: no package {pkg} (workspace: {sorted(packages)})")
                return problems
    for flag, kind in (("--bin", "bin"), ("--bench", "bench"), ("--test", "test")):
        for f, value in zip(words, words[1:]):
            if f != flag:
                continue
            scope = [pkg] if pkg else list(packages)
            if not any(value in packages[p][kind] for p in scope):
                problems.append(f"{cmd}: no {kind} target {value} in {scope}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES))
def test_cargo_commands_name_real_targets(page: Path):
    problems = [p for c in commands(page.read_text()) for p in cargo_problems(c)]
    assert not problems, f"{rel(page)}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES))
def test_named_examples_exist(page: Path):
    text = page.read_text()
    named = set(re.findall(r"(?<![\w/.-])((?:examples/)(?:[\w.-]+/)*[\w.-]+\.yaml)", text))
    missing = sorted(e for e in named if not (REPO / e).exists())
    assert not missing, f"{rel(page)} names examples that do not exist: {missing}"


@pytest.mark.parametrize("page", USER_PAGES, ids=ids(USER_PAGES))
def test_headings_no_deeper_than_three(page: Path):
    prose, _ = split_code(page.read_text())
    deep = [line for line in prose if re.match(r"^#{4,}\s", line)]
    assert not deep, f"{rel(page)} has headings deeper than ###: {deep}"


def test_readme_is_short_and_starts_with_the_two_commands():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 150, f"README.md has {len(text.splitlines())} lines"
    first = re.search(r"```sh\n(.*?)```", text, re.S)
    assert first, "README.md has no ```sh block"
    lines = [line.split("#", 1)[0].strip() for line in first.group(1).splitlines()]
    assert [line for line in lines if line] == [
        "cargo run --release -p zmq-proxy -- --config examples/shared-queue.yaml",
        "bash tests/run.sh",
    ]


def test_every_alert_has_its_runbook_section():
    """runbook_url is runbookBaseUrl + '#' + the anchor the PrometheusRule names for each alert;
    each must be a heading of docs/runbooks.md, and the chart's example URLs point at that page."""
    chart = REPO / "charts" / "zmq-proxy-operator"
    template = (chart / "templates" / "prometheusrule.yaml").read_text()
    alerts = re.findall(r"- alert: (\w+)", template)
    wanted = re.findall(r'"anchor" "([^"]+)"', template)
    assert alerts and len(set(alerts)) == len(set(wanted)), (alerts, wanted)
    assert {a.lower() for a in alerts} == set(wanted), "an anchor is not its alert's name in lower case"
    have = anchors(REPO / "docs" / "runbooks.md")
    missing = sorted(set(wanted) - have)
    assert not missing, f"docs/runbooks.md has no section for {missing}"
    for f in [chart / "values.yaml", chart / "values.schema.json", *sorted((chart / "ci").glob("*values*.yaml"))]:
        for url in re.findall(r"https?://\S+?/blob/main/\S+?\.md", f.read_text()):
            assert url.endswith("/docs/runbooks.md"), f"{rel(f)}: runbook URL {url} is not docs/runbooks.md"


def test_reference_page_is_generated():
    """docs/reference.md carries its generator's notice; operator/tests/crddoc.rs checks its bytes."""
    text = (REPO / "docs" / "reference.md").read_text()
    assert "cargo run -p zmq-proxy-operator --bin crddoc > docs/reference.md" in text.splitlines()[2]
