"""The ceiling of the web stack: FastAPI + uvicorn answering /v1/classify with no model at all.

    .venv/bin/python -m bench.bare_app --port P --workers W

Same body model (ClassifyRequest), same response model, same uvicorn options
as `intently serve`, and a constant answer shaped like the real one. What the
real service loses against this is the project's own cost (middleware,
batching, the forward pass), not the framework's.
"""

from __future__ import annotations

import argparse

from fastapi import FastAPI

from app.schemas import ClassifyRequest, ClassifyResponse

_RANKING = [
    {"intent": "ask_time", "confidence": 0.975126},
    {"intent": "ask_date", "confidence": 0.017526},
    {"intent": "weather", "confidence": 0.001151},
    {"intent": "set_alarm", "confidence": 0.000912},
    {"intent": "greeting", "confidence": 0.000544},
]


def create_app() -> FastAPI:
    app = FastAPI(title="bare")

    @app.post("/v1/classify", response_model=ClassifyResponse)
    async def classify(body: ClassifyRequest) -> dict:
        """A constant verdict; only the echoed text and top_k come from the request."""
        return {
            "text": body.text,
            "intent": "ask_time",
            "confidence": 0.975126,
            "out_of_scope": False,
            "ranking": _RANKING[: body.top_k],
            "model_version": "bare-00000000-000000",
        }

    @app.get("/readyz")
    async def readyz() -> dict:
        """So the benchmark waits for it the way it waits for the real server."""
        return {"ready": True}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="bare FastAPI app for the HTTP benchmarks")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    import uvicorn

    from app.config import UVICORN_OPTIONS

    # The options `intently serve` passes, so the two stacks differ only in the app.
    uvicorn.run(
        "bench.bare_app:create_app", host=args.host, port=args.port, workers=args.workers, **UVICORN_OPTIONS
    )


if __name__ == "__main__":
    main()
