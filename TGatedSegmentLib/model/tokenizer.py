"""CLIP tokenizer loading, a compact offline tokenizer, and prompt batching.

Checkpoint folders carry their tokenizer files so that they work with no network. Where the real
CLIP vocabulary is not available (tests, the offline demo) :func:`compact_clip_tokenizer` builds a
byte-level BPE tokenizer of the same class whose merges cover a given word list; any other text
still tokenizes, byte by byte, so no prompt is ever unknown. Special tokens keep CLIP's ids
(49406/49407), which is what CLIPSeg's text model pools on.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CheckpointError

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
CLIP_BOS_ID, CLIP_EOS_ID = 49406, 49407
MAX_TOKENS = 77


def load_tokenizer(source: str | Path):
    """A tokenizer from a folder or hub id, or a :class:`CheckpointError` that says what to pass.

    A folder with a plain CLIP ``tokenizer.json`` (every checkpoint this package writes) gets
    :class:`JsonClipTokenizer`: the same ids, without importing transformers' tokenizer classes;
    anything else (a hub id, ``vocab.json`` + ``merges.txt`` only, another tokenizer class) is
    loaded by transformers' ``AutoTokenizer``.
    """
    tokenizer = JsonClipTokenizer.from_folder(source)
    if tokenizer is not None:
        return tokenizer
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(source))
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(
            f"cannot load a tokenizer from '{source}' ({str(exc).splitlines()[0][:200]})",
            "Pass --tokenizer with a folder holding the CLIP tokenizer files (vocab.json and merges.txt, "
            "or tokenizer.json), or a hub id reachable from this machine.",
        ) from None


class JsonClipTokenizer:
    """A folder's CLIP tokenizer (``tokenizer.json``) run by the ``tokenizers`` library directly.

    transformers' ``CLIPTokenizer`` runs this same ``tokenizer.json`` through the same library, behind
    classes whose import costs about a second (issue 12). This class offers what the package calls
    (``tokenizer(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")``,
    ``eos_token_id``, ``get_vocab``, ``save_pretrained``), with transformers' ids and masks
    (``Testing/test_tokenizer_json.py``). It is not a copy of transformers' code: the tokenizer itself
    is the ``tokenizers`` object, as in transformers.
    """

    FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")

    def __init__(self, backend, eos_token: str, pad_token: str, folder: Path):
        self._backend = backend
        self._folder = folder
        self.eos_token_id = backend.token_to_id(eos_token)
        self.pad_token_id = backend.token_to_id(pad_token)
        backend.no_truncation()
        backend.no_padding()

    @classmethod
    def from_folder(cls, folder: str | Path) -> JsonClipTokenizer | None:
        """The folder's tokenizer, or None where it is not a plain CLIP one (transformers then loads it)."""
        from ..io.jsonfile import read_json

        folder = Path(folder)
        config = read_json(folder / "tokenizer_config.json")  # None: no such file, or not JSON
        if not isinstance(config, dict) or not (folder / "tokenizer.json").is_file():
            return None
        eos, pad = (_token_text(config.get(name)) for name in ("eos_token", "pad_token"))
        if (
            config.get("tokenizer_class") not in ("CLIPTokenizer", "CLIPTokenizerFast")
            or not isinstance(eos, str)
            or not isinstance(pad, str)
        ):
            return None
        from tokenizers import Tokenizer

        try:
            backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception:  # tokenizers raises its own exception type for a file it cannot parse
            return None
        if backend.token_to_id(eos) is None or backend.token_to_id(pad) is None:
            return None
        return cls(backend, eos, pad, folder)

    def get_vocab(self) -> dict[str, int]:
        return self._backend.get_vocab(with_added_tokens=True)

    def save_pretrained(self, folder: str | Path) -> None:
        """Copy the tokenizer files this tokenizer was read from into ``folder`` (a checkpoint being saved)."""
        import shutil

        for name in self.FILES:
            if (self._folder / name).is_file():
                shutil.copyfile(self._folder / name, Path(folder) / name)

    def __call__(
        self,
        texts: str | list[str],
        padding: bool = False,
        truncation: bool = False,
        max_length: int = MAX_TOKENS,
        return_tensors: str | None = None,
    ) -> dict:
        """As transformers' tokenizers: ``tokenizer("liver")`` gives lists of ids (flat for one text),
        ``tokenizer(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")`` gives
        (N, T) PyTorch tensors."""
        if return_tensors not in (None, "pt"):
            raise ValueError("this tokenizer returns Python lists or PyTorch tensors ('pt') only")
        single = isinstance(texts, str)
        if truncation:
            self._backend.enable_truncation(max_length)
        else:
            self._backend.no_truncation()
        encodings = self._backend.encode_batch([texts] if single else list(texts))
        longest = max(len(e.ids) for e in encodings)
        width = longest if padding else None
        ids = [e.ids + [self.pad_token_id] * ((width or len(e.ids)) - len(e.ids)) for e in encodings]
        mask = [[1] * len(e.ids) + [0] * ((width or len(e.ids)) - len(e.ids)) for e in encodings]
        if return_tensors is None:
            return {"input_ids": ids[0] if single else ids, "attention_mask": mask[0] if single else mask}
        if len({len(row) for row in ids}) > 1:
            raise ValueError("prompts of different lengths need padding=True to make one tensor")
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "attention_mask": torch.tensor(mask, dtype=torch.long),
        }


def _token_text(value):
    """A special token as ``tokenizer_config.json`` stores it: a string, or an AddedToken dict (older saves)."""
    return value.get("content") if isinstance(value, dict) else value


def compact_clip_tokenizer(words: list[str] | tuple[str, ...] = ()):
    """A CLIP-class BPE tokenizer with byte-level symbols plus merges that spell ``words``."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    merges: list[tuple[str, str]] = []
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    for text in sorted({w.lower() for phrase in words for w in phrase.split()}):
        for piece, _ in byte_level.pre_tokenize_str(text):
            symbols = list(piece[:-1]) + [piece[-1] + "</w>"]
            while len(symbols) > 1:  # left-to-right merges: one new symbol per step
                pair = (symbols[0], symbols[1])
                if pair not in merges:
                    merges.append(pair)
                vocab.setdefault(pair[0] + pair[1], len(vocab))
                symbols = [pair[0] + pair[1]] + symbols[2:]
    vocab[BOS], vocab[EOS] = CLIP_BOS_ID, CLIP_EOS_ID
    # transformers annotates merges as list[str]; its BPE takes (left, right) pairs, as given here
    return CLIPTokenizer(vocab=vocab, merges=merges)  # type: ignore[arg-type]


def check_tokenizer(tokenizer, clipseg_config) -> None:
    """The text model pools on the EOS token: ids must agree, and fit the embedding table."""
    text = clipseg_config.text_config
    eos = tokenizer.eos_token_id
    if eos != text.eos_token_id:
        raise CheckpointError(
            f"the tokenizer's end-of-text id ({eos}) differs from the text model's eos_token_id ({text.eos_token_id})",
            "Use the CLIP tokenizer that belongs to this CLIPSeg model.",
        )
    if max(tokenizer.get_vocab().values()) >= text.vocab_size:
        raise CheckpointError(
            f"the tokenizer has ids up to {max(tokenizer.get_vocab().values())}, more than the text model's "
            f"vocabulary of {text.vocab_size}",
            "Use the CLIP tokenizer that belongs to this CLIPSeg model.",
        )


def tokenize(tokenizer, prompts: list[str], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts -> (input_ids, attention_mask), padded to the longest, at most 77 tokens.

    Padding after EOS does not change CLIP's causal, EOS-pooled embedding, so this equals the
    authors' ``padding="max_length"`` at a fraction of the cost.
    """
    batch = tokenizer(list(prompts), padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    return batch["input_ids"].to(device), batch["attention_mask"].to(device)
