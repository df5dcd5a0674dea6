"""How Python values become JSON (src/bindings/py_json.rs, docs/protocol.md).

``wshub.to_json`` is the text ``broadcast(topic, value)`` publishes for a
value that is not a str. Where ``json.dumps`` defines the output, it must be
the same bytes as ``json.dumps(value, separators=(",", ":"),
ensure_ascii=False)`` (random values from hypothesis); for the types wshub
adds, the bytes docs/protocol.md promises; ``json.loads`` of the output must
give the value back. The last tests publish through a real hub to a real
client.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import json
import math
import struct
import sys
import threading
import typing
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wshub
from helpers import publication

# No example database in the checkout (nor in the temp dir the installed-wheel
# job runs from), no deadline on a shared machine.
FAST = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def dumps(value: object) -> str:
    """What json.dumps gives with the separators docs/protocol.md names."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# --------------------------------------------------------------------------
# random values: where json.dumps defines the output, the same bytes
# --------------------------------------------------------------------------

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
# Any int json.dumps writes (the digit limit of int -> str stays Python's).
ints = st.one_of(st.integers(min_value=-(2**64), max_value=2**64),
                 st.integers(min_value=-(10**300), max_value=10**300))
texts = st.text(st.characters(exclude_categories=["Cs"]))  # no lone surrogates
scalars = st.one_of(st.none(), st.booleans(), ints, finite_floats, texts)
keys = st.one_of(texts, st.integers(), finite_floats, st.booleans(), st.none())
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.lists(inner, max_size=6).map(tuple),
        st.dictionaries(keys, inner, max_size=6),
    ),
    max_leaves=40,
)


@FAST
@given(json_values)
def test_random_values_give_the_bytes_json_dumps_gives(value):
    assert wshub.to_json(value) == dumps(value)


def normalised(value):
    """The value json.loads gives back: tuples become lists, keys strings."""
    if isinstance(value, (list, tuple)):
        return [normalised(item) for item in value]
    if isinstance(value, dict):
        return {key: normalised(item) for key, item in value.items()}
    return value


@FAST
@given(st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=6),
    st.lists(inner, max_size=6).map(tuple),
    st.dictionaries(texts, inner, max_size=6),
), max_leaves=40))
def test_json_loads_of_the_output_gives_the_value_back(value):
    assert json.loads(wshub.to_json(value)) == normalised(value)


@FAST
@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_any_finite_float_is_written_as_its_repr(bits):
    number = struct.unpack("<d", struct.pack("<Q", bits))[0]
    if not math.isfinite(number):
        return
    assert wshub.to_json(number) == repr(number)
    assert wshub.to_json({number: 1}) == '{"%r":1}' % number


@pytest.mark.parametrize("number", [
    0.0, -0.0, 1.0, 1.85, 0.1, 1e15, 1e16, 1e-4, 1e-5, 1.5e-7, 2.5e-9, 1e22,
    5e-324, 2.2250738585072014e-308, sys.float_info.max, -sys.float_info.max,
    9007199254740993.0, 123456789012345680.0, 0.30000000000000004,
], ids=repr)
def test_floats_at_the_layout_boundaries_are_their_repr(number):
    assert wshub.to_json(number) == repr(number) == dumps(number)


@FAST
@given(st.integers(min_value=-(2**36) * 10**4, max_value=2**36 * 10**4),
       st.integers(min_value=0, max_value=6))
def test_floats_with_few_decimals_are_their_repr(digits, decimals):
    # Prices, odds and percentages: the numbers written without a
    # shortest-digits search (float_repr.rs), and their neighbours.
    number = digits / 10**decimals
    for value in (number, math.nextafter(number, math.inf), math.nextafter(number, -math.inf)):
        assert wshub.to_json(value) == repr(value)


@pytest.mark.parametrize("number", [
    1e-4, math.nextafter(1e-4, 0), math.nextafter(1e-4, 1), 0.00015, 0.0105, 12.0001,
    2.0**36, 2.0**36 - 0.5, 2.0**36 + 0.5, math.nextafter(2.0**36, 0), 2.0**36 - 0.0001,
    68719476735.9999, 1234.5, -1234.5, 3.0, -3.0, 0.1 + 0.2, 1.1 * 3,
], ids=repr)
def test_floats_at_the_few_decimals_bounds_are_their_repr(number):
    assert wshub.to_json(number) == repr(number) == dumps(number)


@pytest.mark.parametrize("number", [
    0, 1, -1, 2**31, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**100, -(10**4000),
], ids=lambda n: f"int{len(str(n))}digits")
def test_ints_of_any_size_are_their_digits(number):
    assert wshub.to_json(number) == str(number) == dumps(number)


def test_an_int_over_pythons_digit_limit_raises_value_error_as_json_dumps_does():
    huge = 10 ** (sys.get_int_max_str_digits() + 1) if hasattr(sys, "get_int_max_str_digits") else None
    if huge is None:
        pytest.skip("this Python has no int digit limit")
    with pytest.raises(ValueError):
        dumps(huge)
    with pytest.raises(ValueError, match="digits"):
        wshub.to_json(huge)


def test_strings_are_escaped_as_json_dumps_escapes_them():
    text = "".join(chr(c) for c in range(0x80)) + "\u00e9\u2028\u2029\U0001f600\ufeff\x7f"
    assert wshub.to_json(text) == dumps(text)
    assert wshub.to_json({text: [text]}) == dumps({text: [text]})
    assert wshub.to_json('a"b\\c\n') == '"a\\"b\\\\c\\n"'
    assert wshub.to_json("\x01\x1f") == '"\\u0001\\u001f"'


def test_a_lone_surrogate_raises_unicode_encode_error():
    with pytest.raises(UnicodeEncodeError):
        wshub.to_json({"a": "\ud800"})


# --------------------------------------------------------------------------
# subclasses of the built-in types: as json.dumps writes them
# --------------------------------------------------------------------------


class LoudInt(int):
    def __repr__(self):
        return "LOUD"

    __str__ = __repr__


class LoudFloat(float):
    def __repr__(self):
        return "LOUD"


class LoudStr(str):
    def __str__(self):
        return "LOUD"


class ItemsFromElsewhere(dict):
    def items(self):
        return [("other", 1)]


class Color(enum.IntEnum):
    RED = 1


class Name(str, enum.Enum):
    ALICE = "alice"


Point = collections.namedtuple("Point", "x y")


@pytest.mark.parametrize("value", [
    LoudInt(5), LoudFloat(2.5), LoudStr("x"), {"k": LoudInt(2**70)},
    collections.OrderedDict([("b", 1), ("a", 2)]),
    collections.defaultdict(list, {"a": [1]}),
    collections.Counter("aab"),
    ItemsFromElsewhere(a=1), ItemsFromElsewhere(),
    Point(1, 2), [Color.RED, Name.ALICE], {Color.RED: 1, Name.ALICE: 2},
    {1: "int", 2.5: "float", True: "bool", None: "none", LoudStr("s"): 1},
], ids=repr)
def test_subclasses_give_what_json_dumps_gives(value):
    assert wshub.to_json(value) == dumps(value)


# --------------------------------------------------------------------------
# the types wshub adds, byte for byte as docs/protocol.md shows them
# --------------------------------------------------------------------------


class Side(enum.Enum):
    HOME = "home"
    AWAY = 2
    BOTH = ("home", 2)


@dataclasses.dataclass
class Odds:
    match: int
    home: float
    side: Side = Side.HOME
    tags: list = dataclasses.field(default_factory=list)
    kind: typing.ClassVar[str] = "not a field"


@dataclasses.dataclass(frozen=True, slots=True)
class Slotted:
    b: int
    a: str


UTC = datetime.timezone.utc
PLUS_0530 = datetime.timezone(datetime.timedelta(hours=5, minutes=30))


@pytest.mark.parametrize("value, expected", [
    (Side.HOME, '"home"'),
    (Side.AWAY, "2"),
    (Side.BOTH, '["home",2]'),
    (datetime.datetime(2026, 12, 3, 17, 4, 5), '"2026-12-03T17:04:05"'),
    (datetime.datetime(2026, 12, 3, 17, 4, 5, 120), '"2026-12-03T17:04:05.000120"'),
    (datetime.datetime(2026, 12, 3, 17, 4, 5, tzinfo=UTC), '"2026-12-03T17:04:05+00:00"'),
    (datetime.datetime(2026, 12, 3, 17, 4, 5, 1, tzinfo=PLUS_0530), '"2026-12-03T17:04:05.000001+05:30"'),
    (datetime.date(2026, 1, 2), '"2026-01-02"'),
    (datetime.time(9, 30), '"09:30:00"'),
    (datetime.time(9, 30, 0, 5, tzinfo=UTC), '"09:30:00.000005+00:00"'),
    (uuid.UUID("12345678-1234-5678-1234-56781234567A"), '"12345678-1234-5678-1234-56781234567a"'),
    (decimal.Decimal("1.10"), "1.10"),
    (decimal.Decimal("-0"), "-0"),
    (decimal.Decimal("1E+2"), "1E+2"),
    (decimal.Decimal("0.0000001"), "1E-7"),
    (decimal.Decimal("123456789012345678901234567890.5"), "123456789012345678901234567890.5"),
    (Odds(7, 1.85), '{"match":7,"home":1.85,"side":"home","tags":[]}'),
    (Odds(7, 2.0, Side.AWAY, [Odds(1, 1.5)]),
     '{"match":7,"home":2.0,"side":2,"tags":[{"match":1,"home":1.5,"side":"home","tags":[]}]}'),
    (Slotted(1, "x"), '{"b":1,"a":"x"}'),
    ({"at": datetime.date(2026, 1, 2), "id": uuid.UUID(int=1)},
     '{"at":"2026-01-02","id":"00000000-0000-0000-0000-000000000001"}'),
], ids=repr)
def test_added_types_give_the_documented_bytes(value, expected):
    assert wshub.to_json(value) == expected
    json.loads(expected)  # and it is JSON


@FAST
@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_a_decimal_is_its_str_as_a_number_and_reads_back_exactly(number):
    text = wshub.to_json([number])
    assert text == f"[{number}]"
    (back,) = json.loads(text, parse_float=decimal.Decimal, parse_int=decimal.Decimal)
    assert back == number


@FAST
@given(st.datetimes(timezones=st.one_of(st.none(), st.timezones())))
def test_a_datetime_is_its_isoformat(moment):
    assert json.loads(wshub.to_json({"at": moment})) == {"at": moment.isoformat()}


def test_a_decimal_subclass_cannot_change_the_number():
    class Sneaky(decimal.Decimal):
        def __str__(self):
            return '1,"injected":2'

    assert wshub.to_json({"a": Sneaky("3.5")}) == '{"a":3.5}'


def test_a_dataclass_class_is_not_an_instance():
    with pytest.raises(TypeError, match="Object of type type is not JSON serializable"):
        wshub.to_json(Odds)


# --------------------------------------------------------------------------
# refusals: the exception, and nothing half-written
# --------------------------------------------------------------------------


@pytest.mark.parametrize("value, name", [
    (set(), "set"), (frozenset(), "frozenset"), (b"x", "bytes"), (object(), "object"),
    ({"a": [1, 1j]}, "complex"), (datetime.timedelta(1), "timedelta"), (range(3), "range"),
], ids=repr)
def test_other_types_raise_type_error_naming_the_type(value, name):
    with pytest.raises(TypeError, match=f"^Object of type {name} is not JSON serializable$"):
        wshub.to_json(value)
    with pytest.raises(TypeError):
        dumps(value)


@pytest.mark.parametrize("key", [(1, 2), b"k", frozenset(), Side.HOME, uuid.UUID(int=0)], ids=repr)
def test_keys_other_than_str_int_float_bool_none_raise_type_error(key):
    with pytest.raises(TypeError, match="^keys must be str, int, float, bool or None, not "):
        wshub.to_json({key: 1})


@pytest.mark.parametrize("value", [
    math.nan, math.inf, -math.inf, [1, math.nan], {"a": {"b": -math.inf}}, {math.inf: 1},
    decimal.Decimal("NaN"), decimal.Decimal("-Infinity"), decimal.Decimal("sNaN"),
], ids=repr)
def test_nan_and_infinities_raise_value_error(value):
    with pytest.raises(ValueError, match="not JSON compliant"):
        wshub.to_json(value)


def self_list():
    cycle: list = [1]
    cycle.append(cycle)
    return cycle


def self_dict():
    cycle: dict = {}
    cycle["again"] = {"inner": cycle}
    return cycle


def self_dataclass():
    odds = Odds(1, 1.0)
    odds.tags.append(odds)
    return odds


@pytest.mark.parametrize("make", [self_list, self_dict, self_dataclass])
def test_circular_references_raise_value_error(make):
    with pytest.raises(ValueError, match="Circular reference detected"):
        wshub.to_json(make())


def test_a_value_shared_by_two_branches_is_not_circular():
    shared = [1, 2]
    assert wshub.to_json({"a": shared, "b": [shared]}) == '{"a":[1,2],"b":[[1,2]]}'


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_nesting_up_to_the_limit_is_written_and_deeper_raises_value_error():
    assert wshub.to_json(nested(1000)) == "[" * 1000 + "]" * 1000
    with pytest.raises(ValueError, match="nested deeper than 1000 levels"):
        wshub.to_json(nested(1001))
    with pytest.raises(ValueError, match="nested deeper than 1000 levels"):
        wshub.to_json(nested(200_000))


def test_the_deepest_value_fits_a_small_thread_stack():
    # A thread with 512 KiB of stack (Linux's default is 8 MiB) walks the
    # deepest value it is allowed: no stack overflow.
    results: list = []
    old = threading.stack_size(512 * 1024)
    try:
        worker = threading.Thread(target=lambda: results.append(wshub.to_json(nested(1000))))
        worker.start()
        worker.join(timeout=30)
    finally:
        threading.stack_size(old)
    assert results == ["[" * 1000 + "]" * 1000]


def test_a_dict_resized_by_a_called_isoformat_raises_runtime_error():
    box: dict = {}

    class Grows(datetime.date):
        def isoformat(self):
            box["more"] = 1
            return super().isoformat()

    box["day"] = Grows(2026, 1, 2)
    box["after"] = 1
    with pytest.raises(RuntimeError, match="changed size"):
        wshub.to_json(box)


def test_a_list_shrunk_by_a_called_isoformat_is_never_read_past_its_end():
    items: list = []

    class Shrinks(datetime.date):
        def isoformat(self):
            items.clear()
            return "x"

    items.extend([Shrinks(2026, 1, 2), 1, 2, 3])
    assert wshub.to_json(items) == '["x"]'


def test_a_container_dropped_by_a_called_isoformat_while_it_is_written_is_kept_alive():
    # The walk borrows a container's items; an item that can run Python
    # code (here a dict and a list holding such a date) is owned first, so
    # emptying the outer containers cannot free it mid-walk.
    outer: dict = {}
    items: list = []

    class Empties(datetime.date):
        def isoformat(self):
            outer.clear()
            items.clear()
            return "x"

    outer["inner"] = {"day": Empties(2026, 1, 2), "after": [1.5, "s", None]}
    outer["next"] = 1
    with pytest.raises(RuntimeError, match="changed size"):
        wshub.to_json(outer)
    items.extend([[Empties(2026, 1, 2), 2.5, "kept"], 3])
    assert wshub.to_json(items) == '[["x",2.5,"kept"]]'


def test_an_exception_from_isoformat_propagates():
    class Broken(datetime.date):
        def isoformat(self):
            raise LookupError("no")

    with pytest.raises(LookupError):
        wshub.to_json([Broken(2026, 1, 2)])


# --------------------------------------------------------------------------
# through a real hub: the client gets exactly these bytes
# --------------------------------------------------------------------------

MIXED = {"match": 7, "home": 1.85, "at": datetime.datetime(2026, 12, 3, 17, 0, tzinfo=UTC),
         "id": uuid.UUID(int=7), "stake": decimal.Decimal("10.50"), "side": Side.AWAY,
         "odds": Odds(7, 1.85), "text": "h\u00e9llo\n"}


def test_broadcast_publishes_the_bytes_to_json_gives(hub, connect):
    client = connect(hub, ["t"])
    assert hub.broadcast("t", MIXED) == 1
    assert client.recv_text() == publication("t", 1, wshub.to_json(MIXED))


def test_broadcast_many_serialises_each_value_the_same_way(hub, connect):
    client = connect(hub, ["t"])
    assert hub.broadcast_many([("t", MIXED), ("t", [Side.HOME, 1e16])]) == [1, 1]
    assert client.recv_text() == publication("t", 1, wshub.to_json(MIXED))
    assert client.recv_text() == publication("t", 2, '["home",1e+16]')


@pytest.mark.parametrize("size", [10, 4_000, 5_000, 100_000])
def test_values_and_strs_on_both_sides_of_the_held_gil_bound_are_delivered(hub, connect, size):
    # Up to 4 KiB a publication is checked and queued with the GIL held,
    # larger ones with it released (python.rs HELD_GIL_MAX_BYTES).
    client = connect(hub, ["t"])
    value = {"pad": "x" * size, "n": 1.25}
    text = wshub.to_json(value)
    assert hub.broadcast("t", value) == 1
    assert hub.broadcast("t", text) == 1
    assert hub.broadcast("t", value, key="k", retain=True) == 1
    for seq in (1, 2, 3):
        assert client.recv_text() == publication("t", seq, text)
    with pytest.raises(ValueError, match="invalid JSON"):
        hub.broadcast("t", text[:-1])
    with pytest.raises(ValueError):
        hub.broadcast("no spaces allowed", value)


@pytest.mark.parametrize("bad", [{"x": math.nan}, [set()], self_list()], ids=["nan", "set", "cycle"])
def test_a_refused_value_publishes_nothing(hub, connect, bad):
    client = connect(hub, ["t"])
    with pytest.raises((TypeError, ValueError)):
        hub.broadcast("t", bad)
    with pytest.raises((TypeError, ValueError)):
        hub.broadcast_many([("t", {"good": 1}), ("t", bad)])
    assert hub.broadcast("t", {"good": True}) == 1
    assert client.recv_text() == publication("t", 1, '{"good":true}')
