"""Redaction at write time: secrets that match a rule never reach the disk.

Each match becomes ``[REDACTED:<rule>]``; for rules that recognise a secret by its context (``password=…``,
``Authorization: Bearer …``, ``https://user:…@host``) only the secret part is replaced, so the text stays
readable. :meth:`Redactor.redact` walks any JSON value (strings inside objects and arrays, and object keys)
and reports ``[{"rule": ..., "count": ...}]``, which an event records as ``redactions`` so that an audit sees
that something was removed without seeing it.

Two kinds of rule:

- *Text rules* (:data:`DEFAULT_RULES`, :class:`Rule`): regular expressions applied to every string.
- The *field rule* ``secret_field``: in a JSON object, the value of a key named like a secret (``password``,
  ``client_secret``, ``api_key``, ``apiKey``, ``Authorization``, ``access_token``, …, see
  :func:`secret_field_kind`) is replaced whole, even when no text rule knows its format: ``{"password":
  "hunter2"}`` becomes ``{"password": "[REDACTED:secret_field]"}``. An ``Authorization`` value keeps its
  scheme (``"Bearer [REDACTED:secret_field]"``); a ``*token`` value is replaced only when it looks like one (8
  or more characters, no spaces), so ``{"token": " the"}`` and ``{"token": 42}`` survive; a ``pwd`` that is a
  path (``/home/…``) is a directory, not a password. ``{"name": "DB_PASSWORD", "value": "…"}`` pairs (the
  shape of Kubernetes and CI environment lists) count as the key ``DB_PASSWORD``.

The rules favour precision: each recognises a documented key format (prefixes, lengths, alphabets) or an
explicit assignment, so ordinary text that merely mentions passwords or tokens survives. Add rules for your
own formats with :class:`Rule` or a JSON file (``{"rules": [{"name": ..., "pattern": ..., "group": 0}],
"fields": ["session_cookie"]}``) given to :meth:`Redactor.from_file` or named by ``$AGENTLOG_REDACT_RULES``.

Every built-in pattern runs in time linear in its input: quantifiers are bounded, none is nested under an
unbounded one, and runs that could restart at every character are anchored to the start of a run (a
lookbehind) or possessive. A custom pattern is the author's responsibility; keep its quantifiers bounded.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import _json

__all__ = ["DEFAULT_RULES", "FIELD_RULE", "RULES_ENV", "UNREDACTED_FIELDS", "Redactor", "Rule",
           "default_redactor", "redact_batch", "redact_event", "secret_field_kind"]

#: A JSON file of extra rules that :func:`default_redactor` adds to the built-in ones.
RULES_ENV = "AGENTLOG_REDACT_RULES"
#: The name the field rule reports in ``redactions``.
FIELD_RULE = "secret_field"
#: Top-level fields of an event that ``append(..., redact=True)`` leaves alone: names and labels that identify
#: the event (a secret in them is refused by nothing, so do not put one there), and ``redactions`` itself.
UNREDACTED_FIELDS = frozenset({"type", "actor", "level", "visibility", "interaction", "redactions"})
_RULE_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_MAX_DEPTH = 70  # deeper than any event may be (agentlog.event.MAX_DEPTH): left as is, then refused


class Rule:
    """A named pattern; ``group`` is the part of a match that is secret (0: all of it)."""

    __slots__ = ("group", "name", "pattern")

    def __init__(self, name: str, pattern: str | re.Pattern[str], group: int | str = 0) -> None:
        if not isinstance(name, str) or not _RULE_NAME.fullmatch(name):
            raise ValueError(f"a rule name is lower-case letters, digits and _, got {name!r}")
        if name == FIELD_RULE:
            raise ValueError(f"{FIELD_RULE!r} is the field rule's name")
        self.name = name
        self.pattern = re.compile(pattern) if isinstance(pattern, str) else pattern
        if isinstance(group, bool) or not isinstance(group, (int, str)):
            raise ValueError(f"rule {name!r}: group must be a group number or name, got {group!r}")
        if isinstance(group, int) and not 0 <= group <= self.pattern.groups:
            raise ValueError(f"rule {name!r} has no group {group}")
        if isinstance(group, str) and group not in self.pattern.groupindex:
            raise ValueError(f"rule {name!r} has no group named {group!r}")
        if self.pattern.fullmatch(""):
            raise ValueError(f"rule {name!r} matches the empty string")
        self.group = group

    def __repr__(self) -> str:
        return f"Rule({self.name!r}, {self.pattern.pattern!r}, group={self.group!r})"


# --- the built-in text rules ---------------------------------------------------------------------------------

# "key = value", "key: value", '"key": "value"': the separator, and the value (quoted or bare). A value already
# redacted, or a placeholder (null, none, true, ***), is left alone.
_SEP = r"""["']?\s{0,16}[:=]\s{0,16}"""
_BARE = r"""[^\s"',;&)}\]]"""
_PLACEHOLDER = r"(?:null|none|nil|undefined|true|false|\*{3,64})"
_VALUE = (rf"""(?!["']?\[REDACTED:|["']?{_PLACEHOLDER}["']?(?!{_BARE}))"""
          rf"""("[^"\n]{{1,512}}+"|'[^'\n]{{1,512}}+'|{_BARE}{{1,4096}}+)""")
#: Key names whose value is a secret, as a regex alternation (what ``agentlog run`` checks flags against).
_SECRET_KEYS = (r"passw(?:or)?d|passphrase|pwd|secret|client[_-]?secret|token|access[_-]?token|refresh[_-]?token"
                r"|auth[_-]?token|api[_-]?key|apikey|(?:private|secret|signing|encryption|master)[_-]?key")
# In an assignment: any value for a password-like key; "pwd" unless its value is a path (PWD=/home/x is the
# working directory); a token only when the value is 8 or more characters ("Token: 42" is a count).
_ASSIGNED_KEYS = (
    r"passw(?:or)?d|passphrase|secret|client[_-]?secret|api[_-]?key|apikey"
    r"|(?:private|secret|signing|encryption|master)[_-]?key"
    rf"""|pwd(?!{_SEP}["']?(?:[/~]|[A-Za-z]:\\))"""
    rf"""|(?:access[_-]?|refresh[_-]?|auth[_-]?)?token(?={_SEP}["']?{_BARE}{{8}})""")

DEFAULT_RULES: tuple[Rule, ...] = (
    # The body runs to the next "-----" (possessive: never re-scanned), which must be the END line; a key cut
    # off before its END (output that stopped half-way) is redacted to the end of the text.
    Rule("private_key", r"-----BEGIN ((?:[A-Z0-9]{1,16} ){0,4}PRIVATE KEY(?: BLOCK)?)-----"
                        r"(?=\s{0,8}(?:[A-Za-z-]{1,32}:|[A-Za-z0-9+/=]{16}))"
                        r"(?:[^-]|-(?!----)){0,65536}+(?:-----END \1-----|\Z)"),
    Rule("aws_access_key_id", r"\b(?:AKIA|ASIA|ABIA|ACCA|AROA|AIDA)[0-9A-Z]{16}\b"),
    Rule("aws_secret_access_key",
         r"(?i)\baws_?secret_?(?:access_?)?key(?:_?id)?\b[\"']?\s{0,16}[:=]\s{0,16}[\"']?"
         r"([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])", 1),
    Rule("github_token", r"\bgh[pousr]_[A-Za-z0-9]{36,251}\b"),
    Rule("github_pat", r"\bgithub_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}\b|\bgithub_pat_[A-Za-z0-9_]{40,255}\b"),
    Rule("anthropic_key", r"\bsk-ant-(?:api|admin|sid)\d{2}-[A-Za-z0-9_-]{32,512}+"),
    Rule("openai_key", r"(?<![A-Za-z0-9_-])sk-(?!ant-)(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_-]{20,256}"
                       r"T3BlbkFJ[A-Za-z0-9_-]{20,256}+"
                       r"|(?<![A-Za-z0-9_-])sk-(?!ant-)(?:proj-|svcacct-|admin-)[A-Za-z0-9_-]{40,512}+"
                       r"|\bsk-[A-Za-z0-9]{48}\b"),
    Rule("slack_token", r"\bxox[abposre]-[A-Za-z0-9-]{10,512}+"),
    Rule("slack_webhook", r"https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9/_-]{20,512}+"),
    Rule("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"),
    Rule("jwt", r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,8192}+\.eyJ[A-Za-z0-9_-]{8,16384}+\.[A-Za-z0-9_-]{16,8192}+"),
    Rule("bearer_token", r"(?i)\bbearer\s{1,16}((?!\[REDACTED:)[A-Za-z0-9._~+/-]{16,8192}+={0,8})", 1),
    Rule("basic_auth", r"(?i)\bauthorization[\"']?\s{0,16}[:=]\s{0,16}[\"']?basic\s{1,16}"
                       r"((?!\[REDACTED:)[A-Za-z0-9+/]{8,4096}+={0,2})", 1),
    Rule("url_password", r"\b[a-zA-Z][a-zA-Z0-9+.-]{1,20}://[^\s/:@]{1,128}:((?!\[REDACTED:)[^\s/@]{1,256})@", 1),
    # Also inside a name (PGPASSWORD=, userPassword:), but not after a path separator: "/etc/passwd:
    # Permission denied" is not an assignment.
    Rule("secret_assignment", rf"(?i)(?<![/\\])[\"']?(?:{_ASSIGNED_KEYS})[\"']?\s{{0,16}}[:=]\s{{0,16}}"
                              rf"{_VALUE}", 1),
)


# --- the field rule -----------------------------------------------------------------------------------------

_CAMEL_UPPER = re.compile(r"([A-Z]+)([A-Z][a-z])")
_CAMEL_LOWER = re.compile(r"([a-z0-9])([A-Z])")
_WORDS = re.compile(r"[a-z0-9]+")
_PASSWORD_WORDS = frozenset({"password", "passwd", "passphrase", "secret", "apikey"})
_KEY_QUALIFIERS = frozenset({"api", "private", "secret", "signing", "encryption", "master"})
_FIELD_PLACEHOLDER = re.compile(r"(?i)\s{0,16}(?:null|none|nil|undefined|true|false|\*{3,64}"
                                r"|\[REDACTED:[a-z0-9_]{1,64}\])\s{0,16}")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9._~+-]{0,31})(\s{1,16})(\S.*)", re.S)
_PATH = re.compile(r"[/~]|[A-Za-z]:\\")


def secret_field_kind(key: str, extra: frozenset[str] = frozenset()) -> str | None:
    """What a JSON key says about its value: ``"password"`` (any value is secret), ``"pwd"`` (a secret unless
    it is a path), ``"token"`` (secret when it looks like a token), ``"authorization"`` (a scheme and a secret)
    or ``None``. The key is split into words (``clientSecret``, ``CLIENT_SECRET`` and ``client-secret`` are
    ``client secret``) and its last word decides: ``password``, ``passwd``, ``passphrase``, ``secret``,
    ``apikey``, ``pwd``, ``token``, ``authorization``, or ``key`` after ``api``, ``private``, ``secret``,
    ``signing``, ``encryption`` or ``master``. So ``password_reset_url``, ``token_count``, ``max_tokens`` and
    ``public_key`` are not secret. ``extra``: more names (lower case, words joined by ``_``) to treat as
    passwords."""
    if not isinstance(key, str) or not key or len(key) > 256:
        return None
    words: list[str] = _WORDS.findall(_CAMEL_LOWER.sub(r"\1_\2", _CAMEL_UPPER.sub(r"\1_\2", key)).lower())
    if not words:
        return None
    last = words[-1]
    if last in _PASSWORD_WORDS or (last == "key" and len(words) > 1 and words[-2] in _KEY_QUALIFIERS):
        return "password"
    if last in ("token", "pwd", "authorization"):
        return last
    if extra and "_".join(words) in extra:
        return "password"
    return None


def _field_value(kind: str, value: Any) -> Any:
    """``value`` with its secret replaced for a field of ``kind``, or ``None`` if it is left to the text rules."""
    marker = f"[REDACTED:{FIELD_RULE}]"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return marker if kind in ("password", "pwd") else None
    if not isinstance(value, str) or not value.strip() or _FIELD_PLACEHOLDER.fullmatch(value):
        return None
    if kind == "password":
        return marker
    if kind == "pwd":
        return None if _PATH.match(value.lstrip()) else marker
    if kind == "authorization":
        scheme = _SCHEME.fullmatch(value.strip())
        if scheme is not None:
            if _FIELD_PLACEHOLDER.fullmatch(scheme[3]) or scheme[3].startswith("[REDACTED:"):
                return None
            return f"{scheme[1]}{scheme[2]}{marker}"
    # a token, or an Authorization value without a scheme: only what looks like one
    return marker if len(value) >= 8 and not any(ch.isspace() for ch in value) else None


# --- the redactor -------------------------------------------------------------------------------------------

class Redactor:
    """Applies the text rules, in order, to text or to any JSON value, and the field rule to JSON objects."""

    def __init__(self, rules: Iterable[Rule] = DEFAULT_RULES, *, extra: Iterable[Rule] = (),
                 fields: bool = True, extra_fields: Iterable[str] = ()) -> None:
        self.rules: tuple[Rule, ...] = (*rules, *extra)
        names = [rule.name for rule in self.rules]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"rule names must be unique: {', '.join(map(repr, twice))} given twice")
        #: Whether the field rule (``secret_field``) applies; ``extra_fields``: more secret key names.
        self.fields = fields
        self.extra_fields = frozenset(_normal_field(name) for name in extra_fields)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, base: Sequence[Rule] = DEFAULT_RULES) -> Redactor:
        """The built-in rules plus those in a JSON file ``{"rules": [{"name", "pattern", "group"?}],
        "fields"?: [names]}``. Raises ``ValueError`` naming the file and what is wrong with it."""
        where = os.fspath(path)
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except OSError as exc:
            raise ValueError(f"{where}: cannot read the redaction rules: {exc.strerror or exc}") from None
        try:
            config = _json.loads(raw)
        except _json.DecodeError as exc:
            raise ValueError(f"{where}: not valid JSON: {exc}") from None
        if not isinstance(config, dict) or not isinstance(config.get("rules", []), list) \
                or not set(config) <= {"rules", "fields"} or not config:
            raise ValueError(f"{where}: expected {{\"rules\": [...], \"fields\": [...]}}")
        extra = []
        for index, item in enumerate(config.get("rules", [])):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str) \
                    or not isinstance(item.get("pattern"), str):
                raise ValueError(f"{where}: rule {index} needs a string name and pattern")
            unknown = set(item) - {"name", "pattern", "group"}
            if unknown:
                raise ValueError(f"{where}: rule {item['name']!r}: unknown key(s) {', '.join(sorted(unknown))}")
            try:
                pattern = re.compile(item["pattern"])
            except re.error as exc:
                raise ValueError(f"{where}: rule {item['name']!r}: bad pattern: {exc}") from None
            try:
                extra.append(Rule(item["name"], pattern, item.get("group", 0)))
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
        fields = config.get("fields", [])
        if not isinstance(fields, list) or not all(isinstance(f, str) and _normal_field(f) for f in fields):
            raise ValueError(f"{where}: \"fields\" must be a list of key names")
        try:
            return cls(base, extra=extra, extra_fields=fields)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None

    def redact_text(self, text: str) -> tuple[str, Counter[str]]:
        counts: Counter[str] = Counter()
        for rule in self.rules:
            text = _apply(rule, text, counts)
        return text, counts

    def redact(self, value: Any) -> tuple[Any, list[dict[str, Any]]]:
        """``(value with secrets replaced, [{"rule": name, "count": n}, ...])``; containers are copied, the
        input is never modified."""
        counts: Counter[str] = Counter()
        out = self._walk(value, counts, 0)
        return out, self.report(counts)

    def report(self, counts: Counter[str]) -> list[dict[str, Any]]:
        """``counts`` as ``redactions``: the text rules in order, then the field rule."""
        names = [rule.name for rule in self.rules] + [FIELD_RULE]
        return [{"rule": name, "count": counts[name]} for name in names if counts[name]]

    def _walk(self, value: Any, counts: Counter[str], depth: int) -> Any:
        if isinstance(value, str):
            for rule in self.rules:
                value = _apply(rule, value, counts)
            return value
        if depth > _MAX_DEPTH:
            return value  # deeper than an event may be: refused when the event is checked
        if isinstance(value, dict):
            return self._walk_object(value, counts, depth)
        if isinstance(value, (list, tuple)):
            return [self._walk(item, counts, depth + 1) for item in value]
        return value

    def _walk_object(self, value: dict[Any, Any], counts: Counter[str], depth: int) -> dict[Any, Any]:
        named = None  # {"name": "DB_PASSWORD", "value": "..."}: the value is DB_PASSWORD's
        if self.fields and isinstance(value.get("value"), (str, int, float)):
            for label in ("name", "key"):
                if isinstance(value.get(label), str):
                    named = secret_field_kind(value[label], self.extra_fields)
                    break
        out: dict[Any, Any] = {}
        for key, item in value.items():
            kind = None
            if self.fields and isinstance(key, str):
                kind = named if key == "value" and named else secret_field_kind(key, self.extra_fields)
            replaced = None if kind is None else _field_value(kind, item)
            if replaced is not None:
                counts[FIELD_RULE] += 1
                item = replaced
            else:
                item = self._walk(item, counts, depth + 1)
            if isinstance(key, str):
                new_key = self._walk(key, counts, depth + 1)
                if new_key != key:  # a secret as a key: redacted too, without merging two keys into one
                    base, n = new_key, 1
                    while new_key in out or new_key in value:
                        n += 1
                        new_key = f"{base} #{n}"
                    key = new_key
            out[key] = item
        return out


def _normal_field(name: str) -> str:
    return "_".join(_WORDS.findall(_CAMEL_LOWER.sub(r"\1_\2", _CAMEL_UPPER.sub(r"\1_\2", name)).lower()))


def _apply(rule: Rule, text: str, counts: Counter[str], edits: list[tuple[int, int, int]] | None = None) -> str:
    """``text`` with ``rule``'s matches replaced; ``edits`` receives each replaced span of ``text`` as
    ``(start, end, length of the marker)``, in order."""
    marker = f"[REDACTED:{rule.name}]"
    found = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal found
        start, end = match.span(rule.group)
        if start == end:  # an empty match (a custom rule's lookahead, an empty group) hides nothing
            return match.group(0)
        found += 1
        if edits is not None:
            edits.append((start, end, len(marker)))
        if rule.group == 0:
            return marker
        offset = match.start()
        whole = match.group(0)
        return whole[:start - offset] + marker + whole[end - offset:]

    result = rule.pattern.sub(replace, text)
    if found:
        counts[rule.name] += found
    return result


# --- events -------------------------------------------------------------------------------------------------

def redact_event(redact: bool | Redactor, event: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``event`` (its top-level fields by name, ``data`` among them) with secrets replaced in
    ``data`` and in every other field except :data:`UNREDACTED_FIELDS`, and, when anything was replaced,
    ``redactions`` set to what was (added to the counts of a ``redactions`` already given). ``redact``:
    ``True`` for :func:`default_redactor`, or a :class:`Redactor`. What ``append(..., redact=...)`` does."""
    if redact is True:
        redactor = default_redactor()
    elif isinstance(redact, Redactor):
        redactor = redact
    else:
        raise TypeError(f"redact must be True, False or a Redactor, not {redact!r}")
    counts: Counter[str] = Counter()
    out: dict[str, Any] = {}
    for key, value in event.items():
        if not isinstance(key, str) or key in UNREDACTED_FIELDS or value is None:
            out[key] = value
        elif key == "data":
            out[key] = redactor._walk(value, counts, 1) if isinstance(value, dict) else value
        else:
            out[key] = redactor._walk(value, counts, 1)
    if counts:
        out["redactions"] = _merge(event.get("redactions"), redactor.report(counts))
    return out


def redact_batch(redact: bool | Redactor, items: Iterable[Any]) -> list[Any]:
    """:func:`redact_event` for each object of a batch (anything else is left for the batch's own checks to
    refuse); a problem names the item, ``batch item K: ...``, as the batch's checks do."""
    from .errors import InvalidEvent

    out = []
    for index, item in enumerate(items):
        try:
            out.append(redact_event(redact, item) if isinstance(item, Mapping) else item)
        except InvalidEvent as exc:
            raise InvalidEvent(f"batch item {index}: {exc}") from None
    return out


def _merge(given: Any, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if given is None:
        return found
    if not isinstance(given, list) or not all(
            isinstance(item, dict) and isinstance(item.get("rule"), str) and isinstance(item.get("count"), int)
            and not isinstance(item.get("count"), bool) for item in given):
        from .errors import InvalidEvent

        raise InvalidEvent("redactions must be a list of {\"rule\": string, \"count\": integer}")
    merged = [dict(item) for item in given]
    index = {item["rule"]: item for item in merged}
    for item in found:
        if item["rule"] in index:
            index[item["rule"]]["count"] += item["count"]
        else:
            merged.append(dict(item))
    return merged


_DEFAULT: dict[str, Redactor] = {}


def default_redactor() -> Redactor:
    """The built-in rules, plus the file named by ``$AGENTLOG_REDACT_RULES`` if set (read once per path).
    A file that cannot be used raises ``ValueError`` naming the variable, the file and the problem."""
    path = os.environ.get(RULES_ENV) or ""
    redactor = _DEFAULT.get(path)
    if redactor is None:
        try:
            redactor = Redactor.from_file(path) if path else Redactor()
        except ValueError as exc:
            raise ValueError(f"${RULES_ENV}: {exc}") from None
        _DEFAULT[path] = redactor
    return redactor
