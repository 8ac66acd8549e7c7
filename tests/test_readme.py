"""The README's owner and scientist quick starts, run verbatim.

The blocks marked ``<!-- README test: owner -->`` run in one bash, from a scratch directory as
the README says, with the venv's ``bin`` first on PATH (what ``. .venv/bin/activate`` does);
the node they serve gets a free port through ``RDS_NODE_PORT`` (the settings' environment
override, which beats the ``--port 8770`` that ``rds node init`` wrote), so a running demo or a
parallel run cannot collide with it. While it serves, the blocks marked ``scientist`` run as
one Python program against it, with alice's token saved as the connection ``hospital_a``
(what ``%rds connect`` or the demo does for a scientist). Only that glue is the test's own.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")

pytestmark = pytest.mark.server


def marked_blocks(tag: str, language: str) -> list[str]:
    """The fenced blocks right after each ``<!-- README test: TAG -->``, in order."""
    pattern = rf"<!-- README test: {tag} -->\n```{language}\n(.*?)```"
    return re.findall(pattern, README, re.DOTALL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_the_marked_blocks_are_there() -> None:
    assert len(marked_blocks("owner", "bash")) == 1
    assert len(marked_blocks("scientist", "python")) == 3
    owner = marked_blocks("owner", "bash")[0]
    assert "rds node serve" in owner and "rds user add alice" in owner


GLUE = """
echo "$TOKEN" > alice.token
python - <<'PY'
import sys, time, urllib.request
url = "http://127.0.0.1:" + __import__("os").environ["RDS_NODE_PORT"] + "/healthz"
for _ in range(300):
    try:
        urllib.request.urlopen(url, timeout=1).read()
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("the node did not answer " + url)
PY
python -c "
import os
from rds_kernel.client.connections import save_connection
save_connection('hospital_a', 'http://127.0.0.1:' + os.environ['RDS_NODE_PORT'],
                open('alice.token').read().strip())
"
python scientist.py > scientist.out
kill %1
wait
"""


def test_the_owner_and_scientist_quick_starts_run_verbatim(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    scientist = "\n".join(marked_blocks("scientist", "python"))
    checks = """
import json
frame = df  # the scientist's answer
print(json.dumps({"columns": list(frame.columns), "rows": len(frame),
                  "epsilon_spent": frame.attrs["epsilon_spent"], "node": frame.attrs["node"],
                  "remaining": node.budget.get().epsilon_remaining}))
"""
    bindir = Path(sys.executable).parent
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RDS_")},
        "HOME": str(home),
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        "RDS_NODE_PORT": str(port),
        "RDS_CONFIG_DIR": str(home / "config"),
        "VIRTUAL_ENV": str(bindir.parent),
    }
    owner = marked_blocks("owner", "bash")[0]
    script = f'set -euo pipefail\ncd "$HOME"\n{owner}\n{GLUE}'
    # The README's block works wherever `cd` put it: the scratch directory is $HOME here.
    (home / "scientist.py").write_text(scientist + checks)
    process = subprocess.Popen(
        ["bash", "-c", script],
        cwd=home,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"

    # What the owner saw: the budget line and the audit, and the token only on stdout.
    assert "alice" in out
    assert "dataset.add" in out or "patients" in out
    assert (home / "owner.token").read_text().startswith("rds_")
    assert not (ROOT / "hospital").exists() and not (ROOT / "owner.token").exists()
    assert f"http://127.0.0.1:{port}" in err  # serve said where, after binding
    # What the scientist got: a DP answer, charged on alice's budget of 5.
    result = json.loads((home / "scientist.out").read_text().strip().splitlines()[-1])
    assert result["columns"][:1] == ["sex"]
    assert result["node"] == "hospital_a"
    assert 0 < result["epsilon_spent"] <= 0.5  # the cost, never above what was asked
    assert result["remaining"] == pytest.approx(5 - result["epsilon_spent"])


def headings() -> set[str]:
    return {m.strip() for m in re.findall(r"^#{2,4} (.+)$", README, re.MULTILINE)}


def test_every_schema_key_is_documented() -> None:
    from rds_kernel import schema

    table = README.split("### Schema file")[1].split("\n#")[0]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", table, re.MULTILINE))
    assert documented == schema._SCHEMA_KEYS | schema._COLUMN_KEYS


def test_the_sections_messages_cite_exist() -> None:
    """A message that sends a person to the README names a section that is there."""
    cited = set()
    for path in (ROOT / "rds_kernel").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        cited |= set(re.findall(r"README, '([^']+)'", text))
        cited |= set(re.findall(r"README\\?'s \\?\"([^\"\\]+)\\?\"", text))
    assert {"Schema file", "Node settings"} <= cited  # the scan finds them
    for section in cited:
        assert any(h.startswith(section) for h in headings()), section


def test_nothing_points_outside_the_repository() -> None:
    """No link to a sibling folder or a machine path; web links only to the projects we use."""
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        assert "../shared" not in text and "/work/" not in text, path
        for target in re.findall(r"\]\(([^)#]+)", text):
            if not target.startswith("http"):
                assert (path.parent / target).exists(), f"{path.name}: {target}"
