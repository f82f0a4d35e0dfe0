"""A small typed client of the coordinator's HTTP API: one method per route, answers parsed into the same pydantic
models the server declares in its OpenAPI document (coordinator/api_models.py), every 4xx raised as `ApiError`
carrying the server's error items. The CLI's `submit`, `status`, `cancel`, `delete`, `retrain` and
`sample --server` go through it, so the CLI and the schema cannot drift apart unnoticed. docs/api.md."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import TypeAdapter

from coordinator.api_models import (
    CancelAccepted,
    ErrorItem,
    Predictions,
    RetrainAccepted,
    RunCreated,
    RunDeleted,
    RunSummary,
    RunView,
)


class ApiError(Exception):
    """An error answer: its HTTP status and the server's `{"loc", "msg", "type"}` items."""

    def __init__(self, status: int, items: list[ErrorItem]):
        self.status = status
        self.items = items
        super().__init__(f"{status}: {'; '.join(_describe(i) for i in items)}")

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        try:
            detail = response.json().get("detail")
        except (ValueError, AttributeError):
            detail = None
        if isinstance(detail, list):
            try:
                return cls(response.status_code, [ErrorItem.model_validate(i) for i in detail])
            except ValueError:
                pass
        # Not the documented shape (a proxy in between, a server of another version): keep what it said.
        text = response.text.strip()[:500] or response.reason_phrase
        return cls(response.status_code, [ErrorItem(loc=[], msg=text, type="unexpected_response")])


def _describe(item: ErrorItem) -> str:
    """`train.lr: must be positive`: the field path without its `body`/`query` root, then the message."""
    field = ".".join(str(p) for p in item.loc[1:])
    return f"{field}: {item.msg}" if field else item.msg


_SUMMARIES = TypeAdapter(list[RunSummary])
_EVENTS = TypeAdapter(list[dict[str, str]])
_NAMES = TypeAdapter(list[str])


class ServiceClient:
    """`ServiceClient("http://127.0.0.1:8000", token="...")`, or around any httpx.Client (a test's TestClient)."""

    def __init__(self, server: str | None = None, *, token: str | None = None, http: httpx.Client | None = None):
        if http is None:
            if server is None:
                raise ValueError("ServiceClient: give the server URL or an httpx.Client")
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            http = httpx.Client(base_url=server, headers=headers, timeout=30)
        self.http = http

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc) -> None:
        self.http.close()

    def _call(self, method: str, path: str, *, timeout: float | None = None, **kwargs) -> httpx.Response:
        if timeout is not None:
            kwargs["timeout"] = timeout
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise ApiError.from_response(response)
        return response

    # Runs
    def submit(self, config: dict[str, Any], *, idempotency_key: str | None = None) -> RunCreated:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return RunCreated.model_validate_json(self._call("POST", "/v1/runs", json=config, headers=headers).content)

    def runs(self) -> list[RunSummary]:
        return _SUMMARIES.validate_json(self._call("GET", "/v1/runs").content)

    def run(self, run_id: str) -> RunView:
        return RunView.model_validate_json(self._call("GET", f"/v1/runs/{run_id}").content)

    def events(self, run_id: str) -> list[dict[str, str]]:
        return _EVENTS.validate_json(self._call("GET", f"/v1/runs/{run_id}/events").content)

    def cancel(self, run_id: str) -> CancelAccepted:
        return CancelAccepted.model_validate_json(self._call("POST", f"/v1/runs/{run_id}/cancel").content)

    def delete(self, run_id: str, *, files: bool = False) -> RunDeleted:
        response = self._call("DELETE", f"/v1/runs/{run_id}", params={"files": str(files).lower()})
        return RunDeleted.model_validate_json(response.content)

    def retrain(
        self, run_id: str, block: int, *, from_scratch: bool = True, steps: int | None = None
    ) -> RetrainAccepted:
        body = {"from_scratch": from_scratch, "steps": steps}
        response = self._call("POST", f"/v1/runs/{run_id}/blocks/{block}/retrain", json=body)
        return RetrainAccepted.model_validate_json(response.content)

    # The assembled model
    def samples_png(self, run_id: str, **params) -> bytes:
        """The run's samples.png, or with parameters (num_per_class, steps, cfg, seed, weights) a fresh grid."""
        return self._call("GET", f"/v1/runs/{run_id}/samples.png", params=_given(params), timeout=600).content

    def samples_txt(self, run_id: str, **params) -> str:
        """A text run's samples, one per line; with parameters (num, length, steps, seed, weights) fresh ones."""
        return self._call("GET", f"/v1/runs/{run_id}/samples.txt", params=_given(params), timeout=600).text

    def predict(self, run_id: str, images: list, *, seed: int = 0) -> Predictions:
        body = {"images": images, "seed": seed}
        return Predictions.model_validate_json(
            self._call("POST", f"/v1/runs/{run_id}/predict", json=body, timeout=600).content
        )

    def previews(self, run_id: str) -> list[str]:
        return _NAMES.validate_json(self._call("GET", f"/v1/runs/{run_id}/previews").content)

    def preview(self, run_id: str, name: str) -> bytes:
        return self._call("GET", f"/v1/runs/{run_id}/previews/{name}").content


def _given(params: dict) -> dict:
    """Query parameters left unset are not sent: the server fills them from the run's config."""
    return {k: v for k, v in params.items() if v is not None}
