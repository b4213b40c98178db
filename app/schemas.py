"""Request and response bodies of the public API; their fields document the OpenAPI schema."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from store.jobs import Mode, Policy
from training.config import TrainConfig


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"text": "What time is it?", "top_k": 3}]})

    text: str = Field(
        description="The user's utterance: not blank, at most INTENTLY_MAX_TEXT_CHARS characters.",
        examples=["What time is it?"],
    )
    top_k: int = Field(
        5, ge=1, strict=True, description="How many intents to rank (at most INTENTLY_MAX_TOP_K)."
    )


class RankedIntentOut(BaseModel):
    intent: str = Field(examples=["ask_time"])
    confidence: float = Field(ge=0, le=1, examples=[0.97])


class EntityOut(BaseModel):
    entity: str = Field(description="The entity type.", examples=["city"])
    value: str = Field(description="The span's text, or the value the data gave it.", examples=["Berlin"])
    start: int = Field(ge=0, description="Offset of the span in the text sent.", examples=[7])
    end: int = Field(ge=0, description="Offset just past the span.", examples=[13])
    confidence: float = Field(
        ge=0, le=1, description="Mean of its tags' probabilities, each given the tag before.", examples=[0.98]
    )
    role: str | None = Field(None, description="Present where the training data gave the type roles.")
    group: str | None = Field(None, description="Present where the training data gave the type groups.")


class ClassifyResponse(BaseModel):
    text: str = Field(description="The utterance, as sent.")
    intent: str | None = Field(
        description="The predicted intent; null when out of scope.", examples=["ask_time"]
    )
    confidence: float = Field(
        ge=0,
        le=1,
        description="Calibrated probability of the top-ranked intent, the ranking's first, in scope or not;"
        " when out of scope the intent is null and this is the probability the closest intent had.",
        examples=[0.97],
    )
    out_of_scope: bool = Field(description="True when the utterance matches none of the model's intents.")
    out_of_scope_score: float = Field(
        0.0,
        ge=0,
        le=1,
        description="The out-of-scope verdict's own score, at least 0.5 exactly when out_of_scope is true:"
        " how far the request sits on the out-of-scope side of the nearest of the model's rules (0.5 is the"
        " boundary). Not a probability.",
        examples=[0.12],
    )
    ranking: list[RankedIntentOut] = Field(description="The top_k intents, most probable first.")
    entities: list[EntityOut] = Field(
        default_factory=list, description="Entities found in the text; empty for a model trained without any."
    )
    model_version: str = Field(description="The model version that answered.")


class BatchRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"texts": ["What time is it?", "play some jazz"], "top_k": 3}]}
    )

    texts: list[str] = Field(
        min_length=1, description="Utterances to classify, at most INTENTLY_MAX_BATCH of them."
    )
    top_k: int = Field(5, ge=1, strict=True, description="How many intents to rank for each text.")


class BatchResponse(BaseModel):
    results: list[ClassifyResponse]


class ParseRequest(BaseModel):
    """Rasa NLU's parse request; extra Rasa fields such as `message_id` are accepted and ignored."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{"text": "What time is it?"}]})

    text: str = Field(description="The user's utterance.")
    message_id: str | int | None = Field(None, description="Accepted for Rasa compatibility; not used.")


class RasaVersion(BaseModel):
    version: str
    minimum_compatible_version: str


class RasaStatus(BaseModel):
    model_id: str | None = Field(description="The version that answers.")
    model_file: str | None = Field(description="The same: Intently's versions are directories, not files.")
    num_active_training_jobs: int


class RasaIntent(BaseModel):
    name: str = Field(
        description="The intent; `nlu_fallback` when out of scope, as Rasa's FallbackClassifier says.",
        examples=["ask_time"],
    )
    confidence: float = Field(ge=0, le=1)


class RasaEntity(BaseModel):
    entity: str
    value: Any = Field(description="The span's text; a button payload's value as sent (any JSON).")
    start: int
    end: int
    confidence_entity: float | None = Field(
        None, ge=0, le=1, description="Left out for a payload's entities."
    )
    extractor: str | None = Field(
        None, description="IntentlyTagger, or RegexEntityExtractor for a regex or lookup table's match."
    )
    role: str | None = Field(None, description="Where the training data gave the entity roles.")
    group: str | None = Field(None, description="Where the training data gave the entity groups.")


class ParseResponse(BaseModel):
    text: str
    intent: RasaIntent
    intent_ranking: list[RasaIntent]
    entities: list[RasaEntity] = Field(default_factory=list, description="Entities, as Rasa gives them.")
    response_selector: dict[str, Any] | None = Field(
        None,
        description="For a model with retrieval intents (`chitchat/ask_name`): the sub-intent picked, in the"
        " shape of Rasa's ResponseSelector, under its retrieval intent and under `default`.",
    )


class IntentInfo(BaseModel):
    intent: str = Field(examples=["ask_time"])
    examples: int = Field(description="Training examples of this intent.", examples=[51])


class IntentsResponse(BaseModel):
    model_version: str
    intents: list[IntentInfo]
    oos_examples: int = Field(description="Out-of-scope (`oos`) training examples.")


class ErrorResponse(BaseModel):
    error: str = Field(description="A short machine-readable code.", examples=["invalid_request"])
    message: str = Field(description="What is wrong, for a person.")
    details: list[dict[str, Any]] | None = None


class HealthResponse(BaseModel):
    status: str = Field(examples=["ok"])


class ReadyResponse(BaseModel):
    ready: bool
    model_version: str | None = None
    reason: str | None = None


class VersionOut(BaseModel):
    version: str
    created_at: str
    active: bool
    metrics: dict[str, Any] = Field(description="Validation metrics of the version.")
    examples: int = Field(description="Training examples.")
    intents: int
    arch: str


class VersionList(BaseModel):
    active: str | None
    versions: list[VersionOut]


class ActiveResponse(BaseModel):
    active: str


class EntitySpan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: int = Field(ge=0, description="Offset of the span's first character in `text`.", examples=[19])
    end: int = Field(gt=0, description="Offset just past its last character.", examples=[24])
    entity: str = Field(min_length=1, max_length=128, examples=["city"])
    value: str | None = Field(default=None, description="What it means; the span's text when left out.")
    role: str | None = None
    group: str | None = None


class Example(BaseModel):
    text: str = Field(min_length=1, max_length=10_000, examples=["what's the time in Tokyo"])
    intent: str = Field(min_length=1, max_length=128, examples=["ask_time"])
    entities: list[EntitySpan] | None = Field(
        default=None, max_length=64, description="Entity spans of `text` (character offsets)."
    )


class JobSettings(BaseModel):
    """How a job trains and when its version goes live: the fields of a JSON job and of an upload's form."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode = Field(
        "append", description="`append`: the active version's data plus these; `replace`: exactly these."
    )
    activate: Policy = Field(
        "if_better",
        description="`if_better`: only if at least as accurate as the active version "
        "on the same held-out examples.",
    )
    options: TrainConfig = Field(
        default_factory=TrainConfig,
        description="Training options (docs/training.md); the job keeps those given. `vectors` and `teacher`"
        " may only be `auto` or empty over HTTP.",
    )
    tolerance: float = Field(0.01, ge=0, le=1, description="`if_better` accepts an accuracy this much lower.")
    from_review: bool = Field(
        False,
        description="`append` only: add the review inbox's labelled items (not discarded, not yet trained on)"
        " to the data; they are marked used once the job's version is activated. Also accepted inside"
        " `options`.",
    )


class TrainingJobCreate(JobSettings):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "examples": [{"text": "what's the time in Tokyo", "intent": "ask_time"}],
                    "mode": "append",
                    "activate": "if_better",
                    "options": {"epochs": 20},
                }
            ]
        },
    )

    examples: list[Example] = Field(
        default_factory=list,
        description="Labelled utterances; intent `oos` for out of scope. At least one, unless `from_review`"
        " brings labelled items from the review inbox.",
    )


class JobProgress(BaseModel):
    epoch: int
    epochs: int


class TrainingJob(BaseModel):
    id: str
    state: Literal["queued", "running", "succeeded", "failed"]
    mode: str
    activate: str
    options: dict[str, Any]
    examples: int = Field(description="Examples sent with the job.")
    created_at: str
    started_at: str | None
    finished_at: str | None
    progress: JobProgress
    base_version: str | None = Field(description="The version active when the job started.")
    version: str | None = Field(description="The version the job produced.")
    activated: bool
    activation_reason: str | None
    metrics: dict[str, Any] | None
    error: str | None
    message: str | None = Field(
        None,
        description=(
            "While queued: what the job waits for. 'waiting for a trainer: none has been seen for"
            " N s' (or 'has ever been seen') when no process that runs jobs (`intently worker`, or a"
            " server with the training extra) is alive for this store; else how many trainers are."
            " Null in the other states."
        ),
    )


class TrainingJobList(BaseModel):
    jobs: list[TrainingJob]


class IntentExamples(BaseModel):
    model_version: str
    intent: str
    total: int = Field(description="Training examples of this intent in the version's data.")
    examples: list[str] = Field(description="The first few of them, in the order of the data.")


class IntentScore(BaseModel):
    intent: str = Field(description="An intent, or `oos` for out of scope.")
    precision: float
    recall: float
    f1: float
    support: int = Field(description="Held-out examples of this intent.")


class ConfusedPair(BaseModel):
    true: str
    predicted: str = Field(description="The intent predicted instead; `oos` for out of scope.")
    count: int
    examples: list[str] | None = Field(
        None, description="Up to three of those utterances; only for callers allowed to read training data."
    )


class OperatingPoint(BaseModel):
    boundary: float = Field(description="Out of scope where out_of_scope_score >= this; 0.5: as served.")
    known_turned_away: float | None = Field(description="Share of known-intent rows turned away.")
    unknown_caught: float | None = Field(description="Share of unknown (`oos`) rows caught; null without.")


class OperatingCurve(BaseModel):
    known: int = Field(description="Held-out rows of the model's intents.")
    unknown: int = Field(description="Held-out rows of no intent of the model (`oos`).")
    points: list[OperatingPoint] = Field(description="The curve, boundary 0 to 1.")
    current: OperatingPoint = Field(description="The model's own setting (boundary 0.5).")


class EvaluationResponse(BaseModel):
    version: str
    evaluated_on: dict[str, Any] = Field(
        description="Which examples: the version's held-out set, and how many."
    )
    metrics: dict[str, Any] = Field(
        description=(
            "accuracy, macro_f1, n; with oos rows also in_scope_accuracy, oos_recall, oos_precision; "
            "when the held-out examples have entities also entity_precision, entity_recall, entity_f1 "
            "(exact span and type, micro-averaged) and entities: {type: {precision, recall, f1, support}}."
        )
    )
    per_intent: list[IntentScore]
    labels: list[str] = Field(description="Rows and columns of the confusion matrix, in order.")
    confusion_matrix: list[list[int]] = Field(description="Counts: row = true label, column = predicted.")
    confused_pairs: list[ConfusedPair] = Field(description="The most frequent mistakes, most frequent first.")
    examples_included: bool = Field(description="Whether confused pairs carry their example utterances.")
    confusion_png: str = Field(description="Path of the confusion matrix as a PNG picture.")
    operating_curve: OperatingCurve | None = Field(
        None,
        description="What the out-of-scope setting costs and buys on the held-out rows: known requests"
        " turned away against unknown ones caught, for each boundary on out_of_scope_score, the model's"
        " own marked; absent from reports made before it existed.",
    )


# --- the review inbox (app/routes/review.py) ---------------------------------------------------

ReviewReason = Literal["out_of_scope", "low_confidence", "ambiguous", "sample"]


class ReviewItem(BaseModel):
    id: str = Field(description="Stable for a text: a hash of its words (case and spacing aside).")
    text: str = Field(description="The utterance as first seen.")
    intent: str = Field(description="The top-ranked intent, also when out of scope.", examples=["ask_time"])
    confidence: float = Field(ge=0, le=1, description="The top-ranked intent's calibrated probability.")
    out_of_scope: bool
    reason: ReviewReason = Field(
        description="Why it was kept: turned away, a low confidence, two intents close, or the random sample"
        " (which stays `sample` once drawn)."
    )
    model_version: str = Field(description="The version that answered it last.")
    count: int = Field(ge=1, description="Times this text was seen.")
    first_seen: str = Field(description="ISO 8601, UTC.")
    last_seen: str = Field(description="ISO 8601, UTC.")
    label: str | None = Field(description="The label a person gave: an intent, a new intent or `oos`.")
    ranking: list[RankedIntentOut] = Field(description="The model's top three, as last answered.")
    discarded: bool = Field(description="Set aside: never exported or trained on.")
    used_in: str | None = Field(description="The version a `from_review` training job put its label into.")


class ReviewList(BaseModel):
    items: list[ReviewItem]
    next: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


class ReviewUpdate(BaseModel):
    """Exactly one of `label` and `discard`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"label": "ask_time"}, {"label": "oos"}, {"discard": True}]},
    )

    label: str | None = Field(
        None,
        description="An intent of the model, a new intent name, or `oos`; null takes the item back to"
        " unlabelled.",
    )
    discard: bool | None = Field(
        None, description="true: set the item aside (clears its label); false: undo."
    )

    def change(self) -> tuple[str | None, bool]:
        """(label, discard), or ValueError when the body does not say exactly one thing."""
        given = self.model_fields_set & {"label", "discard"}
        if len(given) != 1:
            raise ValueError("give exactly one of 'label' and 'discard'")
        if "discard" in given:
            if self.discard is None:
                raise ValueError("discard: must be true or false")
            return None, self.discard
        return self.label, False


class ReviewBulkChange(ReviewUpdate):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"id": "3f2a9c0d1e2b4a5c", "label": "ask_time"}]}
    )

    id: str = Field(max_length=64)


class ReviewBulk(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"items": [{"id": "3f2a9c0d1e2b4a5c", "label": "ask_time"}, {"id": "9a8b", "discard": True}]}
            ]
        },
    )

    items: list[ReviewBulkChange] = Field(min_length=1, max_length=1000)


class ReviewBulkResult(BaseModel):
    updated: int
    missing: list[str] = Field(description="Ids with no item (deleted or pruned meanwhile).")


class ReviewDeleted(BaseModel):
    deleted: int


class ReviewAccuracy(BaseModel):
    labelled_sample: int = Field(description="Labelled items of the random sample.")
    correct: int = Field(description="Of those, the ones the model answered as labelled.")
    estimate: float | None = Field(description="correct / labelled_sample; null without any.")
    low: float = Field(description="Wilson score interval, lower end.")
    high: float = Field(description="Wilson score interval, upper end.")
    confidence_level: float


class LiveOperatingPoint(BaseModel):
    known: int = Field(description="Labelled random-sample items of a known intent (label not `oos`).")
    known_turned_away: float | None = Field(description="Share of them the model said out of scope.")
    unknown: int = Field(description="Labelled random-sample items labelled `oos`.")
    unknown_caught: float | None = Field(description="Share of them the model said out of scope.")


class ReviewStats(BaseModel):
    total: int
    statuses: dict[str, int] = Field(
        description="unlabelled, labelled (not yet trained on), used, discarded."
    )
    reasons: dict[str, int] = Field(description="Items not discarded, by why they were kept.")
    accuracy: ReviewAccuracy = Field(description="Live accuracy estimated from the labelled random sample.")
    operating_point: LiveOperatingPoint = Field(
        description="The evaluation's operating point measured live, on the labelled random sample."
    )
