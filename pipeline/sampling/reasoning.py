"""A reasoning model's native trace, from whichever field its server puts it in.

Servers disagree on the name: llama.cpp's server and DeepSeek's API use
`message.reasoning_content`, vLLM used it too and now uses `message.reasoning` (as do Ollama's
and OpenRouter's OpenAI-compatible endpoints), others `message.thinking`. OpenAI's o-series
keeps the trace to itself and reports only `usage.completion_tokens_details.reasoning_tokens`.
The reply itself stays in `message.content`; this module only reads what comes beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# In order of preference when a server sends more than one (vLLM sent both names for a while).
REASONING_FIELDS = ("reasoning_content", "reasoning", "thinking")


@dataclass(frozen=True, slots=True)
class NativeReasoning:
    """What a completion said about its own reasoning: the trace (if the server returns it),
    the field it came in, and the reasoning-token count (if the server reports one)."""

    text: str | None = None
    field: str | None = None
    tokens: int | None = None

    @property
    def hidden(self) -> bool:
        """The model reasoned (it billed reasoning tokens) but the server kept the trace."""
        return not self.text and bool(self.tokens)


NO_REASONING = NativeReasoning()


def parse_reasoning(message: dict[str, Any], usage: dict[str, Any]) -> NativeReasoning:
    """The native reasoning of one chat-completion `message` and its `usage`."""
    text, found = None, None
    for name in REASONING_FIELDS:
        value = _as_text(message.get(name))
        if value and value.strip():
            text, found = value, name
            break
    return NativeReasoning(text=text, field=found, tokens=_reasoning_tokens(usage))


def _as_text(value: Any) -> str | None:
    """A trace is a string; some servers send a list of parts ({"text": ...}) instead."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [part.get("text") if isinstance(part, dict) else part for part in value]
        return "".join(part for part in parts if isinstance(part, str)) or None
    return None


def _reasoning_tokens(usage: dict[str, Any]) -> int | None:
    details = usage.get("completion_tokens_details")
    tokens = details.get("reasoning_tokens") if isinstance(details, dict) else None
    if tokens is None:
        tokens = usage.get("reasoning_tokens")   # some gateways flatten it
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0 else None


def assistant_turn(reply: str, reasoning: NativeReasoning, send_back: bool) -> dict[str, str]:
    """The assistant message that carries an initial reply into the next request: with its
    trace, under the field it came in, only for models trained to read it back."""
    message = {"role": "assistant", "content": reply}
    if send_back and reasoning.text and reasoning.field:
        message[reasoning.field] = reasoning.text
    return message
