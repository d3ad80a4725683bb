"""Build and load the engine's C kernels for the CPU (skinny_linear.c, cpu_ops.c, cpu_paged.c).

Each source is compiled on first use with the machine's C compiler (cc, or $CC) for this very
CPU (-march=native), about a second, and kept in the cache (minillama/build_cache.py) under a name
that hashes the source, the flags, the compiler and the CPU's features. Without a compiler, or
when compiling fails, CLibrary.available() says False after a warning, and the caller keeps to
PyTorch: same results, slower.

Why C and not more PyTorch ops: in a CPU decode step the weights stream through the caches
once, and every small PyTorch op after that pays for reloading what it touches, several times
its cost alone (docs/perf-notes.md, "CPU"): one call that does a layer's whole piece of work
beats a chain of small ops.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

from minillama.build_cache import cache_folder, cache_root
from minillama.ops.cpu.bounded_run import run_bounded

# -fopenmp: the C code's `omp parallel for` binds to the OpenMP runtime already in the process
# (torch's libgomp), so the kernels run on torch's threads, torch.set_num_threads included.
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")
# A kernel compiles in about a second (a few on a loaded machine); a compiler still running after
# this is stuck (a $CC that waits on something), and is killed (bounded_run.py).
COMPILE_SECONDS = 60.0


class CLibrary:
    """A C source's functions, built and loaded on first use:

        KERNELS = CLibrary(SOURCE, skinny_linear=([c_void_p] * 3 + [c_int] * 3, c_int))
        KERNELS.available()          # builds it if needed; False (after a warning) if it cannot
        KERNELS.get().skinny_linear(...)

    functions: name -> (ctypes argument types, ctypes result type or None)."""

    def __init__(self, source: Path, **functions: tuple[list[Any], Any]):
        self.source = source
        self.functions = functions
        self._library: ctypes.CDLL | None = None
        self._tried = False

    def get(self) -> ctypes.CDLL | None:
        if not self._tried:
            self._tried = True
            self._library = _load(self.source)
            for name, (argtypes, restype) in self.functions.items() if self._library is not None else ():
                function = getattr(self._library, name)
                function.argtypes, function.restype = argtypes, restype
        return self._library

    def available(self) -> bool:
        return self.get() is not None

    def forget(self) -> None:
        """Load again on the next use (for tests that change the compiler)."""
        self._library, self._tried = None, False


def _load(source: Path) -> ctypes.CDLL | None:
    """The compiled `source` (from the cache, or built now), or None after a warning."""
    compiler = _compiler()
    if compiler is None:
        return None
    try:
        path = _build_path(source, compiler)  # a cache folder that cannot be named is an OSError too
        if not path.exists():
            _compile(compiler, source, path)
    except (OSError, subprocess.CalledProcessError) as error:
        details = getattr(error, "stderr", "") or str(error)
        warnings.warn(f"compiling {source.name} failed, the CPU path uses PyTorch ops: {details.strip()[-500:]}",
                      stacklevel=3)
        return None
    return ctypes.CDLL(str(path))


@functools.cache
def _compiler() -> str | None:
    """The C compiler's path; None, after one warning for all the kernels, when there is none."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        warnings.warn("no C compiler (cc, or $CC) found: the CPU kernels are not built, the CPU path uses PyTorch "
                      "ops (slower)", stacklevel=4)
    return compiler


def _build_path(source: Path, compiler: str) -> Path:
    """One build per source, flags, compiler and CPU: -march=native code may not run elsewhere."""
    key = hashlib.sha256()
    for part in (source.read_bytes(), " ".join(FLAGS).encode(), compiler.encode(), _cpu_features().encode()):
        key.update(part)
    return cache_root() / "kernels" / f"{source.stem}-{key.hexdigest()[:16]}.so"


def _cpu_features() -> str:
    """The CPU's model and instruction-set flags (Linux), else what platform knows of it."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
    return "\n".join(sorted({line for line in lines if line.startswith(("model name", "flags", "Features"))}))


def _compile(compiler: str, source: Path, path: Path) -> None:
    """Compile into a temporary file beside `path`, then rename: processes that build at the
    same time never load a half-written library."""
    cache_folder(path.parent)  # a CacheFolderError, an OSError, names MINILLAMA_CACHE in the warning
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        built = Path(scratch) / path.name
        run_bounded([compiler, *FLAGS, str(source), "-o", str(built)], COMPILE_SECONDS)
        os.replace(built, path)
