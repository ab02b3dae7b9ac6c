"""The OpenAI Batch API, faked for tests/fakeserver.py: `/v1/files` and `/v1/batches`.

Follows OpenAI's documented objects (File, Batch with `request_counts`, output and error
JSONL lines `{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}`)
and status lifecycle: validating -> in_progress -> finalizing -> completed, one step every
`batch_step_s`; or failed (validation), expired (the window ran out: the part that ran is in
the output file, the rest in the error file as `batch_expired`) and cancelled. Each line is
answered by the chat server's own logic (so `bad_seeds` lines land in the error file as 400s),
and output lines come back shuffled. `batch_create_hang` simulates a client killed around
batch creation: `before` never creates, `after` creates and never answers (`refuse`: a 400).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from tests.fakeserver import App, Reply

TERMINAL = {"completed", "failed", "expired", "cancelled"}
LIFECYCLE = ["validating", "in_progress", "finalizing", "completed"]
HANG_S = 3600.0


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def object(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": len(self.content), "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose}


@dataclass
class Batch:
    id: str
    input_file_id: str
    endpoint: str
    metadata: dict[str, Any] | None
    outcome: str                  # what this batch will end as: completed | failed | expired | cancelled
    step_s: float
    total: int
    created: float = field(default_factory=time.time)
    output_file_id: str | None = None
    error_file_id: str | None = None
    completed: int = 0
    failed: int = 0
    errors: dict[str, Any] | None = None
    finished: bool = False

    def status(self, now: float) -> str:
        steps = int((now - self.created) / self.step_s) if self.step_s > 0 else 3
        if self.outcome == "failed":
            return "validating" if steps < 1 else "failed"
        if self.outcome in ("expired", "cancelled"):
            return ["validating", "in_progress"][min(steps, 1)] if steps < 2 else self.outcome
        return LIFECYCLE[min(steps, 3)]

    def object(self, now: float) -> dict[str, Any]:
        status = self.status(now)
        stamp = int(self.created)
        return {"id": self.id, "object": "batch", "endpoint": self.endpoint, "errors": self.errors,
                "input_file_id": self.input_file_id, "completion_window": "24h", "status": status,
                "output_file_id": self.output_file_id, "error_file_id": self.error_file_id,
                "created_at": stamp, "in_progress_at": stamp if status != "validating" else None,
                "expires_at": stamp + 86400, "finalizing_at": None, "completed_at": None, "failed_at": None,
                "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                "request_counts": {"total": self.total, "completed": self.completed, "failed": self.failed},
                "metadata": self.metadata}


class FakeBatchApi:
    def __init__(self, app: App):
        self.app = app
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, Batch] = {}
        self.lines: Counter[str] = Counter()     # custom_id -> times submitted in a created batch
        self.created = 0
        self.uploads = 0
        self.rng = random.Random(0)

    def stats(self) -> dict[str, Any]:
        return {"batches_created": self.created, "files_uploaded": self.uploads, "batch_lines": self.lines,
                "batch_statuses": Counter(b.status(time.time()) for b in self.batches.values())}

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        from tests.fakeserver import error_body, json_reply

        denied = self.app.check_key(headers)
        if denied:
            return denied
        route, _, query = path.partition("?")
        parts = route.strip("/").split("/")[1:]   # after "v1"
        if parts == ["files"] and method == "POST":
            return self.upload(headers, body)
        if parts == ["files"] and method == "GET":
            return json_reply(200, {"object": "list", "data": [f.object() for f in self.files.values()],
                                    "has_more": False})
        if len(parts) == 3 and parts[0] == "files" and parts[2] == "content" and parts[1] in self.files:
            from tests.fakeserver import Reply
            return Reply(200, self.files[parts[1]].content)
        if parts == ["batches"] and method == "POST":
            return self.create(orjson.loads(body))
        if parts == ["batches"] and method == "GET":
            return self.list_batches(query)
        if len(parts) == 2 and parts[0] == "batches" and parts[1] in self.batches:
            return json_reply(200, self.retrieve(parts[1]))
        return json_reply(404, error_body(f"No such object: {method} {path}", "invalid_request_error", None))

    def upload(self, headers: dict[str, str], body: bytes) -> Reply:
        from tests.fakeserver import error_body, json_reply

        fields = parse_multipart(headers.get("content-type", ""), body)
        if "file" not in fields or fields.get("purpose", (None, b""))[1] != b"batch":
            return json_reply(400, error_body("multipart form needs purpose=batch and a file",
                                              "invalid_request_error", None))
        filename, content = fields["file"]
        stored = StoredFile(f"file-{len(self.files) + 1:06d}", filename or "upload.jsonl", "batch", content)
        self.files[stored.id] = stored
        self.uploads += 1
        return json_reply(200, stored.object())

    def create(self, request: dict[str, Any]) -> Reply:
        from tests.fakeserver import error_body, json_reply

        knobs = self.app.knobs
        source = self.files.get(request.get("input_file_id", ""))
        if source is None or request.get("completion_window") != "24h":
            return json_reply(400, error_body("input_file_id must name an uploaded file; completion_window 24h",
                                              "invalid_request_error", None))
        hang = knobs.batch_create_hang
        if hang == "refuse":
            return json_reply(400, error_body("The batch input file is invalid (fake server).",
                                              "invalid_request_error", "invalid_file"))
        if hang == "before":
            return json_reply(500, error_body("never answered", "server_error", None))._replace(delay=HANG_S)
        lines = [orjson.loads(line) for line in source.content.splitlines() if line.strip()]
        batch = Batch(f"batch_{len(self.batches) + 1:06d}", source.id, request.get("endpoint", ""),
                      request.get("metadata"), knobs.batch_outcome, knobs.batch_step_s, len(lines))
        self.batches[batch.id] = batch
        self.created += 1
        for line in lines:
            self.lines[line["custom_id"]] += 1
        reply = json_reply(200, batch.object(time.time()))
        return reply._replace(delay=HANG_S) if hang == "after" else reply

    def list_batches(self, query: str) -> Reply:
        from tests.fakeserver import json_reply

        args = dict(part.partition("=")[::2] for part in query.split("&") if part)
        ordered = sorted(self.batches.values(), key=lambda b: b.id, reverse=True)   # newest first
        if "after" in args:
            ordered = [b for b in ordered if b.id < args["after"]]
        limit = int(args.get("limit", 20))
        page = ordered[:limit]
        return json_reply(200, {"object": "list", "data": [self.retrieve(b.id) for b in page],
                                "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None,
                                "has_more": len(ordered) > limit})

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        batch = self.batches[batch_id]
        now = time.time()
        if batch.status(now) in TERMINAL and not batch.finished:
            self.finish(batch)
        return batch.object(now)

    def finish(self, batch: Batch) -> None:
        """Run the lines through the chat logic and write the output and error files."""
        batch.finished = True
        if batch.outcome == "failed":
            batch.errors = {"object": "list", "data": [{"code": "invalid_request", "message": "fake validation failure",
                                                        "param": None, "line": 1}]}
            return
        lines = [orjson.loads(line) for line in self.files[batch.input_file_id].content.splitlines() if line.strip()]
        ran = len(lines) if batch.outcome == "completed" else len(lines) // 2
        output, errors = [], []
        for index, line in enumerate(lines):
            entry: dict[str, Any] = {"id": f"batch_req_{batch.id}_{index}", "custom_id": line["custom_id"]}
            if index >= ran:
                code = "batch_expired" if batch.outcome == "expired" else "batch_cancelled"
                errors.append({**entry, "response": None,
                               "error": {"code": code, "message": "This request could not be executed before "
                                                                  "the completion window expired."}})
                continue
            reply = self.app.decide({}, orjson.dumps(line["body"]))
            body = orjson.loads(reply.body)
            entry["response"] = {"status_code": reply.status, "request_id": f"req_{index}", "body": body}
            entry["error"] = None
            (output if reply.status == 200 else errors).append(entry)
        self.rng.shuffle(output)
        batch.completed, batch.failed = len(output), len(errors)
        batch.output_file_id = self.store_result(batch, "output", output)
        batch.error_file_id = self.store_result(batch, "error", errors)

    def store_result(self, batch: Batch, kind: str, entries: list[dict[str, Any]]) -> str | None:
        if not entries:
            return None
        stored = StoredFile(f"file-{len(self.files) + 1:06d}", f"{batch.id}_{kind}.jsonl", f"batch_{kind}",
                            b"\n".join(orjson.dumps(e) for e in entries) + b"\n")
        self.files[stored.id] = stored
        return stored.id


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """name -> (filename, content) of a multipart/form-data body."""
    boundary = content_type.partition("boundary=")[2].strip('"')
    if not boundary:
        return {}
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in body.split(b"--" + boundary.encode()):
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        disposition = next((line for line in head.decode("latin-1").split("\r\n")
                            if line.lower().startswith("content-disposition")), "")
        params = dict(item.strip().partition("=")[::2] for item in disposition.split(";")[1:])
        name = params.get("name", "").strip('"')
        filename = params.get("filename", "").strip('"') or None
        fields[name] = (filename, content.removesuffix(b"\r\n"))
    return fields
