"""Every default of a run, written once: the dataclass defaults of ModelConfig, DataConfig and
TrainConfig (tfm.training.config.default_config_dict), as one ml_collections ConfigDict.

    config.model   tfm.config.ModelConfig        the network (vocab_size 0 = from the tokenizer)
    config.data    tfm.data.config.DataConfig    data set, tokenizer, lengths, GLOBAL batch size
    config.train   tfm.training.config.TrainConfig  optimiser, schedule, parallelism, logging

Experiment files start from this and override a few fields; the command line overrides any
field: ``--config.train.num_steps=100 --config.model.dtype=bfloat16`` (mixed precision:
bfloat16 compute, float32 parameters).
"""

from tfm.training.config import default_config_dict


def get_config():
    return default_config_dict()
