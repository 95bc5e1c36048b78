"""Redaction: a corpus of real-format secrets that must be caught and look-alikes that must survive.

The secrets are generated here from each provider's documented format (prefix, length, alphabet) with a fixed
seed, so the repository holds no string a secret scanner would flag, and every run tests the same corpus.
"""

from __future__ import annotations

import base64
import json
import random
import re
import string
from pathlib import Path
from typing import Any

import pytest

import agentlog
from agentlog import InvalidEvent
from agentlog.redact import DEFAULT_RULES, FIELD_RULE, RULES_ENV, Redactor, Rule, default_redactor, redact_event

rng = random.Random(20261122)
ALNUM = string.ascii_letters + string.digits
UPPER_DIGITS = string.ascii_uppercase + string.digits
URLSAFE = ALNUM + "-_"


def r(alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def b64url(obj: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


JWT = f"{b64url({'alg': 'HS256', 'typ': 'JWT'})}.{b64url({'sub': '1234567890', 'iat': 1516239022})}.{r(URLSAFE, 43)}"
PEM_BODY = "\n".join(r(ALNUM + "+/", 64) for _ in range(5))

def case(template: str, secret: str, rule: str) -> tuple[str, str, str]:
    """``(text, secret, rule)``: ``template`` with ``{}`` replaced by the secret."""
    return template.replace("{}", secret), secret, rule


#: (text containing exactly one secret, the secret, the rule that must catch it)
SECRETS: list[tuple[str, str, str]] = [
    case("key id {}", "AKIA" + r(UPPER_DIGITS, 16), "aws_access_key_id"),
    case("role creds {} expire soon", "ASIA" + r(UPPER_DIGITS, 16), "aws_access_key_id"),
    case("aws_secret_access_key = {}", r(ALNUM + "/+", 40), "aws_secret_access_key"),
    case('AWS_SECRET_ACCESS_KEY="{}"', r(ALNUM + "/+", 40), "aws_secret_access_key"),
    *[case("export GITHUB_TOKEN={}", p + r(ALNUM, 36), "github_token") for p in ("ghp_", "gho_", "ghs_", "ghu_")],
    case("token for the bot: {}", f"github_pat_{r(ALNUM, 22)}_{r(ALNUM, 59)}", "github_pat"),
    case("OPENAI_API_KEY={}", f"sk-proj-{r(URLSAFE, 74)}T3BlbkFJ{r(URLSAFE, 74)}", "openai_key"),
    case("legacy openai key {} in a script", f"sk-{r(ALNUM, 48)}", "openai_key"),
    case("{}", f"sk-svcacct-{r(URLSAFE, 64)}", "openai_key"),
    case("ANTHROPIC_API_KEY={}", f"sk-ant-api03-{r(URLSAFE, 93)}AA", "anthropic_key"),
    case("admin key {}", f"sk-ant-admin01-{r(URLSAFE, 93)}AA", "anthropic_key"),
    case("slack bot {}", f"xoxb-{r(string.digits, 12)}-{r(string.digits, 13)}-{r(ALNUM, 24)}", "slack_token"),
    case("user token {}", f"xoxp-{r(string.digits, 12)}-{r(string.digits, 12)}-{r(string.digits, 13)}-"
                          f"{r('abcdef0123456789', 32)}", "slack_token"),
    case("hook {} posted", f"https://hooks.slack.com/services/T{r(UPPER_DIGITS, 8)}/B{r(UPPER_DIGITS, 10)}/"
                           f"{r(ALNUM, 24)}", "slack_webhook"),
    case("maps key {}", f"AIza{r(URLSAFE, 35)}", "google_api_key"),
    case("GOOGLE_API_KEY='{}'", f"AIza{r(URLSAFE, 35)}", "google_api_key"),
    case("cookie session={}; path=/", JWT, "jwt"),
    case("curl -H 'Authorization: Bearer {}' https://api.example.com", r(ALNUM + "-._~", 40), "bearer_token"),
    case("authorization: bearer {}", r(ALNUM, 32), "bearer_token"),
    *[case("{}", f"-----BEGIN {kind}PRIVATE KEY-----\n{PEM_BODY}\n-----END {kind}PRIVATE KEY-----", "private_key")
      for kind in ("RSA ", "OPENSSH ", "", "EC ")],
    case("db password={} host=db", r(ALNUM + "!#%", 14), "secret_assignment"),
    case('{"password": "{}"}', r(ALNUM, 12), "secret_assignment"),
    case("SECRET: {}", r(ALNUM, 20), "secret_assignment"),
    case("--token={} --verbose", r(ALNUM, 30), "secret_assignment"),
    case("api_key: '{}'", r(ALNUM, 24), "secret_assignment"),
    case("client_secret={}&grant_type=client_credentials", r(ALNUM, 32), "secret_assignment"),
    case("postgres://app:{}@db.internal:5432/prod", r(ALNUM, 16), "url_password"),
    case("git clone https://alice:{}@git.example.com/repo.git", r(ALNUM, 20), "url_password"),
    case("amqp://guest:{}@rabbit/", r(ALNUM, 12), "url_password"),
    case("> Authorization: Basic {}", base64.b64encode(f"alice:{r(ALNUM, 12)}".encode()).decode(), "basic_auth"),
    case('{"authorization": "basic {}"}', base64.b64encode(f"svc:{r(ALNUM, 16)}".encode()).decode(), "basic_auth"),
    case("env PGPASSWORD={} psql -h db", r(ALNUM, 10), "secret_assignment"),
    case("userPassword: {}", r(ALNUM, 9), "secret_assignment"),
    case("SECRET_KEY = '{}'", r(ALNUM + "!@#$%^", 50), "secret_assignment"),
    case("Server=db;Uid=sa;Pwd={};", r(ALNUM, 11), "secret_assignment"),
    case("spring.datasource.password={}", r(ALNUM, 12), "secret_assignment"),
    case("refresh_token: {}", r(ALNUM, 40), "secret_assignment"),
    # A key whose output stopped before its END line is still removed, to the end of the text.
    case("{}", f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY[:150]}", "private_key"),
    case("{}", f"-----BEGIN PGP PRIVATE KEY BLOCK-----\nVersion: GnuPG v2\n\n{PEM_BODY}\n=abcd\n"
               "-----END PGP PRIVATE KEY BLOCK-----", "private_key"),
]

#: Text that mentions secrets, or looks like a key, but holds none: it must come out unchanged.
LOOKALIKES: list[str] = [
    "Please enter your password to continue.",
    "The password field is required.",
    "password reset email sent to alice@example.com",
    "max_tokens=4096",
    "tokens: 1532 prompt, 210 completion",
    "secretary=alice",
    "token_count=12",
    "Use a Bearer token in the Authorization header.",
    "Authorization: Basic realm",
    "AKIA is the prefix of AWS access key ids",
    "AKIA123",
    "ghp_short",
    "the branch gho_st_feature is merged",
    "sk-12345",
    "sk-ant-",
    "task-ant-colony simulation",
    "xoxb is a Slack bot token prefix",
    "AIza is a Google key prefix",
    "eyJhbGciOiJIUzI1NiJ9 is base64 of a JWT header",
    "version 1.2.3.4 released",
    "https://example.com/path?user=alice",
    "https://alice@example.com/repo.git",
    "mailto:bob@example.com",
    "ssh git@github.com:owner/repo.git",
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----",
    "sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "uuid 0195f0c4-8e6a-7c1b-9d2e-3f4a5b6c7d8e",
    "commit 4b825dc642cb6eb9a060e54bf8d69288fbee4904",
    "the secret to good logs is fsync",
    "password_policy: strict",
    # Words and counts that share a secret's name (issue 5's review list).
    "pwd",
    "$ pwd\n/home/alice/project",
    "PWD=/home/alice/project",
    "Token: 42",
    "token: expired",
    "max_token=4096",
    "--max-tokens 4096",
    "/etc/passwd:",
    "cat: /etc/passwd: Permission denied",
    "password_reset_url=https://example.com/reset?user=alice",
    "password: null",
    "api_key: ***",
    "secret_name=prod-db",
    "-----BEGIN PRIVATE KEY----- and -----END PRIVATE KEY----- frame a key",
    "Authorization: Bearer short",
]


@pytest.mark.parametrize(("text", "secret", "rule"), SECRETS, ids=[f"{i}-{s[2]}" for i, s in enumerate(SECRETS)])
def test_every_secret_in_the_corpus_is_caught(text: str, secret: str, rule: str) -> None:
    out, counts = Redactor().redact_text(text)
    assert f"[REDACTED:{rule}]" in out, out
    assert sum(counts.values()) == 1 and counts[rule] == 1, counts
    assert secret not in out and secret[4:-4] not in out


@pytest.mark.parametrize("text", LOOKALIKES)
def test_a_lookalike_survives(text: str) -> None:
    out, counts = Redactor().redact_text(text)
    assert out == text and not counts


def test_the_corpus_is_as_large_as_promised() -> None:
    assert len(SECRETS) >= 30 and len(LOOKALIKES) >= 30
    assert {rule for _, _, rule in SECRETS} == {rule.name for rule in DEFAULT_RULES}, "a rule is untested"


def test_context_rules_keep_the_context() -> None:
    out, _ = Redactor().redact_text("postgres://app:hunter2hunter2@db/prod and password=hunter2")
    assert out == "postgres://app:[REDACTED:url_password]@db/prod and password=[REDACTED:secret_assignment]"
    again, counts = Redactor().redact_text(out)
    assert again == out and not counts, "redacting twice must change nothing"


def test_json_values_are_walked_copied_and_counted() -> None:
    secret = "ghp_" + r(ALNUM, 36)
    value = {"cmd": f"git push https://x:{secret}@github.com/o/r", "env": [f"GH={secret}", 3, None],
             "nested": {"password": "not-a-secret-as-a-key", "note": f"token: {r(ALNUM, 20)}"}}
    original = json.loads(json.dumps(value))
    out, redactions = Redactor().redact(value)
    assert value == original, "the input was modified"
    assert secret not in json.dumps(out)
    assert out["nested"]["password"] == "[REDACTED:secret_field]", "a secret-named key's value is a secret"
    assert redactions == [{"rule": "github_token", "count": 2}, {"rule": "secret_assignment", "count": 1},
                          {"rule": "secret_field", "count": 1}]


def test_rules_can_be_extended_by_configuration(tmp_path: Path) -> None:
    config = tmp_path / "rules.json"
    config.write_text(json.dumps({"rules": [{"name": "internal_token", "pattern": r"\bitk_[a-f0-9]{32}\b"}]}))
    redactor = Redactor.from_file(config)
    out, counts = redactor.redact_text("use itk_" + "ab12" * 8 + " today")
    assert out == "use [REDACTED:internal_token] today" and counts == {"internal_token": 1}
    assert Redactor(extra=[Rule("mine", r"MINE-\d+")]).redact_text("MINE-42")[0] == "[REDACTED:mine]"
    config.write_text('{"rules": [{"name": "Bad Name", "pattern": "x"}]}')
    with pytest.raises(ValueError, match="rule name"):
        Redactor.from_file(config)
    config.write_text('{"rules": [{"name": "broken", "pattern": "("}]}')
    with pytest.raises(ValueError, match="bad pattern"):
        Redactor.from_file(config)


@pytest.mark.parametrize(("config", "problem"), [
    ('{"rules": [{"name": "broken", "pattern": "tk-[0-9"}]}',
     r"rules.json: rule 'broken': bad pattern: unterminated character set at position 3"),
    ('{"rules": [{"name": "rep", "pattern": "a{2,1}"}]}',
     r"rule 'rep': bad pattern: min repeat greater than max"),
    ('{"rules": [{"name": "grp", "pattern": "k=(x)", "group": 2}]}', r"rule 'grp' has no group 2"),
    ('{"rules": [{"name": "grp", "pattern": "k=(?P<v>x)", "group": "w"}]}', r"rule 'grp' has no group named 'w'"),
    ('{"rules": [{"name": "empty", "pattern": "x*"}]}', r"rule 'empty' matches the empty string"),
    ('{"rules": [{"name": "typo", "patern": "x"}]}', r"rule 0 needs a string name and pattern"),
    ('{"rules": [{"name": "typo", "pattern": "x", "flags": "i"}]}', r"rule 'typo': unknown key\(s\) flags"),
    ('{"rules": [{"name": "secret_field", "pattern": "x"}]}', r"'secret_field' is the field rule's name"),
    ('{"rules": [{"name": "github_token", "pattern": "x"}]}',
     r"rules.json: rule names must be unique: 'github_token' given twice"),
    ('{"rules": [], "fields": "cookie"}', r'"fields" must be a list of key names'),
    ('{"rule": []}', r'expected \{"rules"'),
    ('{"rules": [', r"rules.json: not valid JSON"),
])
def test_a_bad_rules_file_says_which_file_which_rule_and_what(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              config: str, problem: str) -> None:
    path = tmp_path / "rules.json"
    path.write_text(config)
    with pytest.raises(ValueError, match=problem):
        Redactor.from_file(path)
    monkeypatch.setenv(RULES_ENV, str(path))
    with pytest.raises(ValueError, match=rf"^\${RULES_ENV}: {re.escape(str(path))}: "):
        default_redactor()


def test_a_missing_rules_file_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RULES_ENV, str(tmp_path / "nope.json"))
    with pytest.raises(ValueError, match=r"nope.json: cannot read the redaction rules: No such file"):
        default_redactor()


def test_the_rules_file_can_name_more_secret_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "rules.json"
    path.write_text('{"fields": ["session-cookie"], "rules": [{"name": "tk", "pattern": "TK-[0-9]{6}"}]}')
    monkeypatch.setenv(RULES_ENV, str(path))
    out, redactions = default_redactor().redact({"sessionCookie": "abc", "cookie_jar": "kept", "n": "TK-123456"})
    assert out == {"sessionCookie": "[REDACTED:secret_field]", "cookie_jar": "kept", "n": "[REDACTED:tk]"}
    assert redactions == [{"rule": "tk", "count": 1}, {"rule": FIELD_RULE, "count": 1}]
    monkeypatch.delenv(RULES_ENV)
    assert default_redactor().redact({"sessionCookie": "abc"})[1] == [], "the built-in rules alone again"


# --- the field rule: values of secret-named keys ----------------------------------------------------------

#: (data, what it must become): each value is under a key that names a secret, in no format a text rule knows.
SECRET_FIELDS: list[tuple[dict[str, object], dict[str, object]]] = [
    ({"password": "hunter2"}, {"password": "[REDACTED:secret_field]"}),
    ({"api_key": "k-1"}, {"api_key": "[REDACTED:secret_field]"}),
    ({"apiKey": "k-1", "APIKey": "k-2", "X-Api-Key": "k-3"},
     {"apiKey": "[REDACTED:secret_field]", "APIKey": "[REDACTED:secret_field]",
      "X-Api-Key": "[REDACTED:secret_field]"}),
    ({"Authorization": "Bearer x"}, {"Authorization": "Bearer [REDACTED:secret_field]"}),
    ({"authorization": "Basic realm"}, {"authorization": "Basic [REDACTED:secret_field]"}),
    ({"client_secret": "abc", "clientSecret": 123456}, {"client_secret": "[REDACTED:secret_field]",
                                                        "clientSecret": "[REDACTED:secret_field]"}),
    ({"DB_PASSWORD": "pw", "SECRET_KEY": "dj", "private_key": "k", "passphrase": "open sesame"},
     {"DB_PASSWORD": "[REDACTED:secret_field]", "SECRET_KEY": "[REDACTED:secret_field]",
      "private_key": "[REDACTED:secret_field]", "passphrase": "[REDACTED:secret_field]"}),
    ({"access_token": "abcdefgh12", "refreshToken": "r-12345678"},
     {"access_token": "[REDACTED:secret_field]", "refreshToken": "[REDACTED:secret_field]"}),
    ({"pwd": "hunter2"}, {"pwd": "[REDACTED:secret_field]"}),
    ({"env": [{"name": "GITHUB_TOKEN", "value": "tok-12345678"}, {"name": "HOME", "value": "/root"}]},
     {"env": [{"name": "GITHUB_TOKEN", "value": "[REDACTED:secret_field]"}, {"name": "HOME", "value": "/root"}]}),
    ({"db": {"user": "app", "password": "p"}}, {"db": {"user": "app", "password": "[REDACTED:secret_field]"}}),
]

#: Data whose keys look like secrets' but whose values are not secrets: it must come out unchanged.
FIELD_LOOKALIKES: list[dict[str, object]] = [
    {"pwd": "/home/alice/project"},
    {"PWD": "~/src"},
    {"token": 42},
    {"token": " the"},
    {"token": "eos"},
    {"Token": "42"},
    {"max_tokens": 4096, "token_count": 12, "tokens": "many words here"},
    {"password_reset_url": "https://example.com/reset", "password_policy": "strict", "password_hash_alg": "argon2"},
    {"public_key": "ssh-ed25519 AAAAC3Nza", "key": "value", "keyboard": "us"},
    {"password": None, "secret": True, "api_key": ""},
    {"password": "********", "token": "null"},
    {"secretary": "alice", "tokenizer": "cl100k"},
]


@pytest.mark.parametrize(("data", "expected"), SECRET_FIELDS)
def test_a_secret_named_field_is_redacted_whatever_its_format(data: dict[str, object],
                                                              expected: dict[str, object]) -> None:
    out, redactions = Redactor().redact(data)
    assert out == expected
    assert redactions == [{"rule": "secret_field", "count": json.dumps(expected).count("[REDACTED:secret_field]")}]


@pytest.mark.parametrize("data", FIELD_LOOKALIKES)
def test_a_field_that_only_looks_secret_survives(data: dict[str, object]) -> None:
    assert Redactor().redact(data) == (data, [])


def test_a_text_rule_still_applies_to_a_secret_named_field_it_knows() -> None:
    """The field rule replaces the value whole; text rules keep applying to the values it leaves."""
    token = "ghp_" + r(ALNUM, 36)
    out, redactions = Redactor().redact({"token": f"{token} ", "note": f"push with {token}"})
    assert out == {"token": "[REDACTED:github_token] ", "note": "push with [REDACTED:github_token]"}
    assert redactions == [{"rule": "github_token", "count": 2}]
    assert Redactor(fields=False).redact({"password": "hunter2"}) == ({"password": "hunter2"}, [])


def test_a_secret_used_as_a_key_is_redacted_without_losing_an_entry() -> None:
    a, b = (f"https://u:{r(ALNUM, 12)}@db.example.com" for _ in range(2))
    out, redactions = Redactor().redact({a: 1, b: 2})
    assert sorted(out.items()) == [("https://u:[REDACTED:url_password]@db.example.com", 1),
                                   ("https://u:[REDACTED:url_password]@db.example.com #2", 2)]
    assert redactions == [{"rule": "url_password", "count": 2}]


# --- redaction on append ----------------------------------------------------------------------------------------

def test_append_with_redact_removes_secrets_before_anything_is_written(tmp_path: Path) -> None:
    token, password = "ghp_" + r(ALNUM, 36), r(ALNUM, 14)
    with agentlog.open_log(tmp_path / "root", spool_dir=False) as log:
        plain = log.append("s", "note", data={"content": f"token {token}"})
        ev = log.append("s", "note", actor="alice", redact=True, note=f"key {token}",
                        data={"content": f"password={password}", "auth": {"password": password}})
        assert ev.data == {"content": "password=[REDACTED:secret_assignment]",
                           "auth": {"password": "[REDACTED:secret_field]"}}
        assert ev.extra == {"note": "key [REDACTED:github_token]", "redactions": [
            {"rule": "github_token", "count": 1}, {"rule": "secret_assignment", "count": 1},
            {"rule": "secret_field", "count": 1}]}
        stored = list(log.read("s"))[1]
        assert stored.data == ev.data and stored.extra["redactions"] == ev.extra["redactions"]
        clean = log.append("s", "note", data={"content": "nothing to hide"}, redact=True)
        assert "redactions" not in clean.extra, "nothing removed, nothing recorded"
    raw = (tmp_path / "root" / "logs" / "s.jsonl").read_bytes()
    assert raw.count(token.encode()) == 1 and plain.data["content"].encode() in raw, "only the plain append has it"
    assert password.encode() not in raw
    lines = [json.loads(line) for line in raw.splitlines()]
    assert lines[1]["redactions"][0] == {"rule": "github_token", "count": 1}


def test_append_many_with_a_custom_redactor_and_given_redactions(tmp_path: Path) -> None:
    mine = Redactor(extra=[Rule("ticket_key", r"TK-[0-9]{6}")])
    with agentlog.open_log(tmp_path / "root", spool_dir=False) as log:
        events = log.append_many("s", [
            {"type": "a", "data": {"k": "TK-123456 and TK-654321"}},
            {"type": "b", "data": {"k": "TK-111111"}, "redactions": [{"rule": "ticket_key", "count": 2},
                                                                     {"rule": "earlier", "count": 1}]},
            {"type": "TK-000000", "actor": "TK-999999", "data": {}},
        ], redact=mine)
        assert [ev.data["k"] for ev in events[:2]] == ["[REDACTED:ticket_key] and [REDACTED:ticket_key]",
                                                       "[REDACTED:ticket_key]"]
        assert events[0].extra["redactions"] == [{"rule": "ticket_key", "count": 2}]
        assert events[1].extra["redactions"] == [{"rule": "ticket_key", "count": 3}, {"rule": "earlier", "count": 1}]
        assert (events[2].type, events[2].actor) == ("TK-000000", "TK-999999"), "labels are names: left alone"
        with pytest.raises(InvalidEvent, match="batch item 0: redactions must be a list"):
            log.append_many("s", [{"type": "a", "data": {"k": "TK-123456"}, "redactions": "some"}], redact=mine)
        with pytest.raises(InvalidEvent, match="data must be a JSON object"):
            log.append("s", "a", data=["TK-123456"], redact=mine)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="redact must be"):
            log.append("s", "a", redact="yes")  # type: ignore[arg-type]
        assert len(list(log.read("s"))) == 3, "a refused event or batch writes nothing"


def test_redact_event_copies_and_leaves_labels_alone() -> None:
    event = {"type": "password=hunter22", "actor": "a", "data": {"x": "password=hunter22"}, "task": "T-1"}
    out = redact_event(True, event)
    assert event["data"] == {"x": "password=hunter22"}, "the input was modified"
    assert out == {"type": "password=hunter22", "actor": "a", "data": {"x": "password=[REDACTED:secret_assignment]"},
                   "task": "T-1", "redactions": [{"rule": "secret_assignment", "count": 1}]}


# --- ReDoS: every pattern runs in linear time ---------------------------------------------------------------

def _repeats(pattern: re.Pattern[str]) -> list[tuple[str, int, int, list[tuple[str, int, int]]]]:
    """Every quantifier of ``pattern``: (kind, min, max, the quantifiers nested inside it)."""
    from re import _constants as c  # type: ignore[attr-defined]
    from re import _parser  # type: ignore[attr-defined]

    found: list[tuple[str, int, int, list[tuple[str, int, int]]]] = []

    def walk(items: Any) -> list[tuple[str, int, int]]:
        inner: list[tuple[str, int, int]] = []
        for op, av in items:
            if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
                lo, hi, body = av
                nested = walk(body)
                found.append((str(op), lo, hi, nested))
                inner += [(str(op), lo, hi), *nested]
            elif op is c.SUBPATTERN:
                inner += walk(av[3])
            elif op in (c.ASSERT, c.ASSERT_NOT):
                inner += walk(av[1])
            elif op is c.ATOMIC_GROUP:
                inner += walk(av)
            elif op is c.BRANCH:
                for branch in av[1]:
                    inner += walk(branch)
            elif op is c.GROUPREF_EXISTS:
                inner += walk(av[1]) + (walk(av[2]) if av[2] else [])
        return inner

    walk(_parser.parse(pattern.pattern, pattern.flags))
    return found


def _every_builtin_pattern() -> list[tuple[str, re.Pattern[str]]]:
    from agentlog import runner

    return [(rule.name, rule.pattern) for rule in DEFAULT_RULES] + [("runner._SECRET_FLAG", runner._SECRET_FLAG)]


@pytest.mark.parametrize(("name", "pattern"), _every_builtin_pattern(), ids=[n for n, _ in _every_builtin_pattern()])
def test_every_pattern_has_bounded_quantifiers_and_none_nested_unboundedly(name: str,
                                                                          pattern: re.Pattern[str]) -> None:
    """Structural: no `*`, `+` or `{n,}` anywhere (each match attempt is bounded), and a quantifier inside
    another multiplies to a small bound (no nested quantifiers that backtrack exponentially)."""
    from re import _constants as c  # type: ignore[attr-defined]

    for kind, _lo, hi, nested in _repeats(pattern):
        assert hi != c.MAXREPEAT, f"{name}: an unbounded quantifier"
        assert hi <= 65536, f"{name}: a quantifier bound of {hi}"
        for _inner_kind, _inner_lo, inner_hi in nested:
            assert hi * inner_hi <= 1024 or (hi <= 1 or inner_hi <= 1), \
                f"{name}: {{..{inner_hi}}} nested in {{..{hi}}} ({kind})"


ADVERSARIAL_PREFIXES = [
    "-----BEGIN PRIVATE KEY-----", "-----BEGIN RSA PRIVATE KEY-----\n", "-----BEGIN ", "-----END ", "AKIA",
    "aws_secret_access_key=", "aws_secret_key", "ghp_", "github_pat_", "sk-", "sk-ant-api03-", "sk-proj-",
    "xoxb-", "xoxb-1-", "https://hooks.slack.com/services/", "AIza", "eyJ", "eyJ-", "eyJa.", "eyJaaaaaaaaa.eyJ",
    "Bearer ", "Authorization: Basic ", "http://", "http://u:", "a://b:", "password=", "password", 'password="',
    '"password": "', "token: ", "pwd=", "--",
]
ADVERSARIAL_FILLERS = ["a", "-", " ", ":", "1-", "a_"]
SIZE = 100_000


def _adversarial_inputs() -> list[str]:
    inputs = []
    for prefix in ADVERSARIAL_PREFIXES:
        inputs.append((prefix * (SIZE // len(prefix) + 1))[:SIZE])  # the prefix again and again
        for filler in ADVERSARIAL_FILLERS:  # the prefix, then a long run without a terminator
            inputs.append(prefix + (filler * SIZE)[:SIZE - len(prefix)])
        inputs.append(((prefix + "a" * 30 + " ") * SIZE)[:SIZE])  # many near-misses
    return inputs


@pytest.mark.slow
@pytest.mark.parametrize("rule", DEFAULT_RULES, ids=[rule.name for rule in DEFAULT_RULES])
def test_every_rule_finishes_quickly_on_100_kb_of_adversarial_input(rule: Rule) -> None:
    """Each rule against every adversarial input: linear patterns take milliseconds per input; a backtracking
    one takes minutes. The bound is generous (2 s per input, on a loaded machine), never close."""
    import time

    redactor = Redactor([rule], fields=False)
    slowest = 0.0
    for text in _adversarial_inputs():
        started = time.perf_counter()
        redactor.redact_text(text)
        slowest = max(slowest, time.perf_counter() - started)
        assert slowest < 2.0, f"{rule.name} took {slowest:.1f} s on {text[:40]!r}... ({len(text)} characters)"
