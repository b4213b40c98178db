"""Admin: retraining over HTTP. A job is queued here and run by a trainer: this server's own job
dispatcher where torch is installed, else `intently worker` (training/dispatcher.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import PurePath, PureWindowsPath
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from app.admin import AdminDep, StoreDep
from app.deps import SettingsDep
from app.errors import ApiError, unavailable
from app.schemas import ErrorResponse, JobSettings, TrainingJob, TrainingJobCreate, TrainingJobList
from store.jobs import MODES, POLICIES, JobError, JobRequest, JobStore, open_job_store
from store.model_store import ModelStore, StoreError, StoreUnavailable
from training.job_request import job_config, submit
from training.readers import FORMATS, DataError, Example, NluData, appended, clean, no_examples, parse_data

Body = TypeVar("Body", bound=BaseModel)
Result = TypeVar("Result")
router = APIRouter(tags=["admin: training jobs"], dependencies=[AdminDep])
# An HTTP caller should not hang for the 10 s a training process waits on a lock.
JOB_STORE_TIMEOUT = 2.0


def _jobs(store: ModelStore) -> JobStore:
    return open_job_store(store, timeout=JOB_STORE_TIMEOUT)


async def _job_store_call(func: Callable[..., Result], *args: Any) -> Result:
    """Run a job-store call in a thread; a locked, missing or unreachable database is a 503, not a 500."""
    try:
        return await asyncio.to_thread(func, *args)
    except StoreUnavailable as exc:
        raise unavailable(exc, "job_store_unavailable") from None


# Every admin route may answer 401/403 (token), 409 (no model store) and 503 (job store unusable).
_ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong bearer token"},
    403: {"model": ErrorResponse, "description": "The admin API is off"},
    409: {"model": ErrorResponse, "description": "No model store"},
    503: {"model": ErrorResponse, "description": "The job store is locked or unreadable; retry"},
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ADMIN_ERRORS,
    400: {"model": ErrorResponse},
    413: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
}
_UPLOAD_SCHEMA = {
    "requestBody": {
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/TrainingJobCreate"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": ".csv, .jsonl or .yml"},
                        "mode": {"type": "string", "enum": list(MODES)},
                        "activate": {"type": "string", "enum": list(POLICIES)},
                        "options": {"type": "string", "description": "training options as a JSON object"},
                        "tolerance": {"type": "number"},
                        "from_review": {"type": "boolean", "description": "add the review inbox's labels"},
                    },
                }
            },
        },
        "required": True,
    }
}


def body_schemas() -> dict[str, Any]:
    """The JSON schemas of the job body `create_job` reads by hand, for the OpenAPI components."""
    schema = TrainingJobCreate.model_json_schema(ref_template="#/components/schemas/{model}")
    return {**schema.pop("$defs", {}), "TrainingJobCreate": schema}


async def _from_upload(request: Request, max_bytes: int) -> tuple[NluData, dict[str, Any]]:
    form = await request.form(max_files=1, max_fields=10, max_part_size=max_bytes)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ApiError(422, "invalid_request", "file: a multipart part named 'file' is required")
    # Never a path from the client; both separators, so "..\\x.csv" from Windows is "x.csv" too.
    name = PureWindowsPath(upload.filename or "upload").name
    suffix = PurePath(name).suffix.lower()
    if suffix not in FORMATS:
        raise ApiError(
            422,
            "invalid_request",
            f"file: unknown type {suffix or '(none)'!r}; use .csv, .jsonl, .yml or .json (Rasa)",
        )
    raw = await upload.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ApiError(413, "body_too_large", f"file: larger than {max_bytes} bytes")
    try:
        data = await asyncio.to_thread(parse_data, raw, FORMATS[suffix], name)
        if not data.examples:
            raise no_examples(f"{name}: no examples found", data)
    except DataError as exc:
        raise ApiError(422, "invalid_data", str(exc)) from None
    fields: dict[str, Any] = {}
    for key in ("mode", "activate", "tolerance", "from_review"):
        if isinstance(form.get(key), str):
            fields[key] = form[key]
    options = form.get("options")
    if isinstance(options, str) and options.strip():
        try:
            fields["options"] = json.loads(options)
        except (json.JSONDecodeError, RecursionError):
            raise ApiError(422, "invalid_request", "options: not valid JSON") from None
    return data, fields


def _check_data(store: ModelStore, mode: str, examples: list[Example]) -> None:
    """Fail now, with a 422, on data that the job could only fail on later."""
    if mode == "append":
        active = store.active()
        if active is None:
            raise JobError("mode 'append' needs an active version to append to")
        examples = appended(examples, [Example.from_json(r) for r in store.read_data(active)])
    _, summary = clean(examples)
    if len([i for i in summary.per_intent if i != "oos"]) < 2:
        raise JobError("need at least two intents (besides 'oos') to train a classifier")


def _validated(schema: type[Body], data: Any) -> Body:
    """The body read by hand (it may be JSON or a form): its errors answered as FastAPI's own are."""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


@router.post(
    "/v1/training-jobs",
    status_code=202,
    response_model=TrainingJob,
    responses=_ERRORS,
    openapi_extra=_UPLOAD_SCHEMA,
)
async def create_job(request: Request, store: StoreDep, settings: SettingsDep) -> dict[str, Any]:
    """Queue a training job: JSON examples, or a multipart upload with a `file` part and the same fields."""
    body: JobSettings
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        data, fields = await _from_upload(request, settings.max_upload_bytes)
        examples, rules = data.examples, data.rules()
        body = _validated(JobSettings, _from_review_option(fields))
    else:
        try:
            payload = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise ApiError(400, "malformed_json", "the request body is not valid JSON") from None
        created = _validated(TrainingJobCreate, _from_review_option(payload))
        body, rules = created, {}
        try:
            rows = [e.model_dump(exclude_none=True) for e in created.examples]
            examples = [Example.from_json(row, f"examples.{i}") for i, row in enumerate(rows)]
        except DataError as exc:
            raise ApiError(422, "invalid_data", str(exc)) from None
    review_items: list[str] = []
    if body.from_review:
        extra, review_items = await _review_examples(request, body.mode)
        examples = [*examples, *extra]
    if len(examples) > settings.max_train_examples:
        raise ApiError(
            413,
            "too_many_examples",
            f"{len(examples)} examples is over the limit of {settings.max_train_examples}",
        )
    job = JobRequest(
        examples, body.mode, body.activate, body.options.given(), body.tolerance, rules, review_items
    )
    try:
        job_config(job)
        await _job_store_call(_check_data, store, job.mode, examples)
        record = await _job_store_call(submit, _jobs(store), job)
    except (JobError, DataError, StoreError) as exc:
        raise ApiError(422, "invalid_job", str(exc)) from None
    if request.app.state.dispatcher is not None:  # None: no torch here, a trainer elsewhere polls
        request.app.state.dispatcher.wake()
    return record


def _from_review_option(payload: Any) -> Any:
    """`from_review` is a job setting; given inside `options` (where a training option would be),
    it is taken out to the top level rather than refused as an unknown training option."""
    if (
        isinstance(payload, dict)
        and isinstance(payload.get("options"), dict)
        and "from_review" in payload["options"]
    ):
        options = dict(payload["options"])
        payload = {**payload, "options": options}
        payload.setdefault("from_review", options.pop("from_review"))
    return payload


async def _review_examples(request: Request, mode: str) -> tuple[list[Example], list[str]]:
    """The review inbox's labelled items not yet trained on, as examples, and their ids."""
    if mode != "append":
        raise ApiError(
            422, "invalid_job", "from_review: needs mode 'append' (the active version's data plus the labels)"
        )
    capture = request.app.state.review
    if capture is None:
        raise ApiError(
            409, "review_disabled", "from_review: the review inbox is off; set INTENTLY_REVIEW=true"
        )
    items = await asyncio.to_thread(capture.store.labelled, True)
    if not items:
        raise ApiError(422, "invalid_job", "from_review: the review inbox has no labelled items to train on")
    try:
        examples = [
            Example.from_json({"text": i["text"], "intent": i["label"]}, "review item") for i in items
        ]
    except DataError as exc:
        raise ApiError(422, "invalid_data", str(exc)) from None
    return examples, [i["id"] for i in items]


@router.get("/v1/training-jobs", response_model=TrainingJobList, responses=_ERRORS)
async def list_jobs(store: StoreDep) -> dict[str, Any]:
    """Jobs of this store, newest first."""
    return {"jobs": await _job_store_call(_jobs(store).list)}


@router.get(
    "/v1/training-jobs/{job_id}",
    response_model=TrainingJob,
    responses={**_ADMIN_ERRORS, 404: {"model": ErrorResponse}},
)
async def get_job(job_id: str, store: StoreDep) -> dict[str, Any]:
    """State, progress (epoch of total), metrics, resulting version, activation and error of one job."""
    if not job_id.isalnum() or len(job_id) > 64:
        raise ApiError(404, "not_found", f"no training job {job_id[:64]!r}")
    try:
        return await _job_store_call(_jobs(store).get, job_id)
    except KeyError:
        raise ApiError(404, "not_found", f"no training job {job_id!r}") from None
