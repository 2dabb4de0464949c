"""Property tests of the three text parsers a user feeds directly: init specs, strategies, CSV files.

Valid input round-trips (or gives exactly the right counts); garbage never raises anything but UserError.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from warmstart.data import class_counts, load_data
from warmstart.errors import UserError
from warmstart.init import parse_init_spec
from warmstart.init.schemes import NONLINEARITIES, SCHEMES
from warmstart.init.spec import TYPE_TARGETS
from warmstart.transfer import parse_strategy

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------------------------------------ init specs
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
positive = st.floats(min_value=1e-12, max_value=1e12, allow_nan=False, allow_infinity=False)
gain = st.one_of(positive, st.sampled_from([n for n in NONLINEARITIES if n != "leaky_relu"]))


def _num(x: float) -> str:
    return repr(x)


@st.composite
def scheme_text(draw) -> str:
    """The text of one valid scheme (any alias, any valid arguments)."""
    name = draw(st.sampled_from(sorted(SCHEMES)))
    factory = SCHEMES[name].__name__
    if factory == "constant":
        return f"{name}({_num(draw(finite))})"
    if factory in ("uniform", "normal"):
        return f"{name}({_num(draw(positive))})"
    if factory in ("he_normal", "he_uniform"):
        args = [draw(st.sampled_from(["fan_in", "fan_out"]))]
        if draw(st.booleans()):
            args.append("leaky_relu")
            args.append(_num(draw(st.floats(min_value=0, max_value=10, allow_nan=False))))
        elif draw(st.booleans()):
            args.append(draw(st.sampled_from([n for n in NONLINEARITIES if n != "leaky_relu"])))
        args = args[: draw(st.integers(0, len(args)))]
        return f"{name}({', '.join(args)})" if args else name
    if factory in ("xavier_normal", "xavier_uniform", "lecun_normal", "lecun_uniform", "orthogonal"):
        g = draw(st.one_of(st.none(), gain))
        return name if g is None else f"{name}({g if isinstance(g, str) else _num(g)})"
    return name  # zeros, ones, dirac, shared_kernel, default


glob_target = st.from_regex(r"[a-z_][a-z0-9_]{0,6}(\.[a-z0-9_*?]{1,5}){0,2}\*?", fullmatch=True)
target = st.one_of(st.sampled_from(sorted(TYPE_TARGETS)), glob_target)


@st.composite
def spec_text(draw) -> str:
    if draw(st.integers(0, 4)) == 0:
        return draw(scheme_text())  # a bare scheme: the preset
    rules = draw(st.lists(st.tuples(target, scheme_text()), min_size=1, max_size=5))
    return ",".join(f"{t}={s}" for t, s in rules)


@SETTINGS
@given(spec_text())
@example("conv=constant(0.1234567891)")  # more digits than %g keeps
@example("linear=normal(1e-07)")
@example("he")
def test_valid_init_specs_round_trip_through_str(text):
    spec = parse_init_spec(text)
    canonical = str(spec)
    again = parse_init_spec(canonical)
    assert again == spec
    assert str(again) == canonical
    if "=" in text:  # explicit rules keep their targets, in order
        assert [r.target for r in spec.rules] == [part.split("=")[0] for part in _rules(text)]


def _rules(text: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return out + [cur]


spec_alphabet = st.sampled_from(list("abcdefhilnorstuvwxz_.*?=(),0123456789-+e ") + ["he_normal", "fan_in", "leaky_relu", "nan", "inf"])
garbage = st.one_of(st.text(max_size=60), st.lists(spec_alphabet, max_size=25).map("".join))


@SETTINGS
@given(garbage)
@example("conv=constant(nan)")
@example("conv=uniform(-1)")
@example("he_normal(fan_in, relu, 0.2)")
@example("conv=he(fan_in, leaky_relu, 1e400)")
@example("linear=orthogonal(nonsense)")
@example("conv=(")
@example("=zeros")
@example("a b=zeros")
@example("x" * 5000)
def test_garbage_init_specs_raise_only_user_errors(text):
    try:
        spec = parse_init_spec(text)
    except UserError as e:
        assert str(e)  # (the CLI prints it on one line whatever it holds)
        return
    assert parse_init_spec(str(spec)) == spec  # whatever parses also round-trips


@pytest.mark.parametrize("bad", [None, 3, b"he", ["he"]])
def test_init_spec_that_is_not_text_is_a_user_error(bad):
    with pytest.raises(UserError):
        parse_init_spec(bad)


# ------------------------------------------------------------------------------------------------ strategies
valid_strategy = st.one_of(
    st.sampled_from(["scratch", "transfer", "finetune-all", "gradual"]),
    st.integers(1, 10**6).map(lambda k: f"finetune-last:{k}"),
    st.integers(1, 10**6).map(lambda e: f"gradual:{e}"),
)


@SETTINGS
@given(valid_strategy, st.sampled_from(["", " ", "\t"]), st.booleans())
def test_valid_strategies_round_trip(spec, pad, upper):
    s = parse_strategy(pad + (spec.upper() if upper else spec) + pad)
    assert parse_strategy(str(s)) == s and str(s) == s.spec
    expected = spec if spec != "gradual" else "gradual:1"
    assert s.spec == expected
    if s.kind == "finetune-last":
        assert s.k == int(spec.split(":")[1])


@SETTINGS
@given(st.one_of(st.text(max_size=40),
                 st.builds(lambda a, b: f"{a}:{b}", st.sampled_from(["finetune-last", "gradual", "transfer", "scratch", "x"]),
                           st.text(max_size=12))))
@example("finetune-last:0")
@example("finetune-last:-2")
@example("gradual:")
@example("finetune-last:" + "9" * 5000)
@example("finetune-last:1e3")
def test_garbage_strategies_raise_only_user_errors(text):
    try:
        s = parse_strategy(text)
    except UserError as e:
        assert str(e)
        return
    assert parse_strategy(s.spec) == s


# ------------------------------------------------------------------------------------------------ CSV files
@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    """A folder with 12 small real PNGs (a CSV only names them; load_data does not decode)."""
    root = tmp_path_factory.mktemp("csvpool")
    (root / "img").mkdir()
    for i in range(12):
        Image.new("RGB", (4, 4), (i * 20, 0, 0)).save(root / "img" / f"{i}.png")
    return root


cell = st.one_of(st.text(max_size=12), st.sampled_from(["img/0.png", "img/1.png", "train", "val", "test", "ants", "", " "]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.one_of(
    st.text(max_size=300),
    st.lists(st.lists(cell, max_size=4), max_size=8).map(lambda rows: _csv_text([["path", "label", "split"][: 2 + (len(rows) % 2)], *rows])),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
))
@example("path,label\n" + "\n".join(f"img/{i}.png,{'ab'[i % 2]}" for i in range(12)) + "\n\0,x")
@example("\xff\xfe p,a,t,h")
@example("path,label\n" + "x" * 5000 + ",a\n")
@example('path,label\n"img/0.png,a\n')
def test_random_csv_contents_raise_only_user_errors(pool, text):
    p = pool / "data.csv"
    p.write_text(text, encoding="utf-8")
    try:
        splits = load_data(p)
    except UserError as e:
        assert str(e)
        return
    assert len(splits.classes) >= 2 and len(splits.train) >= 1 and len(splits.val) >= 1


def test_csv_that_is_not_utf8_is_a_user_error(pool):
    p = pool / "latin.csv"
    p.write_bytes("path,label\nimg/0.png,f\xe9e\nimg/1.png,b\n".encode("latin-1"))
    with pytest.raises(UserError, match="latin.csv"):
        load_data(p)


def _csv_text(rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue()


label_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1, max_size=8)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(labels=st.lists(label_text, min_size=2, max_size=4, unique_by=str.strip).filter(lambda ls: all(l.strip() for l in ls)),
       data=st.data())
def test_valid_csv_gives_the_right_counts(pool, labels, data):
    """Every class gets some train and some val rows (split column) -> exactly those counts per split."""
    rows, want = [["path", "label", "split"]], {"train": Counter(), "val": Counter()}
    images = iter(range(12))
    for label in labels:
        n_train = data.draw(st.integers(1, 2))
        for split in ["train"] * n_train + ["val"]:
            i = next(images)
            rows.append([data.draw(st.sampled_from([f"img/{i}.png", f"./img/{i}.png", str(pool / "img" / f"{i}.png")])),
                         label, data.draw(st.sampled_from([split, split.upper(), f" {split}"]))])
            want[split][label.strip()] += 1
    body = rows[1:]
    shuffled = data.draw(st.permutations(body))
    p = pool / "valid.csv"
    p.write_text(_csv_text([rows[0], *shuffled]), encoding="utf-8")
    s = load_data(p)
    assert set(s.classes) == {l.strip() for l in labels} and len(s.classes) == len(labels)
    assert class_counts(s.train) == dict(want["train"])
    assert class_counts(s.val) == dict(want["val"])
    assert not s.val_is_test and s.test is None


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(per_class=st.lists(st.integers(2, 6), min_size=2, max_size=2), fraction=st.floats(0.05, 0.95))
def test_csv_without_split_column_holds_out_a_stratified_fraction(pool, per_class, fraction):
    rows, i = [["path", "label"]], 0
    for label, n in zip(("a", "b"), per_class):
        for _ in range(n):
            rows.append([f"img/{i}.png", label])
            i += 1
    p = pool / "nosplit.csv"
    p.write_text(_csv_text(rows), encoding="utf-8")
    s = load_data(p, val_fraction=fraction)
    for k, n in zip(("a", "b"), per_class):
        n_val = min(max(int(round(n * fraction)), 1), n - 1)
        assert class_counts(s.val)[k] == n_val and class_counts(s.train)[k] == n - n_val
    assert math.isclose(len(s.train) + len(s.val), sum(per_class))
