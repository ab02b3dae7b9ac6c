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
# A server without a reasoning parser (vLLM without --reasoning-parser, llama.cpp with
# --reasoning-format none) leaves the trace in the reply as <think>...</think>; some chat templates
# open the tag in the prompt, so only the closing one arrives. Stored with this field name.
INLINE_FIELD = "<think>"
_OPEN, _CLOSE = "<think>", "</think>"


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


def parse_reasoning(message: dict[str, Any], usage: dict[str, Any]) -> tuple[str, NativeReasoning]:
    """The reply and the native reasoning of one chat-completion `message` and its `usage`.
    The reply is `content`, less a leading <think> block when the trace came inline."""
    content = message.get("content")
    reply = "" if content is None else content if isinstance(content, str) else str(content)
    tokens = _reasoning_tokens(usage)
    for name in REASONING_FIELDS:
        value = _as_text(message.get(name))
        if value and value.strip():
            return reply, NativeReasoning(text=value, field=name, tokens=tokens)
    trace, rest = split_inline(reply)
    if trace is not None:
        return rest, NativeReasoning(text=trace, field=INLINE_FIELD, tokens=tokens)
    return reply, NativeReasoning(tokens=tokens)


def split_inline(reply: str) -> tuple[str | None, str]:
    """(trace, reply) of a reply that opens with a <think> block; (None, reply) otherwise. An
    unclosed block is all trace (cut off at max_tokens while thinking); a lone closing tag ends a
    trace whose opening tag was in the prompt."""
    stripped = reply.lstrip()
    if stripped.startswith(_OPEN):
        body = stripped[len(_OPEN):]
        trace, closed, rest = body.partition(_CLOSE)
        return (trace.strip(), rest.lstrip()) if closed else (body.strip(), "")
    if _CLOSE in reply and _OPEN not in reply:
        trace, _, rest = reply.partition(_CLOSE)
        return trace.strip(), rest.lstrip()
    return None, reply


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
    if not (send_back and reasoning.text and reasoning.field):
        return {"role": "assistant", "content": reply}
    if reasoning.field == INLINE_FIELD:   # back where it came from: the reply's opening block
        return {"role": "assistant", "content": f"{_OPEN}\n{reasoning.text}\n{_CLOSE}\n\n{reply}"}
    return {"role": "assistant", "content": reply, reasoning.field: reasoning.text}
