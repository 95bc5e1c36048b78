"""Redaction: a corpus of real-format secrets that must be caught and look-alikes that must survive.

The secrets are generated here from each provider's documented format (prefix, length, alphabet) with a fixed
seed, so the repository holds no string a secret scanner would flag, and every run tests the same corpus.
"""

from __future__ import annotations

import base64
import json
import random
import string
from pathlib import Path

import pytest

from agentlog.redact import DEFAULT_RULES, Redactor, Rule

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
    assert out["nested"]["password"] == "not-a-secret-as-a-key", "keys' values are text like any other"
    assert redactions == [{"rule": "github_token", "count": 2}, {"rule": "secret_assignment", "count": 1}]


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
