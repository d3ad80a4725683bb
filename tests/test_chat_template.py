"""The model's chat template runs in a child process with a deadline and capped memory
(minillama/engine/chat_template.py). A template that loops for ever, grows a huge value,
recurses, renders too much or raises is refused with InvalidRequestError within about the
deadline, and the engine keeps serving; a well-behaved template renders exactly what
transformers' apply_chat_template renders."""

from __future__ import annotations

import time

import pytest
from tiny_model import write_tiny_model

from minillama import LLM, EngineConfig, InvalidRequestError, SamplingParams
from minillama.engine import chat_template
from minillama.loader import load_tokenizer

# A template that uses what transformers gives templates beyond plain Jinja: the special
# tokens, namespace(), the tojson filter, loop controls, raise_exception and strftime_now.
RICH_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(count=0) %}"
    "{% for message in messages %}{% if message.role not in ['user', 'assistant'] %}"
    "{{ raise_exception('unknown role') }}{% endif %}{% set ns.count = ns.count + 1 %}"
    "<|{{ message.role }}|>{{ message.content | trim }}{{ message | tojson }}"
    "{% if loop.index > 5 %}{% break %}{% endif %}{% endfor %}"
    "{{ ns.count }}{{ strftime_now('%Y')[:0] }}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CONTENTS = ["Hello", "café 日本 🙂", "{{ 7 * 7 }} {% raw %}", "line\nbreak\t\"quotes\" <b>", ""]

# name -> (template, a fragment of the refusal). Each is a class of runaway, not one example.
HOSTILE = {
    "loops-for-ever": ("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
                       "ran past"),
    "grows-a-huge-string": ("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
                            "{% endfor %}{{ ns.s | length }}", "(MemoryError|ran past)"),  # whichever bound it meets first
    "renders-too-much": ("{{ 'x' * 40000000 }}", "rendered more than"),
    "recurses": ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "RecursionError"),
    "raises": ("{{ raise_exception('only system messages') }}", "TemplateError: only system messages"),
    "does-not-compile": ("{% if %}", "TemplateSyntaxError"),
    "type-error": ("{{ messages[0].content + 1 }}", "TypeError"),
    "escapes-the-sandbox": ("{{ ''.__class__.__mro__ }}", "SecurityError"),
    # Text the tokenizer cannot take: its TypeError was an internal error.
    "renders-a-lone-surrogate": ("{{ '\\udcff' }}{{ messages[0].content }}", "rendered text that is not valid UTF-8 "
                                 r"\(character 0 is U\+DCFF"),
    "renders-half-a-pair": ("{{ messages[0].content }}{{ '\\ud83d' }}", "character 5 is U\\+D83D"),
}


@pytest.fixture(scope="module")
def llm(tmp_path_factory) -> LLM:
    path = write_tiny_model(tmp_path_factory.mktemp("tiny-chat"))
    return LLM(path, EngineConfig(device="cpu", num_kv_blocks=32, block_size=4))


@pytest.mark.parametrize("content", CONTENTS)
@pytest.mark.parametrize("template", ["the model's", "rich"])
def test_renders_what_transformers_renders(llm, monkeypatch, template, content):
    tokenizer = llm.engine.tokenizer
    if template == "rich":
        monkeypatch.setattr(tokenizer, "chat_template", RICH_TEMPLATE)
    expected = tokenizer.apply_chat_template([{"role": "user", "content": content}],
                                             add_generation_prompt=True, tokenize=False)
    assert chat_template.render_chat_prompt(tokenizer, content) == expected


def test_the_embedded_models_template_renders_what_transformers_renders(embedded_dir):
    tokenizer = load_tokenizer(embedded_dir)
    message = [{"role": "user", "content": "What is the capital of France?"}]
    expected = tokenizer.apply_chat_template(message, add_generation_prompt=True, tokenize=False)
    assert chat_template.render_chat_prompt(tokenizer, message[0]["content"]) == expected


@pytest.mark.parametrize("template, refusal", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_template_is_refused_in_bounded_time_and_the_engine_serves_on(llm, monkeypatch, template,
                                                                                refusal):
    engine = llm.engine
    healthy = engine.add_request("Hello", SamplingParams(temperature=0, max_tokens=3))
    known = set(engine.sequences)
    monkeypatch.setattr(engine.tokenizer, "chat_template", template)
    started = time.monotonic()
    with pytest.raises(InvalidRequestError, match=f"this model's chat template .*{refusal}.*; run without chat"):
        engine.add_request("Hello", SamplingParams(max_tokens=2), chat=True)
    # Within the runner's own bounds: the render's, and a fresh child's imports (the last test
    # killed its child), which a loaded machine can make last many seconds.
    assert time.monotonic() - started < chat_template.RENDER_TIMEOUT_S + chat_template.STARTUP_TIMEOUT_S + 10
    assert set(engine.sequences) == known
    while engine.has_unfinished():
        engine.step()
    assert len(engine.sequences[healthy].output_token_ids) == 3
    monkeypatch.undo()  # the model's own template renders again, in a fresh child if it was killed
    engine.abort(engine.add_request("Hello", SamplingParams(max_tokens=2), chat=True))


def test_a_model_with_several_templates_and_no_default_is_refused(llm, monkeypatch):
    monkeypatch.setattr(llm.engine.tokenizer, "chat_template", {"tool_use": "{{ messages }}"})
    with pytest.raises(InvalidRequestError, match="cannot be chosen"):
        llm.engine.encode_prompt("Hello", chat=True)


def test_a_model_without_a_template_is_refused(llm, monkeypatch):
    monkeypatch.setattr(llm.engine.tokenizer, "chat_template", None)
    with pytest.raises(InvalidRequestError, match="has no chat template"):
        llm.engine.encode_prompt("Hello", chat=True)


def test_a_child_that_died_is_replaced(llm):
    runner = chat_template._runner
    llm.engine.encode_prompt("Hello", chat=True)
    runner._child.kill()
    runner._child.wait()
    assert llm.engine.encode_prompt("Hello", chat=True)


def test_a_child_whose_pipes_are_past_descriptor_1024_still_answers(llm):
    """A server holding a thousand connections gives the child's pipes descriptor numbers past
    1,024, which select() cannot watch: the runner polls instead."""
    import os
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200 and (hard == resource.RLIM_INFINITY or hard >= 1200):
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200 if hard == resource.RLIM_INFINITY else min(hard, 4096), hard))
    elif soft < 1200:
        pytest.skip("this machine allows fewer than 1,200 open files")
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        chat_template._runner.close()  # the next render starts a child, its pipes numbered past the filler
        assert llm.engine.encode_prompt("Hello", chat=True)
        assert chat_template._runner._child.stdout.fileno() > 1024
    finally:
        for fd in filler:
            os.close(fd)
