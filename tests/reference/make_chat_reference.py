#!/usr/bin/env python3
"""Chat-template reference for qft's tests: renders conversations with
transformers' own apply_chat_template (its Jinja environment, jinja2 3.1.6).

Usage: build/pyenv/bin/python tests/reference/make_chat_reference.py OUTDIR
Writes
- OUTDIR/chat_templates.json: qft's built-in templates (as Jinja), a list of
  {name, source, bos, eos, kind, cases: [{messages, add_generation_prompt, expected}]};
- OUTDIR/chat_template_renders.json: every template of tests/data/chat_templates
  (real templates of current model families) on a fixed set of conversations, a
  list of {name, source, special_tokens, extra_kwargs, cases: [{conversation,
  messages, add_generation_prompt, expected | error}]}.
"""
import glob
import json
import os
import sys

from jinja2.exceptions import TemplateError

from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast
from transformers.utils.chat_template_utils import _compile_jinja_template

CHATML_WITH_DEFAULT = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nDEFAULT_SYSTEM<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

TEMPLATES = [
    # SmolLM2-Instruct and Qwen2-Instruct: ChatML with a default system prompt.
    ("smollm2", "chatml", CHATML_WITH_DEFAULT.replace("DEFAULT_SYSTEM", "You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
     "<|im_start|>", "<|im_end|>"),
    ("qwen2", "chatml", CHATML_WITH_DEFAULT.replace("DEFAULT_SYSTEM", "You are a helpful assistant."), "<|endoftext|>", "<|im_end|>"),
    # ChatML without a default system prompt.
    ("chatml", "chatml",
     "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
     "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}", "<s>", "</s>"),
    # Meta's Llama-2-chat template.
    ("llama2", "llama2",
     "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
     "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
     "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
     "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
     "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
     "{% else %}{% set content = message['content'] %}{% endif %}"
     "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
     "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}",
     "<s>", "</s>"),
    # Meta's Llama-3-Instruct template.
    ("llama3", "llama3",
     "{% set loop_messages = messages %}{% for message in loop_messages %}"
     "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}"
     "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
     "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
     "<|begin_of_text|>", "<|eot_id|>"),
    # The Stanford Alpaca prompt, multi-turn: qft's definition, as Jinja.
    ("alpaca", "alpaca",
     "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\\n\\n' }}{% set loop_messages = messages[1:] %}"
     "{% else %}{{ 'Below is an instruction that describes a task. Write a response that appropriately completes the request.\\n\\n' }}"
     "{% set loop_messages = messages %}{% endif %}{% for message in loop_messages %}"
     "{% if message['role'] == 'user' %}{{ '### Instruction:\\n' + message['content'] + '\\n\\n### Response:\\n' }}"
     "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + '\\n\\n' }}{% endif %}{% endfor %}",
     "<s>", "</s>"),
]

CONVERSATIONS = [
    ([{"role": "user", "content": "What is 2 + 2?"}], True),
    ([{"role": "system", "content": "You answer tersely."}, {"role": "user", "content": "Name a prime."},
      {"role": "assistant", "content": "7"}], False),
    ([{"role": "user", "content": "  Héllo, wörld! 你好 🙂  "}, {"role": "assistant", "content": "\nHi there.\n"},
      {"role": "user", "content": "Write code:\n\tdef f(x):\n\t\treturn x*2"}], True),
    ([{"role": "system", "content": "Be kind."}, {"role": "user", "content": "A"}, {"role": "assistant", "content": "B"},
      {"role": "user", "content": "C"}, {"role": "assistant", "content": "D"}], False),
]


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    records = []
    for name, kind, source, bos, eos in TEMPLATES:
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE()), bos_token=bos, eos_token=eos)
        cases = []
        for messages, add_generation_prompt in CONVERSATIONS:
            expected = tokenizer.apply_chat_template(messages, chat_template=source, tokenize=False,
                                                     add_generation_prompt=add_generation_prompt)
            cases.append({"messages": messages, "add_generation_prompt": add_generation_prompt, "expected": expected})
        records.append({"name": name, "kind": kind, "source": source, "bos": bos, "eos": eos, "cases": cases})
    with open(os.path.join(out, "chat_templates.json"), "w") as f:
        json.dump(records, f, ensure_ascii=False, indent=1)
    write_real_template_renders(out)
    write_snippets(out)


# Conversations for the real templates: with and without a system turn, one and
# several turns, ending on the user or the assistant, non-ASCII and surrounding
# whitespace, an empty reply.
REAL_CONVERSATIONS = {
    "single": [{"role": "user", "content": "What is 2 + 2?"}],
    "system": [{"role": "system", "content": "You are a helpful assistant."},
               {"role": "user", "content": "Hello, who are you?"},
               {"role": "assistant", "content": "I am an AI assistant. How can I help you today?"},
               {"role": "user", "content": "What is 2 + 2?"}],
    "nosystem": [{"role": "user", "content": "Hello, who are you?"},
                 {"role": "assistant", "content": "I am an AI assistant. How can I help you today?"},
                 {"role": "user", "content": "What is 2 + 2?"}],
    "ends_with_assistant": [{"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "7"},
                            {"role": "user", "content": "Another?"}, {"role": "assistant", "content": "Eleven, 11."}],
    "unicode": [{"role": "system", "content": "  Réponds en français. 日本語も可。 "},
                {"role": "user", "content": "  Héllo, wörld! 你好 🙂\n\n"},
                {"role": "assistant", "content": "\nBonjour ! «ça va ?»\n"},
                {"role": "user", "content": "Write code:\n\tdef f(x):\n\t\treturn x*2"}],
    "long": [{"role": "user", "content": "A"}, {"role": "assistant", "content": "B"},
             {"role": "user", "content": "C"}, {"role": "assistant", "content": ""},
             {"role": "user", "content": "E 'quoted' \"double\""}, {"role": "assistant", "content": "F {{ not jinja }}"}],
}

# Templates that read the date: a fixed one, so the render is reproducible.
EXTRA_KWARGS = {"llama-3.2-instruct": {"date_string": "26 Jul 2024"}}


def write_real_template_renders(out):
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "chat_templates")
    records = []
    for path in sorted(glob.glob(os.path.join(folder, "*.jinja"))):
        name = os.path.basename(path)[:-len(".jinja")]
        with open(path, encoding="utf-8") as f:
            source = f.read()
        with open(path[:-len(".jinja")] + ".json", encoding="utf-8") as f:
            info = json.load(f)
        tokens = {key: info[key] for key in ("bos_token", "eos_token", "unk_token", "pad_token") if key in info}
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE()), **tokens)
        extra = EXTRA_KWARGS.get(name, {})
        cases = []
        for conversation, messages in REAL_CONVERSATIONS.items():
            for add_generation_prompt in (True, False):
                case = {"conversation": conversation, "messages": messages, "add_generation_prompt": add_generation_prompt}
                try:
                    case["expected"] = tokenizer.apply_chat_template(
                        messages, chat_template=source, tokenize=False, add_generation_prompt=add_generation_prompt,
                        **extra)
                except TemplateError as error:
                    case["error"] = str(error)
                cases.append(case)
        records.append({"name": name, "source": source, "special_tokens": dict(tokenizer.special_tokens_map),
                        "extra_kwargs": extra, "cases": cases})
    with open(os.path.join(out, "chat_template_renders.json"), "w") as f:
        json.dump(records, f, ensure_ascii=False, indent=1)



# Jinja features one at a time, rendered in transformers' environment
# (trim_blocks, lstrip_blocks, loop controls, its tojson): the engine's
# semantics against jinja2 itself.
SNIPPETS = [
    "{{ 'a' ~ 1 ~ none ~ true }}|{{ 1 + 2 * 3 - 4 / 2 }}|{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 2 ** 10 }}",
    "{{ 0.1 + 0.2 }} {{ 1e16 }} {{ 1.5e-5 }} {{ 3.0 }} {{ 10 / 4 }} {{ 1e100 }}",
    "{{ [1, 'two', none, true, 2.5] }} {{ {'k': 'v', 'n': [1]} }} {{ \"it's\" }}",
    "{{ x | tojson }}\n{{ x | tojson(indent=2) }}\n{{ x | tojson(sort_keys=true) }}",
    "{{ 'é\"\\\\\n\t' | tojson }} {{ 'é🙂' | tojson(ensure_ascii=true) }} {{ [] | tojson }} {{ {} | tojson(indent=4) }}",
    "{% for m in xs %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex }} {% endfor %}",
    "{% for m in xs if m is odd %}{{ m }}{{ loop.cycle('a', 'b') }}{% else %}none{% endfor %}|{% for m in [] %}x{% else %}empty{% endfor %}",
    "{% for m in xs %}{% if m == 3 %}{% break %}{% endif %}{% if m == 1 %}{% continue %}{% endif %}{{ m }}{% endfor %}",
    "{% set a = 1 %}{% for m in xs %}{% set a = m %}{{ a }}{% endfor %}{{ a }}{% if true %}{% set a = 9 %}{% endif %}{{ a }}",
    "{% set ns = namespace(total=0, seen=[]) %}{% for m in xs %}{% set ns.total = ns.total + m %}{% endfor %}{{ ns.total }}",
    "{{ s[1:] }}|{{ s[::-1] }}|{{ s[-2] }}|{{ s[1:4:2] }}|{{ xs[1:] }}|{{ xs[::-1] }}|{{ xs[-1] }}|{{ xs[10] }}|{{ s[0] }}",
    "{{ s | length }} {{ xs | length }} {{ d | length }} {{ s | upper }} {{ s | lower }} {{ s | title }} {{ s | capitalize }}",
    "[{{ '  pad\t\n' | trim }}] [{{ '\u3000x\u00a0' | trim }}] [{{ 'xxaxx' | trim('x') }}] [{{ ' a '.strip() }}{{ ' a '.lstrip() }}|{{ ' a '.rstrip() }}]",
    "{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a b c'.split(' ', 1) }} {{ 'x</think>y'.split('</think>')[-1] }}",
    "{{ s.startswith('Hé') }} {{ s.endswith(('x', 'lo')) }} {{ s.replace('l', 'L') }} {{ s.find('l') }} {{ 'abab'.count('ab') }}",
    "{{ d.items() | list }} {{ d | items | list }} {{ d.keys() | list }} {{ d.values() | list }} {{ d.get('a') }} {{ d.get('zz', 'no') }}",
    "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %} {% for k, v in d | dictsort %}{{ k }}{% endfor %}",
    "{{ xs | join(', ') }} {{ xs | first }} {{ xs | last }} {{ xs | reverse | list }} {{ xs | sum }} {{ xs | max }} {{ xs | min }}",
    "{{ names | reject('equalto', 'b') | join(',') }} {{ names | select('ne', 'a') | list }} {{ xs | select('odd') | list }}",
    "{{ people | selectattr('role', 'equalto', 'user') | map(attribute='name') | join('+') }} {{ people | map(attribute='role') | unique | list }}",
    "{{ undefined_thing | default('dflt') }} {{ '' | default('e', true) }} {{ none | default('n') }} {{ 3 | string }} {{ '42' | int + 1 }} {{ '2.5' | float }}",
    "{{ x is defined }} {{ nope is defined }} {{ nope is undefined }} {{ none is none }} {{ s is string }} {{ d is mapping }} {{ xs is iterable }} {{ s is iterable }} {{ 3 is number }} {{ xs is sequence }}",
    "{{ 'b' in names }} {{ 'z' not in names }} {{ 'a' in d }} {{ 'ell' in s }} {{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }}",
    "{{ 'yes' if xs else 'no' }} {{ 'yes' if [] else 'no' }} {{ [] or 'fallback' }} {{ 'x' and 'y' }} {{ none or 0 or '' }}|{{ 'only' if false }}|",
    "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Ann') }} {{ greet('Bob', punct='?') }}",
    "{% set block %}inside {{ s }}{% endset %}[{{ block }}] {{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ dict(a=1) }}",
    "  {% if true %}\n    kept\n  {% endif %}\n  {{ 'var' }}  \n{# comment #}\nafter\n{%- if true -%}  \n  tight  \n{%- endif %}end",
    "{%+ if true %}plus{% endif +%}\n{% raw %}{{ not rendered }}{% endraw %}\n{{- '  ' -}}  x  {{- ' ' }}\n",
    "{{ '%s' }} {{ \"\\u00e9\\x41\" }} {{ 'a' 'b' }} {{ 'line\\nbreak' }} {{ 'tab\\tx' | length }}",
    "{{ people[0].name }} {{ people[1]['role'] }} {{ people[5] is defined }} {{ d.a }} {{ d['b'] }} {{ xs.0 }}",
    "{{ 'abc' * 2 }} {{ [1] * 3 }} {{ 'é' | length }} {{ '🙂x'[0] }} {{ '  x' | indent(2, true) }} {{ 'a\nb' | indent(2) }}",
]

SNIPPET_CONTEXT = {"xs": [1, 2, 3, 4], "s": "Héllo", "d": {"b": 2, "a": 1}, "names": ["a", "b", "c", "b"],
                   "x": {"name": "f", "args": [1, 2.5, None, True, "ü"], "nested": {"z": [], "y": {}}},
                   "people": [{"name": "Ann", "role": "user"}, {"name": "Bot", "role": "assistant"},
                              {"name": "Cy", "role": "user"}]}


def write_snippets(out):
    records = []
    for snippet in SNIPPETS:
        records.append({"template": snippet, "context": SNIPPET_CONTEXT,
                        "expected": _compile_jinja_template(snippet).render(**SNIPPET_CONTEXT)})
    with open(os.path.join(out, "jinja_snippets.json"), "w") as f:
        json.dump(records, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
