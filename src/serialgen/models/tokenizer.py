"""A CLIP tokenizer built from the caption vocabulary (no hub download).

The `tokenizers` library trains a byte-level BPE with CLIP's own pipeline (lower-casing,
CLIP's split pattern, `</w>` end-of-word suffix); the vocabulary always holds all 256 byte
symbols with and without the suffix, so any text encodes, unseen words as pieces. It is
saved in the standard layout (vocab.json, merges.txt, tokenizer.json) that
`CLIPTokenizer.from_pretrained(dir)` loads.
"""

from __future__ import annotations

from pathlib import Path

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _clip_pipeline():
    from tokenizers import Regex, normalizers, pre_tokenizers

    normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    return normalizer, pre


def build_tokenizer(captions, vocab_size: int = 1024, model_max_length: int = 64):
    """Train a CLIP BPE tokenizer on `captions`. -> transformers CLIPTokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tok.normalizer, tok.pre_tokenizer = _clip_pipeline()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[], initial_alphabet=alphabet,
                                  end_of_word_suffix="</w>", show_progress=False)
    tok.train_from_iterator(captions, trainer)
    learned = tok.get_vocab()
    merges = _merges(tok)
    # CLIP's layout: 256 byte symbols, the same with </w>, merged tokens, then the two specials
    vocab: dict[str, int] = {}
    for symbol in sorted(alphabet) + [a + "</w>" for a in sorted(alphabet)]:
        vocab.setdefault(symbol, len(vocab))
    for token, _ in sorted(learned.items(), key=lambda kv: kv[1]):
        vocab.setdefault(token, len(vocab))
    for special in (BOS, EOS):
        vocab.setdefault(special, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def _merges(tok) -> list[tuple[str, str]]:
    import json

    model = json.loads(tok.to_str())["model"]
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]


def save_tokenizer(tokenizer, out: str | Path) -> Path:
    """Save in the standard CLIP layout: vocab.json, merges.txt, tokenizer.json, configs."""
    import json

    out = Path(out)
    tokenizer.save_pretrained(out)
    if not (out / "vocab.json").exists() or not (out / "merges.txt").exists():
        data = json.loads((out / "tokenizer.json").read_text())["model"]
        (out / "vocab.json").write_text(json.dumps(data["vocab"], ensure_ascii=False))
        merges = [m if isinstance(m, str) else " ".join(m) for m in data["merges"]]
        (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return out
