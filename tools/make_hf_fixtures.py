"""Builds the tiny Hugging Face fixtures of tests/interop (needs torch, transformers, tokenizers,
sentencepiece; nothing is downloaded).

    python tools/make_hf_fixtures.py [--out tests/fixtures/hf]

Writes, with random weights (seeded) and tokenizers trained here on a small embedded text:

* ``gpt2/``: a 2-layer GPT2LMHeadModel (D=32, 4 heads, V~300) saved by ``save_pretrained``
  (safetensors) with a byte-level BPE trained by the ``tokenizers`` library (id 0 is "!", as in
  GPT-2, and ``<|endoftext|>`` is the last id);
* ``marian/``: a 2+2-layer MarianMTModel (D=32, 4 heads, swish, scaled embeddings, shared
  vocabulary of ~130 pieces, EOS 0, pad = decoder start = last id) with source and target
  SentencePiece models and the files MarianTokenizer reads;
* ``llama/``, ``mistral/``, ``qwen2/``: 2-layer LlamaForCausalLM (D=32, 4 heads, grouped-query
  attention with 2 key/value heads, untied head, rope_scaling "llama3", theta 5e5),
  MistralForCausalLM (multi-query: 1 key/value head, saved in bfloat16, theta 1e6, no sliding
  window) and Qwen2ForCausalLM (2 kv heads, q/k/v biases, tied head), each with a small BPE
  ``tokenizer.json`` (Metaspace, ~150 ids) built here with ``tokenizers`` (Llama and Mistral put
  <s> first, Qwen2 does not), BOS/EOS ids in config.json;
* ``bert_classifier/`` (BertForSequenceClassification, 3 named labels, uncased WordPiece from
  ``tokenizer.json`` and ``vocab.txt``), ``bert_mlm/`` (BertForMaskedLM, cased WordPiece from
  ``vocab.txt`` only) and ``bert_base/`` (BertModel with its pooler, uncased ``tokenizer.json``
  only): 2 layers, D=24, 3 heads, 3 token types, exact GELU; a WordPiece vocabulary of ~200
  pieces trained here; the references hold hidden states / logits of a padded batch of
  sentence pairs with token types, and the ids and token types of texts and pairs;
* ``reference.npz`` / ``reference.json`` in each: what transformers computed: logits of fixed
  inputs (one input containing token id 0, one without), greedy continuations (and, for
  Marian, beam search with 4 beams, length_penalty 0, early stopping), and the token ids its
  tokenizer gives for a few texts.

Parameters are perturbed away from transformers' initialisation (LayerNorm scales not 1, biases
not 0, larger weights), so that a swapped or transposed tensor cannot go unnoticed.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import pathlib
import shutil
import tempfile

import numpy as np

ENGLISH = """The quick brown fox jumps over the lazy dog!
How are you today? I am fine, thank you.
The weather is nice and the sun is shining.
She reads a book in the garden every morning.
We will meet at the station at eight o'clock.
Can you help me with my homework, please?
The children are playing football in the park.
My brother works in a hospital in the city.
This house is very old but it is beautiful.
Do you want some coffee or tea?
Hello world! Hello again!
Numbers: 1, 2, 3, 42 and 1000.""".split("\n")

GERMAN = """Der schnelle braune Fuchs springt über den faulen Hund!
Wie geht es dir heute? Mir geht es gut, danke.
Das Wetter ist schön und die Sonne scheint.
Sie liest jeden Morgen ein Buch im Garten.
Wir treffen uns um acht Uhr am Bahnhof.
Kannst du mir bitte bei meinen Hausaufgaben helfen?
Die Kinder spielen Fußball im Park.
Mein Bruder arbeitet in einem Krankenhaus in der Stadt.
Dieses Haus ist sehr alt, aber es ist schön.
Möchtest du Kaffee oder Tee?
Hallo Welt! Hallo nochmal!
Zahlen: 1, 2, 3, 42 und 1000.""".split("\n")

TOKENIZER_TEXTS = ["Hello world!", "How are you today?", "The fox jumps over the dog.",
                   "Ünïcode çafé — naïve 42!", "  two  spaces\nand a newline"]


def perturb(model, torch, seed: int, scale: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_positions" not in name:  # Marian's fixed sinusoidal table stays as it is
                p.add_(scale * torch.randn(p.shape, generator=gen))


def make_gpt2(out: pathlib.Path) -> None:
    import tokenizers
    import torch
    from tokenizers import decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[], show_progress=False)
    tok.train_from_iterator(ENGLISH + GERMAN, trainer)
    tok.add_special_tokens([tokenizers.AddedToken("<|endoftext|>", special=True)])
    hf_tok = GPT2TokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                               unk_token="<|endoftext|>", model_max_length=64)
    vocab = tok.get_vocab_size()
    eos = tok.token_to_id("<|endoftext|>")
    assert tok.id_to_token(0) == "!", tok.id_to_token(0)

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                        bos_token_id=eos, eos_token_id=eos, initializer_range=0.1)
    model = GPT2LMHeadModel(config).eval()
    perturb(model, torch, 0, 0.1)
    model.save_pretrained(out, safe_serialization=True)
    hf_tok.save_pretrained(out)
    tok.model.save(str(out))  # vocab.json + merges.txt too, as the Hub's gpt2 has them
    vocab_json = json.loads((out / "vocab.json").read_text(encoding="utf-8"))
    vocab_json["<|endoftext|>"] = tok.token_to_id("<|endoftext|>")  # GPT-2's vocab.json lists it
    (out / "vocab.json").write_text(json.dumps(vocab_json, ensure_ascii=False), encoding="utf-8")
    hf_tok = AutoTokenizer.from_pretrained(out)  # what a user's transformers reads back

    # Inputs: the second has token 0 ("!"); the other has none.
    with_zero = hf_tok("Hallo Welt! Hallo nochmal!")["input_ids"]  # ends in 0; greedy makes a 0
    no_zero = hf_tok("The weather is nice and the sun")["input_ids"]
    assert 0 in with_zero and 0 not in no_zero
    T = 8
    inputs = np.array([no_zero[:T], with_zero[:T]], np.int64)
    assert 0 not in inputs[0] and 0 in inputs[1], inputs
    with torch.no_grad():
        logits = model(torch.tensor(inputs)).logits.numpy()
        greedy = model.generate(torch.tensor(inputs), max_new_tokens=10, do_sample=False,
                                pad_token_id=eos, attention_mask=torch.ones_like(torch.tensor(inputs)),
                                eos_token_id=eos).numpy()[:, T:]
    np.savez_compressed(out / "reference.npz", inputs=inputs.astype(np.int32), logits=logits.astype(np.float32),
                        greedy=greedy.astype(np.int32))
    ids = {t: hf_tok(t)["input_ids"] for t in TOKENIZER_TEXTS}
    decoded = {t: hf_tok.decode(ids[t]) for t in TOKENIZER_TEXTS}
    (out / "reference.json").write_text(json.dumps(
        {"token_ids": ids, "decoded": decoded, "eos_id": eos, "vocab_size": vocab,
         "row_has_token_0": [False, True], "max_new_tokens": 10}, indent=1, ensure_ascii=False) + "\n")


def train_spm(lines, vocab_size: int) -> bytes:
    import sentencepiece as spm

    writer = io.BytesIO()
    spm.SentencePieceTrainer.Train(sentence_iterator=iter(lines), model_writer=writer, vocab_size=vocab_size,
                                   model_type="unigram", character_coverage=1.0, minloglevel=2, num_threads=1,
                                   hard_vocab_limit=False, normalization_rule_name="identity")
    return writer.getvalue()


def make_marian(out: pathlib.Path) -> None:
    import sentencepiece as spm
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        (tmp / "source.spm").write_bytes(train_spm(ENGLISH, 80))
        (tmp / "target.spm").write_bytes(train_spm(GERMAN, 80))
        pieces = []
        for name in ("source.spm", "target.spm"):
            sp = spm.SentencePieceProcessor(model_file=str(tmp / name))
            pieces += [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
        vocab = {"</s>": 0, "<unk>": 1}
        for p in pieces:
            if p not in vocab and p not in ("<s>", "<pad>"):
                vocab[p] = len(vocab)
        vocab["<pad>"] = len(vocab)
        (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        hf_tok = MarianTokenizer(source_spm=str(tmp / "source.spm"), target_spm=str(tmp / "target.spm"),
                                 vocab=str(tmp / "vocab.json"), model_max_length=64)
        hf_tok.save_pretrained(out)
    hf_tok = MarianTokenizer.from_pretrained(out)
    V, pad = len(vocab), vocab["<pad>"]

    torch.manual_seed(1)
    config = MarianConfig(vocab_size=V, decoder_vocab_size=V, d_model=32, encoder_layers=2, decoder_layers=2,
                          encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                          decoder_ffn_dim=64, max_position_embeddings=64, activation_function="swish",
                          scale_embedding=True, pad_token_id=pad, eos_token_id=0, decoder_start_token_id=pad,
                          forced_eos_token_id=0, init_std=0.1, dropout=0.1)
    model = MarianMTModel(config).eval()
    perturb(model, torch, 1, 0.1)
    with torch.no_grad():
        model.final_logits_bias.copy_(0.5 * torch.randn(model.final_logits_bias.shape,
                                                         generator=torch.Generator().manual_seed(2)))
    model.save_pretrained(out, safe_serialization=True)

    sources = ["How are you today?", "Hello world!"]
    enc = [hf_tok(s)["input_ids"] for s in sources]  # ids + </s> (= 0)
    S = 6
    with_eos = np.array([e[: S - 1] + [0] for e in enc], np.int64)  # token 0 (EOS) in every row
    no_zero = np.array([e[:S - 1] for e in enc], np.int64)
    assert 0 not in no_zero
    decoder_inputs = np.array([[pad, 5, 9, 17, 3], [pad, 12, 4, 8, 30]], np.int64)
    n_new = 8
    ref = {}
    with torch.no_grad():
        for name, src in (("no_zero", no_zero), ("with_eos", with_eos)):
            src_t = torch.tensor(src)
            ref[f"{name}_inputs"] = src.astype(np.int32)
            ref[f"{name}_logits"] = model(input_ids=src_t, decoder_input_ids=torch.tensor(decoder_inputs)).logits.numpy()
            common = dict(max_new_tokens=n_new, attention_mask=torch.ones_like(src_t), forced_eos_token_id=None,
                          bad_words_ids=None, early_stopping=True, length_penalty=0.0, do_sample=False)
            ref[f"{name}_greedy"] = model.generate(src_t, num_beams=1, **common).numpy()[:, 1:]
            ref[f"{name}_beam4"] = model.generate(src_t, num_beams=4, **common).numpy()[:, 1:]
    ref["decoder_inputs"] = decoder_inputs.astype(np.int32)
    np.savez_compressed(out / "reference.npz", **{k: np.asarray(v) for k, v in ref.items()})
    texts = ["How are you today?", "The children are playing football.", "Hello world! 42"]
    ids = {t: hf_tok(t)["input_ids"] for t in texts}
    targets = ["Wie geht es dir heute?", "Die Kinder spielen Fußball."]
    target_ids = {t: hf_tok(text_target=t)["input_ids"] for t in targets}
    decoded = {t: hf_tok.decode(ids[t], skip_special_tokens=True) for t in texts}
    decoded.update({t: hf_tok.decode(target_ids[t], skip_special_tokens=True) for t in targets})
    (out / "reference.json").write_text(json.dumps(
        {"token_ids": ids, "target_token_ids": target_ids, "decoded": decoded, "eos_id": 0, "pad_id": pad,
         "vocab_size": V, "max_new_tokens": n_new}, indent=1, ensure_ascii=False) + "\n")


LLAMA_FAMILY = {
    "llama": dict(cls="LlamaForCausalLM", config="LlamaConfig", bos=True, dtype="float32", seed=3,
                  kw=dict(num_key_value_heads=2, tie_word_embeddings=False, rope_theta=500000.0,
                          rope_scaling={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                                        "high_freq_factor": 4.0, "original_max_position_embeddings": 16})),
    "mistral": dict(cls="MistralForCausalLM", config="MistralConfig", bos=True, dtype="bfloat16", seed=4,
                    kw=dict(num_key_value_heads=1, tie_word_embeddings=False, rope_theta=1e6, sliding_window=None)),
    "qwen2": dict(cls="Qwen2ForCausalLM", config="Qwen2Config", bos=False, dtype="float32", seed=5,
                  kw=dict(num_key_value_heads=2, tie_word_embeddings=True, rope_theta=10000.0)),
}


def small_bpe(bos: bool):
    """A ~150-id BPE tokenizer.json (Metaspace, as Llama 2's): <unk> 0, <s> 1, </s> 2; with ``bos``
    its post-processor puts <s> first, as Llama's and Mistral's do."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    tok = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=150, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tok.train_from_iterator(ENGLISH, trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", 1)])
    return tok


def make_llama_family(out: pathlib.Path, model_type: str) -> None:
    import torch
    import transformers

    spec = LLAMA_FAMILY[model_type]
    tok = small_bpe(spec["bos"])
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                                  unk_token="<unk>", model_max_length=64)
    V = tok.get_vocab_size()
    torch.manual_seed(spec["seed"])
    config = getattr(transformers, spec["config"])(
        vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=64, rms_norm_eps=1e-5, bos_token_id=1 if spec["bos"] else None, eos_token_id=2,
        initializer_range=0.1, **spec["kw"])
    model = getattr(transformers, spec["cls"])(config).eval()
    perturb(model, torch, spec["seed"], 0.1)
    if spec["dtype"] == "bfloat16":  # bf16 weights; the references: transformers loading them in float32
        model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
        model = getattr(transformers, spec["cls"]).from_pretrained(out, dtype=torch.float32).eval()
    else:
        model.save_pretrained(out, safe_serialization=True)
    hf_tok.save_pretrained(out)
    # tokenizer.json as it is (AutoTokenizer would build Qwen2's own byte-level pipeline instead)
    hf_tok = transformers.PreTrainedTokenizerFast.from_pretrained(out)
    T = 8
    rows = [hf_tok("The weather is nice and the sun")["input_ids"][:T],
            hf_tok("She reads a book in the garden")["input_ids"][:T]]
    inputs = np.array(rows, np.int64)
    with torch.no_grad():
        logits = model(torch.tensor(inputs)).logits.numpy()
        greedy = model.generate(torch.tensor(inputs), max_new_tokens=10, do_sample=False, pad_token_id=2,
                                attention_mask=torch.ones_like(torch.tensor(inputs)), eos_token_id=2).numpy()[:, T:]
    np.savez_compressed(out / "reference.npz", inputs=inputs.astype(np.int32), logits=logits.astype(np.float32),
                        greedy=greedy.astype(np.int32))
    ids = {t: hf_tok(t)["input_ids"] for t in TOKENIZER_TEXTS}
    decoded = {t: hf_tok.decode(ids[t], skip_special_tokens=True) for t in TOKENIZER_TEXTS}
    (out / "reference.json").write_text(json.dumps(
        {"token_ids": ids, "decoded": decoded, "eos_id": 2, "bos_id": 1 if spec["bos"] else None,
         "vocab_size": V, "max_new_tokens": 10, "dtype": spec["dtype"]}, indent=1, ensure_ascii=False) + "\n")


def _wordpiece(lowercase: bool):
    """A tiny BERT WordPiece tokenizer trained on the embedded text (the fast tokenizer object)."""
    from tokenizers import BertWordPieceTokenizer

    tok = BertWordPieceTokenizer(lowercase=lowercase, strip_accents=None)
    tok.train_from_iterator(ENGLISH + GERMAN, vocab_size=200, min_frequency=1, show_progress=False,
                            special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    return tok


BERT_PAIRS = [("The quick brown fox jumps over the lazy dog!", "How are you today?"),
              ("Hello world!", "Ünïcode çafé — naïve 42!")]


def make_bert(out: pathlib.Path, cls_name: str, lowercase: bool, files: tuple[str, ...]) -> None:
    import torch
    import transformers
    from transformers import BertConfig, BertTokenizerFast

    tok = _wordpiece(lowercase)
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_model(tmp)  # vocab.txt
        # (transformers 5 ignores vocab_file here: hand it the trained tokenizer itself)
        hf_tok = BertTokenizerFast(tokenizer_object=tok._tokenizer, do_lower_case=lowercase, model_max_length=48)
        hf_tok.save_pretrained(out)
        shutil.copy(os.path.join(tmp, "vocab.txt"), out / "vocab.txt")
    for name in ("vocab.txt", "tokenizer.json", "special_tokens_map.json"):
        if name not in files and (out / name).exists():
            (out / name).unlink()
    hf_tok = (transformers.BertTokenizer if "tokenizer.json" not in files else BertTokenizerFast).from_pretrained(out)
    V = hf_tok.vocab_size
    torch.manual_seed(1)
    labels = {0: "negative", 1: "neutral", 2: "positive"}
    config = BertConfig(vocab_size=V, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                        intermediate_size=40, max_position_embeddings=48, type_vocab_size=3,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        **({"id2label": labels, "label2id": {v: k for k, v in labels.items()}}
                           if cls_name == "BertForSequenceClassification" else {}))
    model = getattr(transformers, cls_name)(config).eval()
    perturb(model, torch, 2, 0.1)
    model.save_pretrained(out, safe_serialization=True)
    enc = hf_tok([a for a, _ in BERT_PAIRS], [b for _, b in BERT_PAIRS], padding=True, return_tensors="np")
    inputs, types, mask = enc["input_ids"], enc["token_type_ids"], enc["attention_mask"]
    assert mask.min() == 0, "the batch must hold padding"
    types = types.copy()
    types[1, 1:3] = 2  # the third token type too
    with torch.no_grad():
        result = model(input_ids=torch.tensor(inputs), token_type_ids=torch.tensor(types),
                       attention_mask=torch.tensor(mask))
    output = result.last_hidden_state if cls_name == "BertModel" else result.logits
    arrays = {"inputs": inputs.astype(np.int32), "token_types": types.astype(np.int32),
              "mask": mask.astype(np.int32), "output": output.numpy().astype(np.float32)}
    if cls_name == "BertModel":
        arrays["pooled"] = result.pooler_output.numpy().astype(np.float32)
    masked = None
    if cls_name == "BertForMaskedLM":
        masked = "The quick brown [MASK] jumps over the lazy dog!"
        ids = hf_tok(masked, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
        pos = int((ids[0] == hf_tok.mask_token_id).nonzero()[0, 0])
        arrays["mask_top5"] = torch.topk(logits[pos].softmax(-1), 5).indices.numpy().astype(np.int32)
        arrays["mask_top5_probs"] = torch.topk(logits[pos].softmax(-1), 5).values.numpy().astype(np.float32)
    np.savez_compressed(out / "reference.npz", **arrays)
    ids = {t: hf_tok(t)["input_ids"] for t in TOKENIZER_TEXTS}
    pairs = [{"a": a, "b": b, **{k: v for k, v in hf_tok(a, b).items() if k != "attention_mask"}}
             for a, b in BERT_PAIRS]
    decoded = {t: hf_tok.decode(ids[t], skip_special_tokens=True) for t in TOKENIZER_TEXTS}
    (out / "reference.json").write_text(json.dumps(
        {"token_ids": ids, "pairs": pairs, "decoded": decoded, "vocab_size": V, "lowercase": lowercase,
         "mask_id": hf_tok.mask_token_id, "masked_text": masked,
         "class_names": [labels[i] for i in range(3)] if cls_name == "BertForSequenceClassification" else None},
        indent=1, ensure_ascii=False) + "\n")


MAKERS = {
    "gpt2": make_gpt2,
    "marian": make_marian,
    **{t: functools.partial(make_llama_family, model_type=t) for t in LLAMA_FAMILY},
    "bert_classifier": lambda out: make_bert(out, "BertForSequenceClassification", True,
                                             ("tokenizer.json", "vocab.txt")),
    "bert_mlm": lambda out: make_bert(out, "BertForMaskedLM", False, ("vocab.txt",)),
    "bert_base": lambda out: make_bert(out, "BertModel", True, ("tokenizer.json",)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "hf"))
    parser.add_argument("names", nargs="*", help=f"which fixtures (default: all of {sorted(MAKERS)})")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    for name in args.names or MAKERS:
        make = MAKERS[name]
        target = out / name
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        make(target)
        size = sum(p.stat().st_size for p in target.iterdir())
        print(f"{target}: {size / 1024:.1f} KiB ({', '.join(sorted(p.name for p in target.iterdir()))})")


if __name__ == "__main__":
    main()
