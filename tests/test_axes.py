"""Axis value parsing in A1111's X/Y/Z syntax: exact values, labels, errors, properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grids.axes import (
    AXES,
    MAX_AXIS_VALUES,
    AxisError,
    SamplerValue,
    Size,
    axis_type,
    canonical_axis,
    format_values,
    label,
    parse_values,
    value_to_json,
)


@pytest.mark.parametrize(("axis", "text", "expected"), [
    # REFERENCE.md and the A1111 wiki's examples
    ("steps", "5,10,20", [5, 10, 20]),
    ("steps", "1-5", [1, 2, 3, 4, 5]),
    ("steps", "1-10 (+3)", [1, 4, 7, 10]),
    ("steps", "10-40 [4]", [10, 20, 30, 40]),
    ("steps", "1-5 (+2)", [1, 3, 5]),
    ("steps", "10-5 (-3)", [10, 7]),
    ("steps", "1-10 [5]", [1, 3, 5, 7, 10]),
    ("cfg", "1-3 (+0.5)", [1.0, 1.5, 2.0, 2.5, 3.0]),
    ("cfg", "0.0-1.0 [6]", [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    # ours
    ("steps", "10-1 (-3)", [10, 7, 4, 1]),
    ("steps", "5-1", [5, 4, 3, 2, 1]),
    ("steps", "20-50 (+10)", [20, 30, 40, 50]),
    ("steps", "5, 10-20 (+5), 40", [5, 10, 15, 20, 40]),
    ("steps", " 20 , 30 ,, ", [20, 30]),
    ("steps", "20.0", [20]),
    ("steps", "7-7", [7]),
    ("steps", "10-40 [1]", [10]),
    ("steps", "1-2 [4]", [1, 1, 1, 2]),
    ("steps", "1-10(3)", [1, 4, 7, 10]),
    ("cfg", "1.5-7.5 (+1.5)", [1.5, 3.0, 4.5, 6.0, 7.5]),
    ("cfg", "3-9 [4]", [3.0, 5.0, 7.0, 9.0]),
    ("cfg", "0.1-0.5 (+0.1)", [0.1, 0.2, 0.3, 0.4, 0.5]),
    ("cfg", "7-1 [3]", [7.0, 4.0, 1.0]),
    ("cfg", "1-2 (+0.3)", [1.0, 1.3, 1.6, 1.9]),
    ("cfg", "7, 7.5, .5", [7.0, 7.5, 0.5]),
    ("eta", "0-1 [3]", [0.0, 0.5, 1.0]),
    ("s_noise", "1, 1.003", [1.0, 1.003]),
    ("seed", "-1, 5-7", [-1, 5, 6, 7]),
    ("seed", "0-18446744073709551615 [3]", [0, 9223372036854775807, 18446744073709551615]),
    ("schedule", "karras, sgm uniform, Automatic", ["Karras", "SGM Uniform", "Automatic"]),
    ("prompt_sr", 'cat, "a, b", dog', ["cat", "a, b", "dog"]),
    ("prompt_sr", '"say ""hi""", x', ['say "hi"', "x"]),
    ("negative_prompt", '"blurry, lowres", ugly', ["blurry, lowres", "ugly"]),
    ("model", "builtin, sd15", ["builtin", "sd15"]),
    ("size", "512x512, 768x512", [Size(512, 512), Size(768, 512)]),
    ("size", "64 X 96", [Size(64, 96)]),
])
def test_parse_values_exact(axis: str, text: str, expected: list) -> None:
    assert parse_values(axis, text) == expected


def test_float_values_are_floats_and_int_values_ints() -> None:
    assert all(type(v) is float for v in parse_values("cfg", "7, 3-5 [3]"))
    assert all(type(v) is int for v in parse_values("steps", "7, 3-5 [3], 20.0"))


def test_sampler_values_keep_the_users_text_and_record_the_implied_schedule() -> None:
    values = parse_values("sampler", "Euler, DPM++ 2M Karras, euler a")
    assert values == [SamplerValue("Euler", "Euler", None),
                      SamplerValue("DPM++ 2M Karras", "DPM++ 2M", "Karras"),
                      SamplerValue("euler a", "Euler a", None)]
    assert [label("sampler", v) for v in values] == ["Euler", "DPM++ 2M Karras", "euler a"]


def test_json_lists_are_taken_item_by_item() -> None:
    assert parse_values("steps", [5, "10", 20.0]) == [5, 10, 20]
    assert parse_values("cfg", [7, "7.5"]) == [7.0, 7.5]
    assert parse_values("size", ["512x512", [768, 512], Size(64, 64)]) == [
        Size(512, 512), Size(768, 512), Size(64, 64)]
    # A list item is one value, never a range, and text items keep their commas and spaces.
    with pytest.raises(AxisError, match="'1-5' is not a whole number"):
        parse_values("steps", ["1-5"])
    assert parse_values("prompt_sr", ["cat", " dog, big", ""]) == ["cat", " dog, big", ""]
    assert parse_values("negative_prompt", ["", "blurry"]) == ["", "blurry"]


@pytest.mark.parametrize(("name", "canonical"), [
    ("Sampler", "sampler"), ("Steps", "steps"), ("CFG Scale", "cfg"), ("cfg scale", "cfg"), ("Seed", "seed"),
    ("Schedule type", "schedule"), ("Prompt S/R", "prompt_sr"), ("Eta", "eta"), ("Sigma noise", "s_noise"),
    ("s_noise", "s_noise"), ("Size", "size"), ("Checkpoint name", "model"),
    ("Negative prompt", "negative_prompt"), ("negative_prompt", "negative_prompt"), ("  STEPS ", "steps"),
])
def test_axis_names_and_a1111_labels(name: str, canonical: str) -> None:
    assert canonical_axis(name) == canonical


@pytest.mark.parametrize(("axis", "value", "text"), [
    ("steps", 20, "Steps: 20"), ("cfg", 7.0, "CFG Scale: 7.0"), ("cfg", 7.5, "CFG Scale: 7.5"),
    ("seed", 42, "Seed: 42"), ("schedule", "Karras", "Schedule type: Karras"), ("eta", 0.5, "Eta: 0.5"),
    ("s_noise", 1.0, "Sigma noise: 1.0"), ("prompt_sr", "dog", "Prompt S/R: dog"),
    ("negative_prompt", "blurry", "Negative prompt: blurry"), ("size", Size(512, 768), "Size: 512x768"),
    ("model", "sd15", "sd15"), ("sampler", SamplerValue("Euler a", "Euler a"), "Euler a"),
    ("cfg", 0.1 + 0.2, "CFG Scale: 0.3"),
])
def test_labels(axis: str, value: object, text: str) -> None:
    assert label(axis, value) == text


def test_every_axis_has_a1111s_label() -> None:
    # Shift and Distilled CFG Scale are Forge's (flow models), the others A1111's
    assert [t.label for t in AXES.values()] == [
        "Sampler", "Schedule type", "Steps", "CFG Scale", "Seed", "Eta", "Sigma noise", "Shift",
        "Distilled CFG Scale", "Prompt S/R", "Negative prompt", "Size", "Checkpoint name"]


@pytest.mark.parametrize(("axis", "text", "message"), [
    ("steps", "1O", "steps: '1O' is not a whole number"),
    ("steps", "0", "steps must be >= 1, got 0"),
    ("steps", "5, 2000", "steps must be <= 1000, got 2000"),
    ("steps", "1.5", "steps: '1.5' is not a whole number"),
    ("steps", "1.5-3", "steps: '1.5' is not a whole number"),
    ("steps", "1-10 (-3)", "steps: '1-10 (-3)' steps away from 10; use (+3)"),
    ("steps", "1-10 (+0)", "step of 0"),
    ("steps", "1-100000", "would make more than 1000 values"),
    ("steps", "1-99999999999999999999999 [3]", "steps must be <= 1000"),
    ("steps", "1-5 [0]", "asks for 0 values; use [1] or more"),
    ("steps", "1-5 [5000]", "would make more than 1000 values"),
    ("steps", "", "steps: no values given"),
    ("steps", " , ,", "steps: no values given"),
    ("steps", "9" * 5000, "is not a whole number"),
    ("cfg", "nan", "cfg: 'nan' is not a finite number"),
    ("cfg", "inf", "cfg: 'inf' is not a finite number"),
    ("cfg", "1e400", "not a finite number"),
    ("cfg", "abc", "cfg: 'abc' is not a number"),
    ("cfg", "-1", "cfg must be >= 0.0, got -1.0"),
    ("cfg", "0-1 (+0.0000001)", "would make more than 1000 values"),
    ("cfg", "0.00-100.00 (+0.10)", "would make more than 1000 values"),
    ("eta", "-0.5", "eta must be >= 0.0"),
    ("seed", "-5", "seed must be -1 (random) or >= 0, got -5"),
    ("seed", "18446744073709551616", "seed must be <= 18446744073709551615"),
    ("sampler", "Eulr a", "unknown sampler 'Eulr a' — did you mean 'Euler a'"),
    ("schedule", "karas", "unknown schedule type 'karas'"),
    ("size", "512", "size: '512' is not a size like 512x768"),
    ("size", "0x512", "size: width must be between 1 and 16384, got 0"),
    ("size", "512x99999", "height must be between 1 and 16384"),
    ("Flavour", "1", "unknown axis 'Flavour'"),
])
def test_errors_name_the_axis_and_item(axis: str, text: str, message: str) -> None:
    with pytest.raises(AxisError) as err:
        parse_values(axis, text)
    assert message in str(err.value)


@pytest.mark.parametrize(("axis", "values", "message"), [
    ("steps", [], "steps: no values given"),
    ("steps", [True], "True is not a whole number"),
    ("steps", [None], "None is not a whole number"),
    ("steps", [20.5], "20.5 is not a whole number"),
    ("cfg", [float("nan")], "is not a finite number"),
    ("cfg", ["x"], "'x' is not a number"),
    ("model", [""], "checkpoint name cannot be empty"),
    ("prompt_sr", ["", "x"], "first value is the text to search for"),
    ("prompt_sr", ["cat", 5], "prompt_sr: item 2 must be text, got 5"),
    ("size", [[512]], "is not a size"),
    ("steps", list(range(1, MAX_AXIS_VALUES + 2)), "an axis takes at most 1000"),
    ("steps", 20, "values must be text or a list"),
])
def test_list_errors(axis: str, values: object, message: str) -> None:
    with pytest.raises(AxisError) as err:
        parse_values(axis, values)  # type: ignore[arg-type]
    assert message in str(err.value)


def test_axis_error_is_a_value_error_and_knows_its_axis() -> None:
    with pytest.raises(ValueError) as err:
        parse_values("CFG Scale", "x")
    assert isinstance(err.value, AxisError) and err.value.axis == "cfg"


@pytest.mark.parametrize(("axis", "text"), [
    ("steps", "5, 10-20 (+5), 40"), ("cfg", "0.1-0.5 (+0.1), 7"), ("seed", "-1, 3"),
    ("sampler", "Euler a, DPM++ 2M Karras"), ("schedule", "Karras, Align Your Steps"),
    ("prompt_sr", 'cat, "a, b", "quote "" mark"'), ("size", "512x512, 64x96"), ("model", "a, b"),
])
def test_format_values_parses_back_to_the_same_values(axis: str, text: str) -> None:
    values = parse_values(axis, text)
    assert parse_values(axis, format_values(axis, values)) == values
    assert parse_values(axis, [value_to_json(axis, v) for v in values]) == values


# ---------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None)
@given(axis=st.sampled_from(sorted(AXES)), text=st.text(max_size=40))
def test_arbitrary_text_raises_only_axis_error(axis: str, text: str) -> None:
    try:
        values = parse_values(axis, text)
    except AxisError:
        return
    assert 1 <= len(values) <= MAX_AXIS_VALUES


_RANGE_CHARS = st.text(alphabet="0123456789-+.,()[] x", max_size=24)


@settings(max_examples=300, deadline=None)
@given(axis=st.sampled_from(["steps", "seed", "cfg", "eta", "size"]), text=_RANGE_CHARS)
def test_range_like_text_raises_only_axis_error(axis: str, text: str) -> None:
    try:
        parse_values(axis, text)
    except AxisError:
        pass


@settings(max_examples=200, deadline=None)
@given(a=st.integers(1, 1000), b=st.integers(1, 1000), step=st.integers(1, 400))
def test_int_range_with_step_stays_within_ends_in_order(a: int, b: int, step: int) -> None:
    signed = step if b >= a else -step
    values = parse_values("steps", f"{a}-{b} ({signed:+d})")
    assert values[0] == a
    assert all(min(a, b) <= v <= max(a, b) for v in values)
    assert all((y - x) == signed for x, y in zip(values, values[1:], strict=False))
    assert abs(b - values[-1]) < step


@settings(max_examples=200, deadline=None)
@given(a=st.decimals(0, 100, places=2), b=st.decimals(0, 100, places=2),
       step=st.decimals("0.2", 50, places=2))
def test_float_range_with_step_stays_within_ends_in_order(a, b, step) -> None:
    # step >= 0.2 keeps 0-100 under the 1000-value cap, which has its own test below
    signed = step if b >= a else -step
    values = parse_values("cfg", f"{a}-{b} ({signed:+})")
    lo, hi = min(float(a), float(b)), max(float(a), float(b))
    assert values[0] == float(a)
    assert all(lo <= v <= hi for v in values)
    diffs = [y - x for x, y in zip(values, values[1:], strict=False)]
    assert all(abs(d - float(signed)) < 1e-6 for d in diffs)


@settings(max_examples=200, deadline=None)
@given(a=st.integers(1, 1000), b=st.integers(1, 1000), n=st.integers(1, 50))
def test_int_count_range_gives_n_values_from_a_to_b(a: int, b: int, n: int) -> None:
    values = parse_values("steps", f"{a}-{b} [{n}]")
    assert len(values) == n and values[0] == a
    assert values == sorted(values, reverse=b < a)
    if n > 1:
        assert values[-1] == b


def test_axis_type_reports_kind() -> None:
    assert axis_type("Steps").kind == "int" and axis_type("cfg").kind == "float"
    assert axis_type("Checkpoint name").bare_label and not axis_type("Seed").bare_label
