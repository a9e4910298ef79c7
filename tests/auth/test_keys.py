"""The key format check: a property test and the edges."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from litellm_cloud._errors import InvalidApiKey
from litellm_cloud.auth.keys import KEY_PREFIX, MAX_BODY, MIN_BODY, check_format, is_well_formed

BODY_CHARS = string.ascii_letters + string.digits + "_-"


@given(st.text(alphabet=BODY_CHARS, min_size=MIN_BODY, max_size=MAX_BODY))
def test_every_well_formed_key_passes(body: str) -> None:
    assert check_format(KEY_PREFIX + body) == KEY_PREFIX + body


@given(st.text(max_size=200))
def test_the_check_agrees_with_the_definition_and_never_echoes_the_key(text: str) -> None:
    expected = (
        text.startswith(KEY_PREFIX)
        and MIN_BODY <= len(text) - len(KEY_PREFIX) <= MAX_BODY
        and all(c in BODY_CHARS for c in text[len(KEY_PREFIX):])
    )
    assert is_well_formed(text) == expected
    if expected:
        return
    with pytest.raises(InvalidApiKey) as info:
        check_format(text)
    if len(text) > 8:
        assert text not in info.value.message


@given(
    st.text(alphabet=BODY_CHARS, min_size=MIN_BODY, max_size=MAX_BODY),
    st.sampled_from([" ", "\n", "\t", "é", "/", "+", "=", ".", "\x00", "ß"]),
    st.integers(min_value=0),
)
def test_one_bad_character_anywhere_fails(body: str, bad: str, where: int) -> None:
    i = where % (len(body) + 1)
    assert not is_well_formed(KEY_PREFIX + body[:i] + bad + body[i:])


@pytest.mark.parametrize("value", [None, "", 42, b"hc-sk-0000000000000000", "HC-SK-0000000000000000",
                                   "hc-sk-" + "a" * (MIN_BODY - 1), "hc-sk-" + "a" * (MAX_BODY + 1),
                                   " hc-sk-0000000000000000", "hc-sk-0000000000000000\n"])
def test_edges_are_refused(value: object) -> None:
    with pytest.raises(InvalidApiKey):
        check_format(value)


def test_length_limits_are_inclusive() -> None:
    assert is_well_formed(KEY_PREFIX + "a" * MIN_BODY)
    assert is_well_formed(KEY_PREFIX + "a" * MAX_BODY)
