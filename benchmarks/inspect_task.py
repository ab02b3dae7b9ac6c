"""The Inspect AI side of `make bench-peers`: one sample per conversation the pipeline sent.

Runs only inside the peers venv (.venv-peers), as `inspect eval benchmarks/inspect_task.py
-T dataset=FILE`; FILE holds one JSON list of OpenAI-style messages per line, taken from the
pipeline's own run, so both tools send the same conversations. No scorer: the bench times the
calls, not the answers.
"""

import json
from pathlib import Path

from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import ChatMessage, ChatMessageAssistant, ChatMessageSystem, ChatMessageUser
from inspect_ai.solver import generate

ROLES = {"system": ChatMessageSystem, "user": ChatMessageUser, "assistant": ChatMessageAssistant}


def conversation(messages: list[dict[str, str]]) -> list[ChatMessage]:
    return [ROLES[message["role"]](content=message["content"]) for message in messages]


@task
def replay(dataset: str) -> Task:
    lines = Path(dataset).read_text(encoding="utf-8").splitlines()
    samples = [Sample(id=i, input=conversation(json.loads(line))) for i, line in enumerate(lines, 1)]
    return Task(dataset=MemoryDataset(samples), solver=generate())
