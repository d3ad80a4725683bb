"""cli: the toolkit every command line of the project is built from.

    from minillama.cli import ArgumentParser, add_debug_flag, add_engine_args, engine_config_from_args, run_cli

flags.py (the engine's and the sampler's flags, made from EngineConfig and SamplingParams, their
defaults read from them), checks.py (what a command line checks before any work: argparse types
with a floor, a writable output path) and errors.py (one line on stderr and an exit status for
every failure, never a traceback; ArgumentParser, --debug, run_cli), with output.py (stdout
during a command: a write that fails names it) and overrides.py (a flag the rest of the command
line leaves unread is refused); gc_heap.py tunes the garbage collector for a
process that serves or measures (tune_gc).
"""

from minillama.cli.checks import (
    check_encodes_text,
    check_output_path,
    int_at_least,
    number_above,
    number_at_least,
    path_text,
)
from minillama.cli.errors import ArgumentParser, add_debug_flag, printable_line, run_cli
from minillama.cli.flags import (
    add_engine_args,
    add_model_args,
    add_sampling_args,
    engine_config_from_args,
    sampling_params_from_args,
)
from minillama.cli.gc_heap import tune_gc
from minillama.cli.output import Output
from minillama.cli.overrides import ENGINE_UNREAD, SAMPLING_UNREAD, Unread, given, refuse_unread

__all__ = [
    "ArgumentParser", "Output", "add_debug_flag", "add_engine_args", "add_model_args", "add_sampling_args", "check_encodes_text",
    "check_output_path",
    "engine_config_from_args", "tune_gc", "int_at_least", "number_above", "number_at_least", "path_text", "printable_line",
    "ENGINE_UNREAD", "SAMPLING_UNREAD", "Unread", "given", "refuse_unread", "run_cli", "sampling_params_from_args",
]
