"""The shard rule (config/shard.py): partition, balance within one cell's work, stability under appending,
pinned baselines, and the I/N parser's one-line errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_wsgi502.config import shard
from pytest_wsgi502.config.duration import Auto
from pytest_wsgi502.config.settings import resolve
from pytest_wsgi502.config.values import ConfigError

names = st.lists(st.text("abcdefgh-", min_size=1, max_size=6), min_size=0, max_size=40, unique=True)
weight = st.floats(min_value=0.5, max_value=3600, allow_nan=False)
counts = st.integers(min_value=1, max_value=12)


@st.composite
def matrices(draw: st.DrawFn) -> tuple[list[str], dict[str, float]]:
    cells = draw(names)
    return cells, {n: draw(weight) for n in cells}


@settings(max_examples=300)
@given(matrices(), counts)
def test_every_cell_is_in_exactly_one_shard_and_the_shards_are_the_matrix(m: tuple[list[str], dict[str, float]],
                                                                          n: int) -> None:
    cells, weights = m
    owned = [shard.plan(cells, weights, {}, shard.Shard(i, n)).own for i in range(1, n + 1)]
    flat = [c for own in owned for c in own]
    assert sorted(flat) == sorted(cells)  # union = all, and no cell twice
    assert len(flat) == len(set(flat))
    for own in owned:  # each shard keeps matrix order
        assert list(own) == [c for c in cells if c in own]


@settings(max_examples=300)
@given(matrices(), counts)
def test_shards_differ_by_at_most_the_largest_cell(m: tuple[list[str], dict[str, float]], n: int) -> None:
    cells, weights = m
    owner = shard.assign(cells, weights, n)
    loads = [sum(weights[c] for c in cells if owner[c] == i) for i in range(1, n + 1)]
    assert max(loads) - min(loads) <= max(weights.values(), default=0) + 1e-6


@settings(max_examples=300)
@given(matrices(), counts, st.text("xyz", min_size=7, max_size=8), weight)
def test_appending_a_cell_moves_no_other_cell(m: tuple[list[str], dict[str, float]], n: int, new: str,
                                               w: float) -> None:
    cells, weights = m
    before = shard.assign(cells, weights, n)
    after = shard.assign([*cells, new], {**weights, new: w}, n)
    assert {c: after[c] for c in cells} == before


@settings(max_examples=300)
@given(matrices(), counts, st.text("xyz", min_size=7, max_size=8), weight, st.data())
def test_inserting_a_cell_moves_only_cells_after_it(m: tuple[list[str], dict[str, float]], n: int, new: str,
                                                    w: float, data: st.DataObject) -> None:
    cells, weights = m
    at = data.draw(st.integers(0, len(cells)))
    before = shard.assign(cells, weights, n)
    after = shard.assign([*cells[:at], new, *cells[at:]], {**weights, new: w}, n)
    assert {c: after[c] for c in cells[:at]} == {c: before[c] for c in cells[:at]}


def test_what_inserting_in_the_middle_can_move() -> None:
    """The documented limit of stability: an insertion moves later cells (here 'c' goes from shard 1 to 2)."""
    w = {"a": 10.0, "b": 10.0, "c": 1.0, "new": 10.0}
    assert shard.assign(["a", "b", "c"], w, 2) == {"a": 1, "b": 2, "c": 1}
    assert shard.assign(["a", "new", "b", "c"], w, 2) == {"a": 1, "new": 2, "b": 1, "c": 2}


def test_balance_uses_expected_duration_not_cell_count() -> None:
    """One 10-minute cell against five 20 s cells: the long cell gets a shard of its own."""
    cells = ["long", "a", "b", "c", "d", "e"]
    w = {"long": shard.expected_seconds(600.0), **{c: shard.expected_seconds(20.0) for c in "abcde"}}
    owner = shard.assign(cells, w, 2)
    assert [c for c in cells if owner[c] == 1] == ["long"]


def test_expected_seconds_counts_auto_as_its_cap_and_repeats() -> None:
    assert shard.expected_seconds(Auto(120.0)) == 120.0 + shard.STARTUP_S
    assert shard.expected_seconds(10.0, repeat=3) == 3 * (10.0 + shard.STARTUP_S)
    assert shard.expected_seconds(None) == shard.STARTUP_S


def test_a_baseline_in_another_shard_is_pinned_where_a_cell_needs_it() -> None:
    cells = ["base", "a", "b", "c"]
    w = dict.fromkeys(cells, 10.0)
    baselines = {"a": "base", "b": "base", "c": "base", "base": None}
    plans = [shard.plan(cells, w, baselines, shard.Shard(i, 2)) for i in (1, 2)]
    assert plans[0].own == ("base", "b") and plans[0].pinned == {}
    assert plans[1].own == ("a", "c") and plans[1].pinned == {"base": ("a", "c")}
    assert plans[1].runs == {"base", "a", "c"}
    assert plans[1].header() == ("shard 2/2: 2 of 4 cells (a, c); baseline base pinned here too (for a, c; "
                                 "it belongs to shard 1/2)")


def test_a_baseline_outside_the_selected_cells_is_not_pinned() -> None:
    p = shard.plan(["a", "b"], {"a": 1.0, "b": 1.0}, {"b": "other"}, shard.Shard(2, 2))
    assert p.pinned == {} and p.runs == {"b"}


@pytest.mark.parametrize("text", ["1/3", " 3 / 3 ", "1/1", "1000/1000"])
def test_shard_parses(text: str) -> None:
    s = shard.parse(text)
    assert 1 <= s.index <= s.count <= 1000 and str(s) == text.replace(" ", "")


@pytest.mark.parametrize(("text", "message"), [
    ("0/3", "the shard I in I/3 must be >= 1 and <= 3, got 0"),
    ("4/3", "the shard I in I/3 must be >= 1 and <= 3, got 4"),
    ("1/0", "the number of shards N in I/N must be >= 1 and <= 1000, got 0"),
    ("1/1001", "the number of shards N in I/N must be >= 1 and <= 1000, got 1001"),
    ("1-3", "not a shard: '1-3' (use I/N, e.g. 1/3: the first of 3 shards)"),
    ("1/3\n", "not a shard"),
])
def test_a_bad_shard_is_one_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        shard.parse(text)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_the_setting_comes_from_option_env_or_ini_and_names_its_source() -> None:
    assert resolve({}, {"WSGI502_SHARD": "2/5"}, {}).shard == shard.Shard(2, 5)
    assert resolve({}, {}, {"wsgi_shard": "1/2"}).source("shard") == "ini"
    assert resolve({}, {}, {}).shard is None
    with pytest.raises(ConfigError, match=r"^--wsgi-shard='3/2': the shard I in I/2 must be >= 1 and <= 2, got 3$"):
        resolve({"wsgi502_shard": "3/2"}, {}, {})
