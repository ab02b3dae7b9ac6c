"""The Batch API's HTTP calls: upload a JSONL file, create/retrieve/list batches, download a
file's content. Transient failures (5xx, connection errors, timeouts) are retried a few times;
anything else is one line, with the key redacted (`client.redact`)."""

from __future__ import annotations

from typing import Any

import aiohttp
import anyio
import orjson

from pipeline.errors import PipelineError
from pipeline.sampling.client import redact

ATTEMPTS = 5
PAGE = 100


class BatchApiError(PipelineError):
    """The Batch API refused or kept failing: the run stops, what is stored stays stored.
    `refused`: the server answered 4xx (not 429), so the same request will not succeed later."""

    def __init__(self, message: str, refused: bool = False):
        super().__init__(message)
        self.refused = refused


class BatchApi:
    def __init__(self, base_url: str, api_key: str | None, timeout_s: float):
        self.base_url = base_url.rstrip("/")
        self._secret = api_key
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._session = aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=min(timeout_s, 15.0), sock_read=timeout_s))

    async def upload(self, filename: str, content: bytes) -> str:
        """POST /files (purpose `batch`): the new file's id."""
        def form() -> aiohttp.FormData:
            data = aiohttp.FormData()
            data.add_field("purpose", "batch")
            data.add_field("file", content, filename=filename, content_type="application/jsonl")
            return data
        return str((await self._request("POST", "/files", form=form))["id"])

    async def find_file(self, filename: str) -> str | None:
        """An uploaded batch input file named `filename` (a run killed after uploading it)."""
        listing = await self._request("GET", "/files?purpose=batch")
        for item in listing.get("data") or []:
            if item.get("filename") == filename and item.get("purpose") == "batch":
                return str(item["id"])
        return None

    async def create(self, input_file_id: str, metadata: dict[str, str]) -> dict[str, Any]:
        body = {"input_file_id": input_file_id, "endpoint": "/v1/chat/completions",
                "completion_window": "24h", "metadata": metadata}
        return await self._request("POST", "/batches", json=body)

    async def find_batch(self, input_file_id: str) -> dict[str, Any] | None:
        """A batch already made from `input_file_id` (a run killed before storing its id)."""
        after = ""
        while True:
            page = await self._request("GET", f"/batches?limit={PAGE}{after}")
            for item in page.get("data") or []:
                if item.get("input_file_id") == input_file_id:
                    return dict(item)
            if not page.get("has_more") or not page.get("last_id"):
                return None
            after = f"&after={page['last_id']}"

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        return await self._request("GET", f"/batches/{batch_id}")

    async def content(self, file_id: str) -> bytes:
        return await self._send("GET", f"/files/{file_id}/content")

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        raw = await self._send(method, path, **kwargs)
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BatchApiError(f"{self.base_url}{path}: not JSON: {self._redact(raw[:200].decode('utf-8', 'replace'))}") from None
        if not isinstance(value, dict):
            raise BatchApiError(f"{self.base_url}{path}: expected a JSON object")
        return value

    async def _send(self, method: str, path: str, form: Any = None, json: Any = None) -> bytes:
        url = self.base_url + path
        refused = False
        for attempt in range(1, ATTEMPTS + 1):
            try:
                data = form() if form else (orjson.dumps(json) if json is not None else None)
                headers = {"Content-Type": "application/json"} if json is not None else None
                async with self._session.request(method, url, data=data, headers=headers) as response:
                    content = await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = f"connection error: {self._redact(str(exc)) or type(exc).__name__}"
            else:
                if status == 200:
                    return content
                problem = f"HTTP {status}: {self._redact(content[:300].decode('utf-8', 'replace'))}"
                if status < 500 and status != 429:
                    refused = True
                    break
            if attempt < ATTEMPTS:
                await anyio.sleep(min(30.0, 0.5 * 2 ** attempt))
        raise BatchApiError(f"Batch API {method} {url}: {problem}", refused=refused)

    def _redact(self, text: str) -> str:
        return redact(text, self._secret)

    async def aclose(self) -> None:
        await self._session.close()
