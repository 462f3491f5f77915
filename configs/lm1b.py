"""A decoder-only language model on the One Billion Word benchmark (after google/flax
examples/lm1b: 6 layers, d_model 512, 8 heads, d_ff 2048, 128-token packed sequences, global
batch 256), trained with AdamW and warm-up + cosine."""

from configs import default


def get_config():
    config = default.get_config()
    config.data.dataset = "lm1b"
    config.data.tokenizer = "sentencepiece"
    config.data.vocab_size = 32000
    config.data.max_len = 128
    config.data.max_target_len = 128
    config.data.pack = True
    config.data.batch_size = 256
    config.data.eval_batch_size = 256
    config.data.max_eval_examples = 10_000

    config.model.arch = "decoder_lm"
    config.model.norm = "pre"
    config.model.max_len = 128
    config.model.dtype = "bfloat16"

    config.train.num_steps = 100_000
    config.train.optimizer = "adamw"
    config.train.schedule = "warmup_cosine"
    config.train.learning_rate = 1e-3
    config.train.warmup_steps = 1000
    config.train.weight_decay = 0.1
    config.train.grad_clip_norm = 1.0
    config.train.label_smoothing = 0.0
    config.train.eval_every_steps = 2000
    config.train.checkpoint_every_steps = 2000
    return config
