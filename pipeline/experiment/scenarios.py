"""Scenario files: load, validate, and build the message lists a job sends.

A scenario is a role-play (system prompt, history, primer) whose assistant reply to the
primer is either sampled or fixed (a refusal or a rebuttal phrasing), followed by a
trigger whose reply is the graded final response. Variants substitute `{placeholders}`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import orjson

from pipeline.errors import ConfigError
from pipeline.experiment.tomlfile import TomlFile

BRANCHES = ("sampled", "refusal", "rebuttal")
CATEGORIES = ("dishonesty", "discrimination", "illegal_activity")
DEFAULT_VARIANT = "default"
MIN_PHRASINGS = 2
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_NAME = re.compile(r"^[a-z0-9_][a-z0-9_-]*$")
_TOP_KEYS = {"id", "title", "category", "unethical_act", "system", "cot_instruction", "history",
             "primer", "trigger", "refusals", "rebuttals", "variants", "grading"}
_TEXT_FIELDS = ("unethical_act", "system", "cot_instruction", "primer", "trigger")


Message = dict[str, str]


@dataclass(frozen=True)
class Conversation:
    """One scenario rendered for one variant: everything needed to build requests."""

    system: str
    history: tuple[Message, ...]
    primer: str
    trigger: str
    refusals: tuple[str, ...]
    rebuttals: tuple[str, ...]

    def opening(self) -> list[Message]:
        """Messages up to and including the primer: the request for the initial response."""
        return [{"role": "system", "content": self.system}, *self.history,
                {"role": "user", "content": self.primer}]

    def closing(self, initial_response: str | Message) -> list[Message]:
        """Messages for the final response: opening + initial response + trigger. The initial
        response is its text, or a whole assistant message (a sampled reply with its trace)."""
        assistant = (initial_response if isinstance(initial_response, dict)
                     else {"role": "assistant", "content": initial_response})
        return [*self.opening(), assistant, {"role": "user", "content": self.trigger}]

    def fixed_response(self, branch: str, phrasing: int) -> str | None:
        """The fixed initial response of a refusal/rebuttal branch; None when sampled."""
        if branch == "refusal":
            return self.refusals[phrasing]
        if branch == "rebuttal":
            return self.rebuttals[phrasing]
        return None

    def phrasings(self, branch: str) -> int:
        """How many fixed texts a branch rotates through (1 for `sampled`)."""
        return {"refusal": len(self.refusals), "rebuttal": len(self.rebuttals)}.get(branch, 1)


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    category: str
    unethical_act: str
    path: Path
    raw: dict[str, Any] = field(repr=False)
    variants: dict[str, dict[str, str]] = field(repr=False)
    grading: dict[str, Any] = field(repr=False)

    @cached_property
    def content_hash(self) -> str:
        """Short hash of the whole file's content: which version of the scenario a job used."""
        return content_hash(self.raw)[:12]

    @property
    def variant_names(self) -> list[str]:
        return list(self.variants) or [DEFAULT_VARIANT]

    def render(self, variant: str, cot_instruction: bool = True) -> Conversation:
        """The conversation of one variant; without the CoT instruction for models whose
        reasoning is native (or not asked for)."""
        values = self.variants.get(variant, {})
        if variant != DEFAULT_VARIANT and variant not in self.variants:
            raise KeyError(f"scenario {self.id} has no variant {variant!r}")

        def sub(text: str) -> str:
            return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)

        raw = self.raw
        system = sub(raw["system"]).rstrip()
        if cot_instruction:
            system += "\n\n" + sub(raw["cot_instruction"]).strip()
        history = tuple({"role": t["role"], "content": sub(t["content"])} for t in raw.get("history", []))
        return Conversation(system=system, history=history, primer=sub(raw["primer"]),
                            trigger=sub(raw["trigger"]),
                            refusals=tuple(sub(t) for t in raw["refusals"]),
                            rebuttals=tuple(sub(t) for t in raw["rebuttals"]))


def load_scenario(path: Path) -> Scenario:
    doc = TomlFile.load(path)
    data = doc.data
    doc.check_keys(data, "", _TOP_KEYS)
    scenario_id = doc.text_field(data, "id", "id")
    if scenario_id != path.stem:
        raise doc.error("id", f"is {scenario_id!r} but must equal the file name {path.stem!r}")
    category = doc.text_field(data, "category", "category")
    if category not in CATEGORIES:
        raise doc.error("category", f"must be one of {', '.join(CATEGORIES)}, got {category!r}")
    title = doc.text_field(data, "title", "title")
    texts: dict[str, str] = {name: doc.text_field(data, name, name) for name in _TEXT_FIELDS}
    for name in ("refusals", "rebuttals"):
        doc.text_list(data, name, name, min_items=MIN_PHRASINGS)
    _check_history(doc)
    variants = _load_variants(doc)
    _check_placeholders(doc, variants)
    grading = doc.get(data, "grading", "grading", dict, {})
    _check_grading(doc, grading)
    return Scenario(id=scenario_id, title=title, category=category,
                    unethical_act=texts["unethical_act"], path=path, raw=data,
                    variants=variants, grading=grading)


def load_scenarios(directory: Path, names: list[str] | None = None) -> list[Scenario]:
    """Load the named scenarios (all `*.toml` in `directory` when names is None)."""
    if names is None:
        paths = sorted(directory.glob("*.toml"))
        if not paths:
            raise ConfigError(directory, None, "no scenario files (*.toml) found")
    else:
        paths = [directory / f"{name}.toml" for name in names]
        for path in paths:
            if not path.is_file():
                raise ConfigError(path, None, f"scenario {path.stem!r} not found in {directory}")
    return [load_scenario(path) for path in paths]


def content_hash(value: Any) -> str:
    """Stable hash of JSON-able content: the basis of job ids."""
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _check_history(doc: TomlFile) -> None:
    history = doc.get(doc.data, "history", "history", list, [])
    for index, turn in enumerate(history):
        where = f"history[{index}]"
        if not isinstance(turn, dict):
            raise doc.error(where, "must be a table with role and content")
        doc.check_keys(turn, where, {"role", "content"})
        role = doc.text_field(turn, f"{where}.role", "role")
        if role not in ("user", "assistant"):
            raise doc.error(f"{where}.role", f"must be 'user' or 'assistant', got {role!r}")
        doc.text_field(turn, f"{where}.content", "content")


def _load_variants(doc: TomlFile) -> dict[str, dict[str, str]]:
    table = doc.get(doc.data, "variants", "variants", dict, {})
    variants: dict[str, dict[str, str]] = {}
    for name, values in table.items():
        where = f"variants.{name}"
        if not _NAME.match(name) or name == DEFAULT_VARIANT:
            raise doc.error(where, "variant names use a-z, 0-9, _ and - (and not 'default')")
        if not isinstance(values, dict):
            raise doc.error(where, "must be a table of placeholder = \"value\"")
        for key, value in values.items():
            if not isinstance(value, str):
                raise doc.error(f"{where}.{key}", "placeholder values must be strings")
        variants[name] = values
    return variants


def _texts_with_fields(data: dict[str, Any]) -> list[tuple[str, str]]:
    pairs = [(name, data[name]) for name in _TEXT_FIELDS]
    pairs += [(f"history[{i}].content", t["content"]) for i, t in enumerate(data.get("history", []))]
    for name in ("refusals", "rebuttals"):
        pairs += [(f"{name}[{i}]", text) for i, text in enumerate(data[name])]
    return pairs


def _check_placeholders(doc: TomlFile, variants: dict[str, dict[str, str]]) -> None:
    for field_name, text in _texts_with_fields(doc.data):
        for placeholder in _PLACEHOLDER.findall(text):
            if not variants:
                raise doc.error(field_name, f"uses placeholder {{{placeholder}}} but the file defines no [variants]")
            for variant, values in variants.items():
                if placeholder not in values:
                    raise doc.error(field_name, f"uses placeholder {{{placeholder}}} that variant {variant!r} does not define")


def _check_grading(doc: TomlFile, grading: dict[str, Any]) -> None:
    """Grading rules are regexes: reject ones that do not compile now, not mid-run."""
    for key, patterns in grading.items():
        if not key.endswith("_patterns"):
            continue
        if not isinstance(patterns, list):
            raise doc.error(f"grading.{key}", "must be a list of regular expressions")
        for index, pattern in enumerate(patterns):
            try:
                re.compile(pattern)
            except (re.error, TypeError) as exc:
                raise doc.error(f"grading.{key}[{index}]", f"invalid regular expression: {exc}") from None
