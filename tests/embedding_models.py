"""A sentence-transformers model as users have one on disk, made in the test (nothing downloaded): a BERT of
all-MiniLM-L6-v2's published config (6 layers, hidden 384, 12 heads, intermediate 1536, a vocabulary of 30522)
with random weights, and a WordPiece tokenizer trained with the tokenizers library on a few lines, put together
by sentence-transformers' own classes (its Transformer from that folder, a Pooling, a Normalize) and written by
its save(): modules.json, sentence_bert_config.json, 1_Pooling/config.json, 2_Normalize, config.json,
model.safetensors, tokenizer.json. A tiny config of the same kind (2 layers, hidden 32) makes the folders whose
poolings are compared with sentence-transformers' own in a second."""
from __future__ import annotations

import random
from pathlib import Path

# all-MiniLM-L6-v2's config.json (sentence-transformers/all-MiniLM-L6-v2 on the Hugging Face hub).
MINILM = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
              max_position_embeddings=512, hidden_act="gelu", layer_norm_eps=1e-12, type_vocab_size=2)
MINILM_MAX_SEQ_LENGTH = 256  # its sentence_bert_config.json's
TINY = dict(vocab_size=400, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=64)
LINES = ["The quick brown fox jumps over the lazy dog.", "Search engines rank documents by their vectors.",
         "A sentence embedding places similar texts close together.", "Paris is the capital of France.",
         "Café, naïve, über: accents are words too.", "東京は日本の首都です。", "Numbers like 42 and 3.14 appear.",
         "hello world, how are you today?"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tokenizer(do_lower_case: bool = True):
    """BERT's tokenizer kind (a WordPiece, BERT's normaliser and pre-tokenizer, [CLS] ... [SEP] added), trained on
    LINES, as transformers' fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    words.normalizer = normalizers.BertNormalizer(lowercase=do_lower_case)
    words.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words.decoder = decoders.WordPiece()
    words.train_from_iterator(LINES * 4, trainers.WordPieceTrainer(vocab_size=300, special_tokens=SPECIALS))
    cls, sep = words.token_to_id("[CLS]"), words.token_to_id("[SEP]")
    words.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                         special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def sentence_folder(folder: Path, config: dict = MINILM, pooling="mean", normalize: bool = True,
                    max_seq_length: int = MINILM_MAX_SEQ_LENGTH, seed: int = 0) -> Path:
    """A sentence-transformers model's folder as SentenceTransformer.save writes it: a random BertModel of
    ``config`` and the tokenizer, read by sentence-transformers' Transformer, then its Pooling of ``pooling``
    (a mode or a tuple of modes, concatenated) and a Normalize where ``normalize``."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    bert = folder.parent / f"{folder.name}-bert"
    BertModel(BertConfig(**config), add_pooling_layer=False).eval().save_pretrained(str(bert))
    tokenizer().save_pretrained(str(bert))
    modules = [Transformer(str(bert), max_seq_length=max_seq_length),
               Pooling(config["hidden_size"], pooling_mode=pooling)] + ([Normalize()] if normalize else [])
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    return folder


def sentences(count: int = 100, seed: int = 0) -> list[str]:
    """``count`` texts of 1 to 40 words, drawn from LINES' words (a few unseen ones too: [UNK] and word pieces),
    each within MiniLM's 256 tokens."""
    words = " ".join(LINES).split() + ["zebra", "Quantum", "ÉTÉ", "naïvely", "42%"]
    draw = random.Random(seed)
    return [" ".join(draw.choice(words) for _ in range(draw.randint(1, 40))) for _ in range(count)]
