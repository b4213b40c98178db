"""Training options: one typed definition for the command line, the training-job API and `model.json`.

Each field carries its bounds and a description; `intently train` builds its flags from them,
`/docs` lists them under `TrainingJobCreate.options`, and the network's shape is taken from the
fields it shares with `ModelConfig` by name. Bounds are checked when options are given, not in the
job process an hour later: `embed_dim=10**6` would otherwise only fail after exhausting memory.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from model.config import Arch, ModelConfig, Pooling, TokenizerConfig

# Far past any sensible intent model, and tighter than what loading accepts (model/artifact.py):
# they keep a job within memory and within hours.
_BIG = 1_000_000
MAX_DIM, MAX_LAYERS, MAX_BUCKETS, MAX_TOKENS = 2048, 8, _BIG, 1024


class TrainConfig(BaseModel):
    """Every option of a training run; unknown names, wrong types and values out of bounds are refused."""

    model_config = ConfigDict(extra="forbid", strict=True)

    # --- the network (the fields ModelConfig shares) ---
    arch: Arch = Field("lstm", description="Recurrent cell: lstm, gru, or rnn (plain tanh).")
    embed_dim: int = Field(256, ge=1, le=MAX_DIM, description="Word vector size.")
    hidden_dim: int = Field(128, ge=1, le=MAX_DIM, description="Recurrent state size per direction.")
    num_layers: int = Field(1, ge=1, le=MAX_LAYERS, description="Stacked recurrent layers.")
    bidirectional: bool = Field(True, description="Read the utterance both ways.")
    pooling: Pooling = Field(
        "maxmean", description="How token states become one vector: max, mean, maxmean (both) or last."
    )
    dropout: float = Field(0.4, ge=0.0, le=0.99, description="On embeddings and on the pooled features.")
    ngram_buckets: int = Field(
        50_000,
        ge=0,
        le=MAX_BUCKETS,
        description="Hashed character 3-5-gram buckets per token; 0: no sub-words.",
    )
    bag_buckets: int = Field(
        100_000,
        ge=0,
        le=MAX_BUCKETS,
        description="Hashed word 1-2-gram buckets of a linear path beside the recurrent one; 0: off.",
    )
    bag_char_ngrams: bool = Field(
        True, description="The linear path also reads the tokens' character n-grams (needs ngram_buckets)."
    )
    max_tokens: int = Field(64, ge=1, le=MAX_TOKENS, description="Longer utterances are cut.")

    # --- the optimisation ---
    # Fitted jointly, whichever path learns the training set first leaves the other little gradient.
    separate_paths: bool = Field(
        True,
        description="Fit the recurrent and the linear path to the labels each on its own and add their"
        " logits; false: one loss on the summed logits.",
    )
    epochs: int = Field(
        12, ge=1, le=1000, description="Epochs at least; small data sets get more (min_steps)."
    )
    min_steps: int = Field(
        500,
        ge=0,
        le=100_000,
        description="Small data sets get enough epochs for at least this many updates.",
    )
    # Twenty augmented copies of each example make an epoch twenty passes over the team's sentences.
    max_steps: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="A distilled training set (its augmented copies and transfer rows) gets fewer epochs"
        " where it is large: at most this many updates, and at least one epoch; 0: no cap.",
    )
    patience: int = Field(
        0,
        ge=0,
        le=1000,
        description="Stop after this many epochs without a better validation score; 0: never.",
    )
    batch_size: int = Field(64, ge=1, le=4096, description="Examples per update.")
    lr: float = Field(2e-3, ge=0.0, le=10.0, description="Peak learning rate (warm-up, then cosine decay).")
    weight_decay: float = Field(0.01, ge=0.0, le=10.0, description="AdamW weight decay of the dense weights.")
    label_smoothing: float = Field(0.1, ge=0.0, le=0.99, description="Label smoothing of the loss.")
    word_dropout: float = Field(
        0.1, ge=0.0, le=0.99, description="Share of known words replaced by <unk> in training."
    )
    clip_norm: float = Field(1.0, gt=0.0, le=1000.0, description="Gradient norm clipping.")
    balance: float = Field(
        0.5,
        ge=0.0,
        le=10.0,
        description="Rare intents are repeated up to this share of the median intent size.",
    )
    valid_fraction: float = Field(
        0.1, ge=0.0, le=0.9, description="Held out per intent when no validation data is given."
    )
    # With ten examples an intent, one of them is the intent's whole validation share.
    refit_below: int = Field(
        40,
        ge=0,
        le=_BIG,
        description="Retrain on every row after calibration when the median intent has fewer examples"
        " than this, the validation split was made here and no teacher was used; 0: never.",
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="The same data and seed give the same model.")

    # --- out of scope ---
    max_oos_drop: float = Field(
        0.0025,
        ge=0.0,
        le=1.0,
        description="In-scope accuracy each out-of-scope threshold may cost, estimated on validation rows.",
    )
    word_coverage: bool = Field(
        True, description="A second threshold on the top probability times the share of known words."
    )
    unknown_detector: bool = Field(True, description="The detector of requests for intents nobody described.")
    reject_known: float = Field(
        0.0,
        ge=0.0,
        le=0.9,
        description="Share of known-intent requests the detector turns away, for data without `oos` rows"
        " (0.1: the open-intent operating point); with `oos` rows, or 0, it keeps to max_oos_drop as the"
        " thresholds do.",
    )
    temperature_prior: float = Field(
        1.0,
        ge=0.0,
        le=1000.0,
        description="Pseudo-rows of Laplace's rule, a bound after the temperature's fit: the validation"
        " rows' mean confidence may not exceed (right + A) / (rows + 2A), so that a few rows, all right,"
        " cannot make every answer certain; 0: no bound.",
    )
    temperature_fit: Literal["likelihood", "top"] = Field(
        "likelihood",
        description="What the temperature is fitted to on the validation rows: likelihood (each row's intent"
        " under the whole distribution) or top (each answer's confidence against whether it is right).",
    )
    temperature_spread: float = Field(
        0.0,
        ge=0.0,
        le=100.0,
        description="Standard deviation of log T in a log-normal prior on the temperature, centred on 1:"
        " the fit is the most probable temperature given the validation rows, so a handful of rows cannot"
        " move it far and many rows decide it; 0: no prior.",
    )

    # --- pretrained knowledge ---
    vectors: str = Field(
        "auto",
        max_length=4096,
        description="Pretrained word vectors: a sentence encoder (Hugging Face name or directory) or a table"
        " from `intently vectors build`; auto: the built-in encoder when installed; empty: none.",
    )
    vectors_words: int = Field(
        20_000, ge=0, le=_BIG, description="Frequent words of the source added beyond the training words."
    )
    # Another language, say: the vectors would mostly be noise.
    min_vectors_coverage: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Below this share of training words known to the source, train without it.",
    )
    encoder: str = Field(
        "auto",
        max_length=4096,
        description="Start the network from a pretrained recurrent encoder (a file from `intently encoder"
        " build`); auto: the one shipped with intently, where the network's shape matches it; empty: none.",
    )
    # A few hundred labelled rows and their augmented copies can wash the pretraining out.
    encoder_lr: float = Field(
        1.0,
        ge=0.0,
        le=10.0,
        description="The learning rate of the weights a pretrained encoder started (its word and n-gram"
        " tables and recurrent layers), as a share of lr; 0: frozen.",
    )
    teacher: str = Field(
        "auto",
        max_length=4096,
        description="Distil from this sentence encoder (name or directory); auto: the built-in encoder when"
        " installed and the data is small (teacher_below); empty: none.",
    )
    # With few examples the teacher knows far more than the data says; with many it adds little.
    teacher_below: int = Field(
        25, ge=0, le=_BIG, description="auto distils when the median intent has fewer examples than this."
    )
    teacher_c: float = Field(100.0, ge=1e-4, le=1e4, description="Inverse regularisation of the teacher.")
    augment_copies: int = Field(20, ge=0, le=1000, description="Augmented utterances per example, at most.")
    augment_budget: int = Field(
        40_000, ge=0, le=2_000_000, description="Augmented utterances in all, at most."
    )
    distill_weight: float = Field(
        3.0, ge=0.0, le=100.0, description="Weight of the teacher's probabilities against the labels."
    )

    transfer: str = Field(
        "",
        max_length=4096,
        description="A file of unlabelled messages, one a line, of which the teacher labels transfer_rows for"
        " the student beside the augmented copies; empty: none.",
    )
    transfer_rows: int = Field(
        2000, ge=0, le=1_000_000, description="Messages sampled from the transfer file."
    )

    @classmethod
    def from_options(cls, options: dict[str, Any], strict: bool = True) -> TrainConfig:
        """Options from JSON (`strict`: types as given) or from text (`strict=False`: "128" is 128).

        Raises ValueError with one line per problem, each naming the option.
        """
        try:
            return cls.model_validate(options, strict=strict)
        except ValidationError as exc:
            raise ValueError(describe(exc)) from None

    def given(self) -> dict[str, Any]:
        """The options set explicitly, as a job stores them."""
        return self.model_dump(exclude_unset=True)

    def network_config(
        self,
        vocab_size: int,
        num_labels: int,
        vectors_dim: int = 0,
        learned_vocab: int = 0,
        entity_types: int = 0,
    ) -> ModelConfig:
        shape = self.model_dump(include=set(NETWORK_FIELDS))
        return ModelConfig(
            vocab_size=vocab_size,
            num_labels=num_labels,
            vectors_dim=vectors_dim,
            learned_vocab=learned_vocab,
            entity_tags=1 + 2 * entity_types if entity_types else 0,
            **shape,
        )

    def tokenizer_config(self) -> TokenizerConfig:
        return TokenizerConfig(max_tokens=self.max_tokens, ngram_buckets=self.ngram_buckets)


# The options that are the network's own settings, by name.
NETWORK_FIELDS = frozenset(f.name for f in fields(ModelConfig)) & frozenset(TrainConfig.model_fields)


def describe(exc: ValidationError) -> str:
    """Pydantic's errors as one line per option: unknown names, wrong types, values out of bounds."""
    unknown = sorted(str(e["loc"][0]) for e in exc.errors() if e["type"] == "extra_forbidden")
    known = sorted(TrainConfig.model_fields)
    lines = [f"unknown training options: {unknown}; known: {known}"] if unknown else []
    schema = TrainConfig.model_json_schema()["properties"]
    for e in exc.errors():
        name, value = ".".join(str(p) for p in e["loc"]), e["input"]
        field = TrainConfig.model_fields.get(name)
        if e["type"] == "extra_forbidden" or field is None:
            continue
        if e["type"] in _BOUND_ERRORS:
            low = schema[name].get("minimum", schema[name].get("exclusiveMinimum"))
            lines.append(f"option {name}={value} is outside {low}..{schema[name].get('maximum')}")
        elif e["type"] in _TYPE_ERRORS:
            lines.append(f"option {name} must be of type {_TYPE_ERRORS[e['type']]}, not {value!r}")
        else:
            lines.append(f"option {name}: {e['msg']}, not {value!r}")
    return "; ".join(line[:200] for line in lines)


_BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
_TYPE_ERRORS = {
    **{f"{kind}_type": kind for kind in ("int", "float", "bool")},
    **{f"{kind}_parsing": kind for kind in ("int", "float", "bool")},
    "int_from_float": "int",
    "string_type": "str",
}
