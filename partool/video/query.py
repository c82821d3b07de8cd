"""Which tracks to pick from an event store: boolean attribute queries, streams and a time window.

Grammar (`!` binds tightest, then `&`, then `|`; spaces are free):

    query  := and ( "|" and )*
    and    := unary ( "&" unary )*
    unary  := "!" unary | "(" query ")" | term
    term   := NAME [ (">" | ">=" | "<" | "<=") NUMBER ]

`Backpack` means the track's smoothed decision is on; `Backpack>0.8` compares its smoothed probability. A
NAME is a run of characters other than spaces and `&|!()<>"'`, or any text in double or single quotes
(`"Skirt&Dress"`); names match the store's case-insensitively and must exist there. A track with no
probabilities yet matches no term (so it matches `!Hat`).

Queries compile to SQL over the store (one EXISTS per term, values as `?` parameters) rather than running
in Python over every row: SQLite filters next to the data with the `track_attributes` index, the stream and
time conditions join the same WHERE, and only matching rows — thumbnails included — leave the file.
"""

from __future__ import annotations

import difflib
import operator
import re
import sqlite3
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from partool.errors import UserError
from partool.video.event_store import StoredTrack, attribute_names, count_tracks, read_tracks, stream_names

SPECIAL = "&|!()<>\"'"
COMPARISONS = (">=", "<=", ">", "<")


@dataclass(frozen=True)
class Term:
    name: str
    op: str | None = None  # None: the decision is on
    value: float = 0.0
    column: int = 0  # 1-based, for messages


@dataclass(frozen=True)
class Not:
    operand: Expr


@dataclass(frozen=True)
class And:
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Or:
    left: Expr
    right: Expr


Expr = Term | Not | And | Or


@dataclass(frozen=True)
class _Token:
    kind: str  # "name", "quoted", an operator, or "end"
    text: str
    column: int


def _tokens(text: str) -> list[_Token]:
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "<>" and text[i + 1 : i + 2] == "=":
            out.append(_Token(ch + "=", ch + "=", i + 1))
            i += 2
        elif ch in "&|!()<>":
            out.append(_Token(ch, ch, i + 1))
            i += 1
        elif ch in "\"'":
            end = text.find(ch, i + 1)
            if end < 0:
                raise UserError(f"query {text!r}: the quote at column {i + 1} is never closed")
            out.append(_Token("quoted", text[i + 1 : end], i + 1))
            i = end + 1
        else:
            start = i
            while i < len(text) and not text[i].isspace() and text[i] not in SPECIAL:
                i += 1
            out.append(_Token("name", text[start:i], start + 1))
    out.append(_Token("end", "", len(text) + 1))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.at = 0

    def peek(self) -> _Token:
        return self.tokens[self.at]

    def take(self) -> _Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def fail(self, expected: str) -> UserError:
        token = self.peek()
        found = "the end of the query" if token.kind == "end" else repr(token.text)
        return UserError(f"query {self.text!r}: at column {token.column} expected {expected}, found {found}")

    def query(self) -> Expr:
        expr = self.conjunction()
        while self.peek().kind == "|":
            self.take()
            expr = Or(expr, self.conjunction())
        return expr

    def conjunction(self) -> Expr:
        expr = self.unary()
        while self.peek().kind == "&":
            self.take()
            expr = And(expr, self.unary())
        return expr

    def unary(self) -> Expr:
        kind = self.peek().kind
        if kind == "!":
            self.take()
            return Not(self.unary())
        if kind == "(":
            self.take()
            expr = self.query()
            if self.peek().kind != ")":
                raise self.fail("'&', '|' or ')'")
            self.take()
            return expr
        if kind not in ("name", "quoted"):
            raise self.fail("an attribute name, '!' or '('")
        name = self.take()
        if self.peek().kind not in COMPARISONS:
            return Term(name.text, column=name.column)
        op = self.take().kind
        number = self.peek()
        try:
            value = float(number.text) if number.kind == "name" else float("nan")
        except ValueError:
            value = float("nan")
        if not 0.0 <= value <= 1.0:
            raise self.fail(f"a probability from 0 to 1 after {op!r}")
        self.take()
        return Term(name.text, op, value, name.column)


def parse_query(text: str) -> Expr:
    """The expression of `text`; UserError says at which column it broke and what was expected there."""
    if not text.strip():
        raise UserError("the query is empty: name attributes, like 'Female & Backpack & !Hat'")
    parser = _Parser(text)
    expr = parser.query()
    if parser.peek().kind != "end":
        raise parser.fail("'&', '|' or the end of the query")
    return expr


def resolve_names(expr: Expr, known: Iterable[str]) -> Expr:
    """`expr` with each name spelled as the store spells it; UserError names the closest real ones."""
    return _resolve(expr, {name.lower(): name for name in known})


def _resolve(expr: Expr, spelled: dict[str, str]) -> Expr:
    if isinstance(expr, Not):
        return Not(_resolve(expr.operand, spelled))
    if isinstance(expr, And | Or):
        return type(expr)(_resolve(expr.left, spelled), _resolve(expr.right, spelled))
    name = spelled.get(expr.name.lower())
    if name is None:
        raise UserError(_unknown(expr, list(spelled.values())))
    return Term(name, expr.op, expr.value, expr.column)


def _unknown(term: Term, known: list[str]) -> str:
    where = f"unknown attribute {term.name!r} at column {term.column}"
    if not known:
        return f"{where}: this event store has no attribute probabilities yet"
    lowered = {n.lower(): n for n in known}
    close = [lowered[n] for n in difflib.get_close_matches(term.name.lower(), list(lowered), n=3, cutoff=0.5)]
    if not close:
        return f"{where}; the store's attributes are {', '.join(sorted(known))}"
    hint = ""
    if any(set(c) & set(SPECIAL) for c in close):
        hint = ' (quote names that hold any of &|!()<>, like "Skirt&Dress")'
    return f"{where}; did you mean {' or '.join(close)}?{hint}"


def to_sql(expr: Expr) -> tuple[str, list[Any]]:
    """A WHERE condition on `tracks t` and its parameters; values never enter the SQL text."""
    if isinstance(expr, Not):
        sql, params = to_sql(expr.operand)
        return f"NOT {sql}", params
    if isinstance(expr, And | Or):
        left, lp = to_sql(expr.left)
        right, rp = to_sql(expr.right)
        return f"({left} {'AND' if isinstance(expr, And) else 'OR'} {right})", lp + rp
    test = "a.is_on = 1" if expr.op is None else f"a.prob {expr.op} ?"
    params: list[Any] = [expr.name] if expr.op is None else [expr.name, expr.value]
    return (
        f"EXISTS (SELECT 1 FROM track_attributes a WHERE a.track_id = t.id AND a.name = ? AND {test})",
        params,
    )


def matches(expr: Expr, on: Collection[str], probs: Mapping[str, float]) -> bool:
    """Whether a track whose decisions `on` and probabilities `probs` hold satisfies `expr`: the same answer as
    `to_sql`'s condition on the stored track, computed in Python (the demo checks a search against ground
    truth with it; the tests check the SQL against it)."""
    if isinstance(expr, Not):
        return not matches(expr.operand, on, probs)
    if isinstance(expr, And):
        return matches(expr.left, on, probs) and matches(expr.right, on, probs)
    if isinstance(expr, Or):
        return matches(expr.left, on, probs) or matches(expr.right, on, probs)
    if expr.name not in probs:  # no attribute row: no term matches
        return False
    if expr.op is None:
        return expr.name in on
    return _COMPARE[expr.op](probs[expr.name], expr.value)


_COMPARE = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_time(text: str, option: str, now: float | None = None) -> float:
    """Epoch seconds of `text`: ISO 8601 ('2026-12-01 14:00' is local time, '2026-12-01T13:00Z' UTC, a date
    alone its midnight), 'now', or an age ('90s', '30m', '2h', '7d' ago)."""
    now = time.time() if now is None else now
    cleaned = text.strip()
    age = _AGE.fullmatch(cleaned.lower())
    if age:
        return now - float(age[1]) * _UNIT[age[2]]
    if cleaned.lower() == "now":
        return now
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        raise UserError(
            f"{option} {text!r} is not a time: write '2026-12-01 14:00' (local time), '2026-12-01T13:00Z' (UTC), "
            "'now' or an age such as '30m', '2h', '7d'"
        ) from None
    return (moment.astimezone() if moment.tzinfo is None else moment).timestamp()


@dataclass(frozen=True)
class Found:
    tracks: list[StoredTrack]
    total: int  # matches before the limit


def find_tracks(
    conn: sqlite3.Connection,
    query: str | None = None,
    streams: Sequence[str] = (),
    since: float | None = None,
    until: float | None = None,
    limit: int | None = None,
    thumbnails: bool = False,
) -> Found:
    """Tracks seen in [since, until] on any of `streams` (all when empty) that match `query` (all when None)."""
    if since is not None and until is not None and since > until:
        raise UserError("--since is later than --until: nothing can match")
    where, params = ["1"], []
    if query is not None:
        sql, args = to_sql(resolve_names(parse_query(query), attribute_names(conn)))
        where.append(sql)
        params += args
    if streams:
        known = stream_names(conn)
        for name in streams:
            if name not in known:
                raise UserError(
                    f"--stream {name}: no such stream in this store (it has {', '.join(known) or 'none'})"
                )
        where.append(f"s.name IN ({', '.join('?' * len(streams))})")
        params += list(streams)
    if since is not None:
        where.append("t.last_epoch >= ?")
        params.append(since)
    if until is not None:
        where.append("t.first_epoch <= ?")
        params.append(until)
    condition = " AND ".join(where)
    return Found(
        read_tracks(conn, condition, params, limit, thumbnails), count_tracks(conn, condition, params)
    )
