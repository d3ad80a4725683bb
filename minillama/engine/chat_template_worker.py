"""The child process that runs a model's chat template (the parent side is chat_template.py).

Started as `python -I chat_template_worker.py`: isolated mode, so neither the working folder
nor PYTHONPATH can put modules of their own in front of the ones it imports. It imports
transformers' template code, so the text it renders is exactly what
`tokenizer.apply_chat_template` renders, and nothing of minillama.

Protocol: one JSON object a line each way. It writes {"ready": true} once imported, then for
each request line {"template", "messages", "special_tokens"} it writes {"text": ...} or
{"error": "TypeName: message"}, until its stdin closes.

Two limits make a runaway template end here rather than in the engine's process:
- its address space is capped once the imports are done, so building a gigabyte string
  raises MemoryError, reported like any other failure of the template;
- before each render its CPU-time limit is set a few seconds ahead, so a template that never
  ends is killed by the kernel (SIGXCPU) even if the parent that would kill it is gone.
"""

import json
import resource
import sys

from transformers.utils.chat_template_utils import render_jinja_template

MEMORY_HEADROOM_BYTES = 1 << 30  # what a template may allocate beyond the imported modules
CPU_SECONDS_PER_RENDER = 10  # the kernel's backstop; the parent's own deadline is shorter
MAX_ERROR_CHARS = 500  # an exception's message may quote a huge value


def cap_memory() -> None:
    """Limit the address space to what the process maps now plus MEMORY_HEADROOM_BYTES."""
    with open("/proc/self/statm") as statm:
        mapped = int(statm.read().split()[0]) * resource.getpagesize()
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = mapped + MEMORY_HEADROOM_BYTES
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def allow_cpu_seconds(seconds: int) -> None:
    """Let the process use `seconds` more CPU time before the kernel ends it."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = int(usage.ru_utime + usage.ru_stime) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = used + seconds if hard == resource.RLIM_INFINITY else min(used + seconds, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def render(request: dict) -> dict:
    """One conversation through the template, with the generation prompt (the assistant's
    header) appended, as apply_chat_template(..., add_generation_prompt=True) does."""
    try:
        [text], _ = render_jinja_template(
            conversations=[request["messages"]], chat_template=request["template"],
            add_generation_prompt=True, **request["special_tokens"],
        )
    except Exception as exc:  # the template's own failure (MemoryError, RecursionError among them)
        return {"error": f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]}
    if not isinstance(text, str):
        return {"error": f"TypeError: the template rendered a {type(text).__name__}, not text"}
    return {"text": text}


def main() -> None:
    if sys.platform.startswith("linux"):  # /proc/self/statm is Linux's
        cap_memory()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        allow_cpu_seconds(CPU_SECONDS_PER_RENDER)
        print(json.dumps(render(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
