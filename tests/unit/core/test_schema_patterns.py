from __future__ import annotations

import jsonschema_rs
import pytest

from core.alert_schemas import CALLBACK_URL_PATTERN
from core.schemas import EMAIL_PATTERN, EMAIL_RE
from core.ssrf import CallbackUrlRefused, parse_callback_url

# Every character up to CJK punctuation, and the byte-order mark, where regex dialects differ.
CHARACTERS = [chr(code) for code in range(0x3100)] + ["\ufeff"]


class TestEmailPattern:
    def test_json_schema_pattern_accepts_exactly_what_the_validator_accepts(self) -> None:
        documented = jsonschema_rs.validator_for({"type": "string", "pattern": EMAIL_PATTERN})
        for character in CHARACTERS:
            for email in (f"a{character}b@example.com", f"ab@exa{character}mple.com"):
                assert documented.is_valid(email) == bool(EMAIL_RE.match(email)), repr(email)


class TestCallbackUrlPattern:
    @pytest.mark.parametrize(
        "url",
        [
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "https://exa mple.com/",
            "https://example.com/a\\b",
            "https://example.com/\x7f",
            "//example.com/",
            "example.com",
        ],
    )
    def test_what_the_pattern_refuses_the_guard_refuses(self, url: str) -> None:
        documented = jsonschema_rs.validator_for(
            {"type": "string", "pattern": CALLBACK_URL_PATTERN}
        )
        assert not documented.is_valid(url)
        with pytest.raises(CallbackUrlRefused):
            parse_callback_url(url)

    @pytest.mark.parametrize(
        "url", ["https://example.com", "HTTP://93.184.216.34:8080/hook?x=1#f", "https://ex.com/ä"]
    )
    def test_what_the_guard_parses_the_pattern_accepts(self, url: str) -> None:
        documented = jsonschema_rs.validator_for(
            {"type": "string", "pattern": CALLBACK_URL_PATTERN}
        )
        assert documented.is_valid(url)
        parse_callback_url(url)
