"""Random-weight causal LMs and an offline tokenizer for the trainer benchmark.

Nothing downloads. The tokenizer is a byte-level BPE trained with
``tokenizers`` on synthetic pseudo-word text, wrapped as a
``PreTrainedTokenizerFast`` with a ChatML chat template, ``<|im_end|>`` as EOS,
``<|endoftext|>`` as padding, and left padding. The models are Qwen2
(Qwen2.5-like: grouped-query attention, q/k/v biases, tied embeddings) with
random weights in float32, saved with ``save_pretrained`` under
``benchmarks/.models/<name>`` (git-ignored) so that every trainer loads the
very same folder.

Why completions run to full length: the vocabulary has 8,192 tokens and the
weights are drawn with the usual small init (std 0.02), so the next-token
distribution is close to uniform and EOS comes up with probability about
1/8,192 per token: a 32-token completion ends early about 0.4% of the time.
The benchmark reports the mean completion length of every trainer anyway.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS_DIR = HERE / ".models"
VOCAB = 8192
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ENGLISH = [
    "the", "a", "an", "is", "are", "was", "be", "to", "of", "and", "in", "that", "it", "for", "on", "with", "as",
    "you", "we", "they", "this", "at", "by", "from", "or", "your", "our", "can", "will", "please", "thank",
    "sorry", "help", "answer", "question", "account", "card", "refund", "order", "customer", "reply", "short",
    "polite", "explain", "why", "how", "what", "when", "where", "number", "two", "three", "four", "five", "add",
    "sum", "total", "price", "cost", "day", "week", "month", "year", "good", "bad", "yes", "no"
]

# Bump when anything below changes the saved files, so stale folders are rebuilt.
BUILD_VERSION = 1

SPECS = {
    # ~21M parameters: hidden 512, 6 layers, 8 heads / 2 KV heads, MLP 1408.
    "qwen2-21m": {"hidden_size": 512, "num_hidden_layers": 6, "num_attention_heads": 8, "num_key_value_heads": 2,
                  "intermediate_size": 1408},
    # ~0.5B parameters: Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14 heads, 2 KV heads) with the MLP widened
    # from 4,864 to 6,912 to make up for the 8,192-token vocabulary (Qwen2.5's has 151,936).
    "qwen2-0.5b": {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
                   "intermediate_size": 6912},
}


def _pseudo_words(rng: random.Random, n: int) -> list[str]:
    onsets = [
        "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "br", "ch",
        "cr", "dr", "fl", "gr", "kl", "pl", "pr", "sh", "st", "th", "tr"
    ]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "ee", "oo", "ou"]
    codas = ["", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ng"]
    return ["".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(rng.randint(1, 4)))
            for _ in range(n)]


def make_tokenizer():
    """The benchmark tokenizer (deterministic: seeded corpus, fixed vocabulary size)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    words = _pseudo_words(rng, 30_000) + ENGLISH * 50
    corpus = [" ".join(rng.choice(words) for _ in range(30)) for _ in range(12_000)]
    corpus += ["<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"] * 20
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  padding_side="left")
    tok.chat_template = CHATML
    return tok


def count_parameters(model) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def build_model(name: str, *, force: bool = False, log=print) -> dict:
    """Build ``name`` (a key of ``SPECS``) under ``.models/`` if missing; returns its info dict."""
    folder = MODELS_DIR / name
    info_path = folder / "bench_info.json"
    if not force and info_path.exists():
        info = json.loads(info_path.read_text())
        if info.get("build_version") == BUILD_VERSION:
            return info
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    log(f"[models] building {name} in {folder} ...")
    tok = make_tokenizer()
    spec = SPECS[name]
    config = Qwen2Config(
        vocab_size=len(tok), max_position_embeddings=1024, tie_word_embeddings=True, initializer_range=0.02,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None, dtype="float32", **spec,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).float().eval()
    # Plain sampling defaults for a trainer that does not pass its own: no top-k / top-p cut.
    model.generation_config = GenerationConfig(
        do_sample=True, temperature=0.8, top_k=0, top_p=1.0, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    info = {"name": name, "path": str(folder), "parameters": count_parameters(model), "vocab_size": len(tok),
            "architecture": "Qwen2ForCausalLM", "dtype": "float32", "tied_embeddings": True, **spec,
            "build_version": BUILD_VERSION}
    info_path.write_text(json.dumps(info, indent=2))
    log(f"[models] {name}: {info['parameters'] / 1e6:.1f}M parameters, vocab {len(tok)}")
    return info
