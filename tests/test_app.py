"""app.py refuses to start, with a message and exit status 2, on what it cannot serve safely or at all."""

from __future__ import annotations

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
