"""The data layer: data sets, tokenizers, batching and the pipeline the training loop calls.

``from tfm.data import DataConfig, build_pipeline`` is all a training loop needs (see
:mod:`tfm.data.pipeline`). Nothing here imports TensorFlow until a TFDS data set is used.
"""

from tfm.data.config import DataConfig, Dataset, Overlong, Task, TokenizerKind
from tfm.data.numbers import NumbersSpec
from tfm.data.pipeline import Pipeline, build_pipeline
from tfm.data.tokenizers import Tokenizer, load_tokenizer

__all__ = [
    "DataConfig", "Dataset", "NumbersSpec", "Overlong", "Task", "TokenizerKind", "Pipeline",
    "build_pipeline", "Tokenizer", "load_tokenizer",
]
