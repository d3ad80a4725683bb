"""app.py refuses to start, with a message and exit status 2, on what it cannot serve safely or
at all; and a server ends through its exit handlers when killed."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

import app


def test_a_lan_host_without_auth_does_not_start(capsys):
    assert app.main(["--host", "0.0.0.0"]) == 2
    assert "--auth USER:PASSWORD" in capsys.readouterr().err


def test_a_bad_trace_file_does_not_start(tmp_path, capsys):
    bogus = tmp_path / "bogus.mltrace"
    bogus.write_text("not a trace")
    assert app.main(["--trace", str(bogus)]) == 2
    assert "is not a .mltrace file" in capsys.readouterr().err
    assert app.main(["--trace", str(tmp_path / "missing.mltrace")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_bad_model_directory_does_not_start(tmp_path, capsys):
    assert app.main(["--model", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err


def test_a_model_directory_without_tokenizer_files_does_not_start(tmp_path, capsys):
    """It started, and every Add prompts then said "pass the prompt as token ids", which the
    page cannot: refused at start, naming the files, as the command lines refuse it."""
    from tiny_model import write_tiny_model
    from webui_support import free_port

    bare = write_tiny_model(tmp_path, tokenizer=False)
    assert app.main(["--model", str(bare), "--device", "cpu", "--port", str(free_port())]) == 2
    assert "has no tokenizer files (tokenizer.json, tokenizer_config.json)" in capsys.readouterr().err


def test_sigterm_ends_the_server_through_its_exit_handlers(tmp_path):
    """`kill` used to end the server at once, leaving its folder of saved traces behind (498
    of them on one machine): SIGTERM now exits as Ctrl-C does, running the exit handlers."""
    script = (
        "import shutil, sys, tempfile, time, weakref\n"
        "from webui.server import _exit_on_sigterm\n"
        "_exit_on_sigterm()\n"
        "class Owner: pass\n"
        "owner, folder = Owner(), tempfile.mkdtemp(dir=sys.argv[1])\n"
        "weakref.finalize(owner, shutil.rmtree, folder)\n"
        "print(folder, flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parent.parent)
    folder = Path(child.stdout.readline().strip())
    assert folder.is_dir()
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=30) == 128 + signal.SIGTERM
    assert not folder.exists()


@pytest.mark.parametrize("flags, context", [([], 128), (["--max-model-len", "64"], 64)], ids=["default", "given"])
def test_a_model_of_a_short_context_serves_with_the_default_flags(tmp_path, flags, context):
    """The shared model's context defaults to the model's own (the library's rule): a fixed
    4,096 refused every model of a shorter one, TinyLlama's 2,048 or this one's 128, unless
    --max-model-len came with it."""
    from tiny_model import write_tiny_model

    from webui.cli import limits_from_args, parse_args

    args = parse_args(["--model", str(write_tiny_model(tmp_path)), "--device", "cpu", *flags])
    assert app.make_manager(args, limits_from_args(args)).base.max_model_len == context
