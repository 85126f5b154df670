"""A tiny, randomly initialised Hugging Face model folder with a real (trained) tokenizer.

It loads through the same path as a user's model (``--model DIR``: config.json, safetensors weights,
tokenizer.json), in well under a second, so CLI tests exercise real loading end to end.
"""

from __future__ import annotations

from pathlib import Path

_TEXTS_FOR_VOCAB = (
    "The fitness app requested access to contacts. The team shared the spreadsheet with the vendor. "
    "A new router was installed in the office and the default password was kept for convenience. "
    "Please summarise the quarterly report and list three action items for the meeting on Friday. "
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:!?'\"()-_/@#%&*+=<>[]{}|\\~`$^"
)


def build_tiny_hf(path: str | Path, family: str = "llama", seed: int = 0, layers: int = 3) -> Path:
    """Write a tiny ``family`` model (hidden 32, ``layers`` blocks) with a BPE tokenizer to ``path``."""
    import torch
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([_TEXTS_FOR_VOCAB] * 4, trainer)
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                      pad_token="<pad>")
    fast.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
                          "{% if add_generation_prompt %}<s>assistant:{% endif %}")
    fast.save_pretrained(path)
    common = dict(vocab_size=len(fast), hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
                  num_attention_heads=4, max_position_embeddings=256, bos_token_id=fast.bos_token_id,
                  eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    cfg = {"llama": lambda: tf.LlamaConfig(**common, num_key_value_heads=2),
           "gpt2": lambda: tf.GPT2Config(vocab_size=len(fast), n_embd=32, n_layer=layers, n_head=4,
                                         n_positions=256, n_inner=48, bos_token_id=fast.bos_token_id,
                                         eos_token_id=fast.eos_token_id)}[family]()
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(path)
    return path
