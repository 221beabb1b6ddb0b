"""Terminal control sequences (colours, cursor moves, OSC hyperlinks and titles) are stripped once, where
the sandbox reads a command's output, and from a served app's log: tool results, setup and verify tails,
excerpts and the app's last words are shown clean."""

from __future__ import annotations

import os

import pytest

from agents.sandbox import load_backend
from agents.sandbox.process import run_process, strip_ansi
from agents.serve import AppFailed, AppSpec, log_tail, start_app, stop_app

ESC = "\x1b"
# What jest, vitest, npm and gradle print with FORCE_COLOR or on a CI: colours, bold, 256 and true
# colour, erasing the line and moving the cursor, an OSC 8 hyperlink (ended by BEL, and by ST), a
# window title, a character set switch and cursor save/restore.
COLOURED = (
    f"{ESC}[1m{ESC}[32m ✓ {ESC}[39m{ESC}[22m adds two numbers {ESC}[2m(2 ms){ESC}[22m\n"
    f"{ESC}[38;5;196m✕{ESC}[0m subtracts {ESC}[38;2;255;0;0mred{ESC}[m\n"
    f"{ESC}[2K{ESC}[1A{ESC}[1G{ESC}[?25lprogress 50%{ESC}[?25h\n"
    f"see {ESC}]8;;https://example.com/docs{ESC}\\the docs{ESC}]8;;{ESC}\\ or {ESC}]8;;file:///x\x07here{ESC}]8;;\x07\n"
    f"{ESC}]0;npm test{ESC}\\{ESC}(Bplain{ESC}7 saved{ESC}8\ttab\n"
)
CLEAN = " ✓  adds two numbers (2 ms)\n✕ subtracts red\nprogress 50%\nsee the docs or here\nplain saved\ttab\n"


def test_strip_ansi_removes_colours_cursor_moves_hyperlinks_and_titles_and_keeps_the_words():
    assert strip_ansi(COLOURED) == CLEAN


def test_a_sequence_cut_in_half_never_swallows_the_lines_after_it():
    assert strip_ansi(f"before {ESC}]8;;https://cut-off\nnext line\n{ESC}[3") == "before \nnext line\n3"


def test_strip_ansi_leaves_plain_text_alone():
    text = "naïve café ✓ ✕ → ⎯ [brackets] 100% \\ 日本語\n\ttabs\r\n"
    assert strip_ansi(text) == text


def test_the_output_a_command_prints_comes_back_without_control_sequences(tmp_path):
    script = tmp_path / "coloured"
    script.write_bytes(COLOURED.encode())
    result = run_process(
        ["cat", str(script)], env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, timeout=30, output_bytes=10_000
    )
    assert result.output == CLEAN


def test_long_output_is_clean_in_its_head_and_its_tail(tmp_path):
    script = tmp_path / "long"
    script.write_bytes((COLOURED * 200).encode())
    result = run_process(
        ["cat", str(script)], env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, timeout=30, output_bytes=4_000
    )
    assert result.truncated and "bytes cut" in result.output
    assert ESC not in result.output and "adds two numbers" in result.output


def test_the_sandbox_hands_back_clean_output(tree):
    sandbox = load_backend("bwrap")(tree)
    (tree / "coloured.txt").write_bytes(COLOURED.encode())

    result = sandbox.run(["cat", "coloured.txt"], timeout=30)

    assert result.exit_code == 0
    assert result.output == CLEAN


def test_a_served_apps_log_is_shown_without_control_sequences(tmp_path):
    log = tmp_path / "app.log"
    log.write_bytes(f"{ESC}[32minfo{ESC}[39m listening on :8080\n{ESC}[31merror{ESC}[0m no database\n".encode())

    assert log_tail(log) == "info listening on :8080\nerror no database"


def test_a_served_app_that_crashes_in_colour_fails_with_clean_last_words(scratch_dir):
    work = scratch_dir("ansi-app-")
    (work / "app" / "data").mkdir(parents=True)
    (work / "app").chmod(0o755)
    (work / "app" / "data").chmod(0o755)
    command = r"printf '\033[31mboom:\033[0m no \033]8;;https://x\033\\database\033]8;;\033\\\n' >&2; exit 3"
    spec = AppSpec(app_dir=work / "app", data_dir=work / "data", command=command, port=8080)
    run_dir = scratch_dir("ansi-run-")
    try:
        with pytest.raises(AppFailed) as failed:
            start_app(spec, run_dir, seed=False)
    finally:
        stop_app(run_dir, timeout=0)

    assert "boom: no database" in failed.value.log_tail
    assert ESC not in failed.value.log_tail
