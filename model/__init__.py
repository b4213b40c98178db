"""Intently's model: the recurrent network and everything needed to run it.

Imports neither `training` nor `app`; a user imports this to classify in-process.
"""

from model.artifact import ArtifactError, ModelMeta, load, read_meta, save
from model.config import ModelConfig, TokenizerConfig
from model.network import Batch, IntentNet
from model.predictor import Prediction, Predictor, RankedIntent
from model.tokenizer import Tokenizer, tokenize

__all__ = [
    "ArtifactError",
    "Batch",
    "IntentNet",
    "ModelConfig",
    "ModelMeta",
    "Prediction",
    "Predictor",
    "RankedIntent",
    "Tokenizer",
    "TokenizerConfig",
    "load",
    "read_meta",
    "save",
    "tokenize",
]
