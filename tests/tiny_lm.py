"""A tiny causal LM and tokenizer built offline, for trainer tests.

A byte-level BPE trained with ``tokenizers`` on synthetic text, wrapped as a
``PreTrainedTokenizerFast`` with a ChatML template and left padding, and a
random 2-layer Llama (tied embeddings, ~30k parameters). Nothing downloads.
"""

from __future__ import annotations

import random

WORDS = (
    "the a cat dog yes no good bad answer is polite thank you sorry please account card refund we will help "
    "one two three four five six seven eight nine ten ok sure right wrong hello bye"
).split()
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tokenizer(vocab_size: int = 320):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(24)) for _ in range(600)]
    corpus += ["<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"] * 20
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  padding_side="left")
    tok.chat_template = CHATML
    return tok


def make_model(tokenizer, *, seed: int = 0, hidden: int = 32, layers: int = 2, init_range: float = 0.3):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
        # A wide init gives the logits a real dynamic range, so a LoRA on attention can move the
        # output distribution (with the default 0.02 the tied logits are nearly uniform).
        initializer_range=init_range,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model
