"""The paper's base model on WMT 2014 English -> German (Vaswani et al. 2017, sections 5-6).

Table 3 "base": N=6, d_model=512, d_ff=2048, h=8, P_drop=0.1, eps_ls=0.1, shared source/target
vocabulary (~37k; here SentencePiece), batches of ~25,000 source + ~25,000 target tokens,
Adam(0.9, 0.98, 1e-9) with the rsqrt schedule (warmup 4000), 100k steps; beam 4 and length
penalty 0.6 at evaluation. Mixed precision (bfloat16 compute, float32 parameters) because this
config is for accelerators.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.data.dataset = "wmt14_ende"
    config.data.tokenizer = "sentencepiece"
    config.data.vocab_size = 37000
    config.data.max_len = 256
    config.data.max_target_len = 256
    config.data.overlong = "drop"
    config.data.tokens_per_batch = 25_000
    config.data.eval_batch_size = 256
    config.data.max_eval_examples = 3000  # newstest2013 has 3000 sentences

    # config.model: the ModelConfig defaults ARE the paper's base model
    config.model.max_len = 256
    config.model.dtype = "bfloat16"

    config.train.num_steps = 100_000
    config.train.warmup_steps = 4000
    config.train.log_every_steps = 100
    config.train.eval_every_steps = 5000
    config.train.checkpoint_every_steps = 2000
    config.train.eval_decode_examples = 1000
    config.train.eval_beam_size = 4
    return config
