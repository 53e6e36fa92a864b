#!/usr/bin/env python3
"""Writes an OpenVINO tokenizer model and its reference outputs for tests/vla_chunk.rs.

Usage: ov_tokenizer_peer.py OUT_DIR TEXT...

Builds a small WordPiece tokenizer offline with the `tokenizers` package, wraps it as a
transformers fast tokenizer, converts it with `openvino_tokenizers.convert_tokenizer` to
OUT_DIR/tokenizer.xml (+ .bin), runs it with OpenVINO's Python runtime on each TEXT and
prints ``RESULT [[input_ids, attention_mask], ...]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import openvino as ov
from openvino_tokenizers import convert_tokenizer
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast


def main() -> None:
    out = Path(sys.argv[1])
    texts = sys.argv[2:]
    t = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    t.normalizer = normalizers.NFC()
    t.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    corpus = ["Task: pick up the cube, State: 1 2 3 255;\nAction: ", "stack the block on the bowl"]
    t.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    t.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok = PreTrainedTokenizerFast(tokenizer_object=t, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]")
    ov.save_model(convert_tokenizer(tok, with_detokenizer=False, max_length=32), str(out / "tokenizer.xml"))
    compiled = ov.Core().compile_model(str(out / "tokenizer.xml"), "CPU")
    result = []
    for text in texts:
        o = {k.get_any_name(): v for k, v in compiled([text]).items()}
        result.append([o["input_ids"][0].tolist(), o["attention_mask"][0].tolist()])
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
