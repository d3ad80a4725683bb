"""The package faces: `from minillama import X` loads what X needs and no more.

Each check runs in a fresh interpreter, so modules other tests imported do not count.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import minillama


def loaded_after(code: str) -> set[str]:
    """The minillama modules a fresh interpreter holds after running `code`."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in sys.modules if m.startswith('minillama')))"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=root).stdout
    return set(out.split())


@pytest.mark.parametrize("code", [
    "import inspector.trace, inspector.views",  # reading a trace needs no engine
    "from minillama import SamplingParams, InvalidRequestError, ConfigError",
    "import inspector; inspector.load",
])
def test_light_imports_leave_the_engine_out(code):
    loaded = loaded_after(code)
    assert "minillama" in loaded
    assert not {m for m in loaded if m.startswith("minillama.engine")}


def test_asking_for_the_engine_loads_it():
    loaded = loaded_after("from minillama import LLMEngine")
    assert {"minillama.engine.llm_engine", "minillama.engine.scheduler"} <= loaded


def test_every_public_name_resolves_and_others_do_not():
    for name in minillama.__all__:
        assert getattr(minillama, name) is not None, name
        assert name in dir(minillama)
    with pytest.raises(AttributeError, match="no attribute 'Sequence'"):
        minillama.Sequence  # noqa: B018 (internal: not on the face)
    from minillama import memory  # a submodule is still reachable by its name

    assert memory.__name__ == "minillama.memory"
