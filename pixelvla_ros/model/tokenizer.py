"""Text tokenizers behind one interface (the Hugging Face call convention).

`ByteWordTokenizer` works offline with no files: a fixed in-code word vocabulary (instruction words) with
byte fallback for anything else, so every string is encodable and the mapping never changes.
`load_tokenizer` returns it or an HF tokenizer loaded from a local folder; both are called as
    tok(texts, padding="max_length", truncation=True, max_length=L, return_tensors="pt")
      -> {"input_ids": (B, L) long, "attention_mask": (B, L) long}
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from pixelvla_ros.model.config import TokenizerConfig
from pixelvla_ros.model.hf_folder import PretrainedFolderError, check_tokenizer_folder

_SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
_WORDS = """
what should the robot do to refer a an of on in into onto at from with and or then it its this that
these those there here is are be up down left right top bottom front back middle center near far
next beside behind above below under over between inside outside pick place put move push pull
open close lift drop grasp grab take bring turn rotate slide knock stack unstack insert remove wipe
flip pour fold unfold press hold release reach go set stand lay hang red green blue yellow orange
purple pink black white gray grey brown small large big tiny long short cube block ball can cup
mug bowl plate spoon fork knife bottle jar box lid drawer door cabinet shelf table counter sink
stove microwave fridge cloth towel sponge basket tray pot pan object item thing one two three first
second third other another all each gripper point points line box mask masks scribble region
apple banana orange carrot eggplant corn pepper potato chip chips coke pepsi sprite water soda
can coke_can block toy marker pen book paper tissue rag brush keyboard mouse phone
""".split()
_TOKEN_RE = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")


class ByteWordTokenizer:
    """Word vocabulary + UTF-8 byte fallback; lower-cases its input."""

    NUM_SPECIAL = len(_SPECIALS)
    WORDS = list(dict.fromkeys(_WORDS))  # unique, order kept
    VOCAB_SIZE = NUM_SPECIAL + 256 + len(WORDS)

    pad_token_id, bos_token_id, eos_token_id, unk_token_id = 0, 1, 2, 3

    def __init__(self) -> None:
        self._word_id = {w: self.NUM_SPECIAL + 256 + i for i, w in enumerate(self.WORDS)}
        self._id_word = {i: w for w, i in self._word_id.items()}

    def __len__(self) -> int:
        return self.VOCAB_SIZE

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [self.bos_token_id] if add_special_tokens else []
        for piece in _TOKEN_RE.findall(text.lower()):
            if piece in self._word_id:
                ids.append(self._word_id[piece])
            else:
                ids.extend(self.NUM_SPECIAL + b for b in piece.encode("utf-8"))
        return ids

    def decode(self, ids: list[int]) -> str:
        words, buf = [], bytearray()
        for i in ids:
            if self.NUM_SPECIAL <= i < self.NUM_SPECIAL + 256:
                buf.append(i - self.NUM_SPECIAL)
                continue
            if buf:
                words.append(buf.decode("utf-8", errors="replace"))
                buf = bytearray()
            if i in self._id_word:
                words.append(self._id_word[i])
        if buf:
            words.append(buf.decode("utf-8", errors="replace"))
        return " ".join(words)

    def __call__(
        self,
        texts: str | list[str],
        padding: str | bool = "max_length",
        truncation: bool = True,
        max_length: int | None = None,
        return_tensors: str | None = "pt",
        add_special_tokens: bool = True,
    ) -> dict[str, Any]:
        if isinstance(texts, str):
            texts = [texts]
        seqs = [self.encode(t, add_special_tokens) for t in texts]
        if truncation and max_length is not None:
            seqs = [s[:max_length] for s in seqs]
        length = (
            max_length if padding == "max_length" and max_length else max((len(s) for s in seqs), default=0)
        )
        ids = [s + [self.pad_token_id] * (length - len(s)) for s in seqs]
        att = [[1] * len(s) + [0] * (length - len(s)) for s in seqs]
        if return_tensors == "pt":
            return {"input_ids": torch.tensor(ids, dtype=torch.long), "attention_mask": torch.tensor(att)}
        return {"input_ids": ids, "attention_mask": att}

    def save_pretrained(self, directory: str | Path) -> None:
        """Nothing to write: the vocabulary is in the code (kept for interface parity)."""


def load_tokenizer(cfg: TokenizerConfig, path_override: str | Path | None = None) -> Any:
    """The tokenizer the config names. HF tokenizers come from a local folder only (no network)."""
    if cfg.kind == "byte_word":
        return ByteWordTokenizer()
    path = Path(path_override or cfg.path or "")
    if not path.is_dir():
        raise FileNotFoundError(
            f"tokenizer folder {str(path)!r} does not exist (tokenizer kind 'hf' needs a "
            "local folder holding tokenizer files; nothing is downloaded)"
        )
    check_tokenizer_folder(path)
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        raise PretrainedFolderError(f"tokenizer folder {str(path)!r} cannot be loaded: {e}") from e
    if tok.pad_token_id is None:
        tok.pad_token = tok.unk_token if tok.unk_token is not None else tok.eos_token
    tok.padding_side = "right"
    return tok
