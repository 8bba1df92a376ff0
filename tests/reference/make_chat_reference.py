#!/usr/bin/env python3
"""Chat-template reference for qft's tests: renders conversations with the
real Jinja templates through transformers' own apply_chat_template.

Usage: build/pyenv/bin/python tests/reference/make_chat_reference.py OUTDIR
Writes OUTDIR/chat_templates.json: a list of {name, source, bos, eos, kind,
cases: [{messages, add_generation_prompt, expected}]}.
"""
import json
import os
import sys

from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

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


if __name__ == "__main__":
    main()
