"""docs/DESIGN.md's worked example of a new observer runs as written, on the public values alone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DESIGN = Path(__file__).resolve().parent.parent / "docs" / "DESIGN.md"


def _example() -> str:
    text = DESIGN.read_text()
    section = text[text.index("## The observation API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_example_imports_only_the_package_face():
    imports = re.findall(r"^(?:from|import) (\S+)", _example(), re.M)
    assert set(imports) <= {"torch", "minillama"}


@pytest.mark.slow
def test_the_observer_example_runs_and_sees_what_happened(capsys):
    namespace: dict = {"__name__": "design_example"}
    exec(compile(_example(), str(DESIGN), "exec"), namespace)
    rows = namespace["watcher"].rows
    engine = namespace["engine"]
    assert rows and rows[0]["phase"] == "prefill" and rows[0]["ran"][0][1] == "admitted"
    assert all(0.0 < p <= 1.0 for row in rows for p in row["top_prob"].values())
    # 8 blocks of 16 cannot hold three 48-token answers after their prompts: someone waits or
    # is preempted, and resumes.
    assert sum(len(row["preempted"]) for row in rows) == engine.stats.preemptions > 0
    assert any(reason == "resumed" for row in rows for _, reason, _ in row["ran"])
    assert any(row["shared"] for row in rows)  # the common system prompt's blocks are shared
    assert "preemptions:" in capsys.readouterr().out
