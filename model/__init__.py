"""Intently's model: everything needed to run a trained network, without torch.

Imports neither `training` nor `app`, nor torch; a user imports this to classify in-process.
The torch network itself belongs to training (training/network.py).
"""

from model.artifact import ArtifactError, ModelMeta, load, read_meta, save
from model.config import ModelConfig, TokenizerConfig
from model.predictor import Prediction, Predictor, RankedIntent
from model.runtime import Runtime
from model.tokenizer import Tokenizer, tokenize

__all__ = [
    "ArtifactError",
    "ModelConfig",
    "ModelMeta",
    "Prediction",
    "Predictor",
    "RankedIntent",
    "Runtime",
    "Tokenizer",
    "TokenizerConfig",
    "load",
    "read_meta",
    "save",
    "tokenize",
]
