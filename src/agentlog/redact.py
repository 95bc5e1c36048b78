"""Redaction at write time: secrets that match a rule never reach the disk.

Each match becomes ``[REDACTED:<rule>]``; for rules that recognise a secret by its context (``password=…``,
``Authorization: Bearer …``, ``https://user:…@host``) only the secret part is replaced, so the text stays
readable. :meth:`Redactor.redact` walks any JSON value (strings inside objects and arrays; keys are left
alone) and reports ``[{"rule": ..., "count": ...}]``, which an event records as ``redactions`` so that an
audit sees that something was removed without seeing it.

The rules favour precision: each recognises a documented key format (prefixes, lengths, alphabets) or an
explicit assignment, so ordinary text that merely mentions passwords or tokens survives. Add rules for your
own formats with :class:`Rule` or a JSON file (``{"rules": [{"name": ..., "pattern": ..., "group": 0}]}``)
given to :meth:`Redactor.from_file` or named by ``$AGENTLOG_REDACT_RULES``.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from . import _json

__all__ = ["DEFAULT_RULES", "RULES_ENV", "Redactor", "Rule", "default_redactor"]

#: A JSON file of extra rules that :func:`default_redactor` adds to the built-in ones.
RULES_ENV = "AGENTLOG_REDACT_RULES"
_RULE_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


class Rule:
    """A named pattern; ``group`` is the part of a match that is secret (0: all of it)."""

    __slots__ = ("group", "name", "pattern")

    def __init__(self, name: str, pattern: str | re.Pattern[str], group: int | str = 0) -> None:
        if not _RULE_NAME.fullmatch(name):
            raise ValueError(f"a rule name is lower-case letters, digits and _, got {name!r}")
        self.name = name
        self.pattern = re.compile(pattern) if isinstance(pattern, str) else pattern
        self.group = group
        if isinstance(group, int) and group > self.pattern.groups:
            raise ValueError(f"rule {name!r} has no group {group}")

    def __repr__(self) -> str:
        return f"Rule({self.name!r}, {self.pattern.pattern!r}, group={self.group!r})"


# Quoted or bare values after "key = " / "key: "; a value already redacted is left alone.
_VALUE = r"""(?!["']?\[REDACTED:)("[^"\n]{1,512}"|'[^'\n]{1,512}'|[^\s"',;&)}\]]{1,512})"""
_SECRET_KEYS = (r"passw(?:or)?d|passwd|pwd|secret|client[_-]?secret|token|access[_-]?token|refresh[_-]?token"
                r"|auth[_-]?token|api[_-]?key|apikey|private[_-]?key")

DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("private_key", r"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?)-----[\s\S]*?-----END \1-----"),
    Rule("aws_access_key_id", r"\b(?:AKIA|ASIA|ABIA|ACCA|AROA|AIDA)[0-9A-Z]{16}\b"),
    Rule("aws_secret_access_key",
         r"(?i)\baws_?secret_?(?:access_?)?key(?:_?id)?\b[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])",
         1),
    Rule("github_token", r"\bgh[pousr]_[A-Za-z0-9]{36,251}\b"),
    Rule("github_pat", r"\bgithub_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}\b|\bgithub_pat_[A-Za-z0-9_]{40,255}\b"),
    Rule("anthropic_key", r"\bsk-ant-(?:api|admin|sid)\d{2}-[A-Za-z0-9_-]{32,}"),
    Rule("openai_key", r"\bsk-(?!ant-)(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_-]{20,}T3BlbkFJ[A-Za-z0-9_-]{20,}"
                       r"|\bsk-(?!ant-)(?:proj-|svcacct-|admin-)[A-Za-z0-9_-]{40,}|\bsk-[A-Za-z0-9]{48}\b"),
    Rule("slack_token", r"\bxox[abposre]-(?:[0-9]+-)*[A-Za-z0-9-]{10,}"),
    Rule("slack_webhook", r"https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9/_-]{20,}"),
    Rule("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"),
    Rule("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}"),
    Rule("bearer_token", r"(?i)\bbearer\s+((?!\[REDACTED:)[A-Za-z0-9._~+/-]{16,}=*)", 1),
    Rule("url_password", r"\b[a-zA-Z][a-zA-Z0-9+.-]{1,20}://[^\s/:@]{1,128}:((?!\[REDACTED:)[^\s/@]{1,256})@", 1),
    Rule("secret_assignment", rf"(?i)(?<![A-Za-z0-9])[\"']?(?:{_SECRET_KEYS})[\"']?\s*[:=]\s*{_VALUE}", 1),
)


class Redactor:
    """Applies rules, in order, to text or to any JSON value."""

    def __init__(self, rules: Iterable[Rule] = DEFAULT_RULES, *, extra: Iterable[Rule] = ()) -> None:
        self.rules: tuple[Rule, ...] = (*rules, *extra)
        names = [rule.name for rule in self.rules]
        if len(names) != len(set(names)):
            raise ValueError("rule names must be unique")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, base: Sequence[Rule] = DEFAULT_RULES) -> Redactor:
        """The built-in rules plus those in a JSON file ``{"rules": [{"name", "pattern", "group"?}]}``."""
        with open(path, "rb") as fh:
            try:
                config = _json.loads(fh.read())
            except _json.DecodeError as exc:
                raise ValueError(f"{path}: not valid JSON: {exc}") from None
        items = config.get("rules") if isinstance(config, dict) else None
        if not isinstance(items, list):
            raise ValueError(f"{path}: expected {{\"rules\": [...]}}")
        extra = []
        for index, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str) \
                    or not isinstance(item.get("pattern"), str):
                raise ValueError(f"{path}: rule {index} needs a string name and pattern")
            try:
                extra.append(Rule(item["name"], item["pattern"], item.get("group", 0)))
            except re.error as exc:
                raise ValueError(f"{path}: rule {item['name']!r}: bad pattern: {exc}") from None
        return cls(base, extra=extra)

    def redact_text(self, text: str) -> tuple[str, Counter[str]]:
        counts: Counter[str] = Counter()
        for rule in self.rules:
            text = _apply(rule, text, counts)
        return text, counts

    def redact(self, value: Any) -> tuple[Any, list[dict[str, Any]]]:
        """``(value with secrets replaced, [{"rule": name, "count": n}, ...])``; containers are copied, the
        input is never modified."""
        counts: Counter[str] = Counter()
        out = self._walk(value, counts)
        return out, [{"rule": rule.name, "count": counts[rule.name]} for rule in self.rules if counts[rule.name]]

    def _walk(self, value: Any, counts: Counter[str]) -> Any:
        if isinstance(value, str):
            for rule in self.rules:
                value = _apply(rule, value, counts)
            return value
        if isinstance(value, dict):
            return {key: self._walk(item, counts) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._walk(item, counts) for item in value]
        return value


def _apply(rule: Rule, text: str, counts: Counter[str]) -> str:
    marker = f"[REDACTED:{rule.name}]"
    found = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal found
        found += 1
        if rule.group == 0:
            return marker
        start, end = match.span(rule.group)
        offset = match.start()
        whole = match.group(0)
        return whole[:start - offset] + marker + whole[end - offset:]

    result = rule.pattern.sub(replace, text)
    if found:
        counts[rule.name] += found
    return result


_DEFAULT: list[Redactor] = []


def default_redactor() -> Redactor:
    """The built-in rules, plus the file named by ``$AGENTLOG_REDACT_RULES`` if set (read once)."""
    if not _DEFAULT:
        path = os.environ.get(RULES_ENV)
        _DEFAULT.append(Redactor.from_file(path) if path else Redactor())
    return _DEFAULT[0]
