"""A search over an event store, checked against a clip's ground truth (`street_clip.render_clip`'s JSON).

Why: `partool search` answers with tracks, and whether they are the right people can only be told where
the people are known. The query is evaluated twice, independently: by SQLite over what the pipeline stored
(`find_tracks`), and in Python over each true person's attributes (`query.matches`). Each returned track
is mapped to the person it followed (`scoring.track_people`), so the answer gets a precision (returned
tracks that follow a person the query holds for) and a recall (such people that at least one returned
track follows).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from partool.video.event_store import StoredTrack
from partool.video.query import SPECIAL, matches, parse_query, resolve_names


@dataclass(frozen=True)
class ReturnedTrack:
    id: int  # row in the store
    track: int  # the tracker's id
    first_frame: int
    last_frame: int
    attributes: list[str]  # its final smoothed decisions, as stored
    person: int | None  # the true person it followed; None when it followed nobody
    person_matches: bool  # the query holds for that person's true attributes


@dataclass(frozen=True)
class SearchCheck:
    query: str
    people: int  # people in the clip
    expected: list[int]  # people whose true attributes satisfy the query
    returned: list[ReturnedTrack]
    found: list[int]  # expected people followed by at least one returned track
    missed: list[int]  # expected people no returned track follows
    precision: float | None  # returned tracks whose person is expected; None when nothing is returned
    recall: float | None  # expected people found; None when nobody is expected

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quoted(name: str) -> str:
    """`name` as a query term: in double quotes when it holds one of the query's operators."""
    return f'"{name}"' if any(ch in SPECIAL for ch in name) else name


def true_people(truth: dict[str, Any]) -> dict[int, dict[str, float]]:
    """Each person's true attributes, as probabilities of 0 or 1."""
    return {
        int(person): {name: float(bool(on)) for name, on in track["attributes"].items()}
        for person, track in truth["tracks"].items()
    }


def pick_query(
    truth: dict[str, Any], attributes: Sequence[str], reliability: Mapping[str, float] | None = None
) -> str:
    """A query with a non-trivial answer in this clip, chosen without looking at what the pipeline output.

    Candidates are the pairs `A & B` that hold for at least one person and at most half of them (in
    `attributes`' order), then the single attributes that do. Without `reliability` the first candidate
    wins; with it (e.g. each attribute's test-split mA) the candidate whose least reliable attribute is the
    most reliable, as a user would search on what the model is known to see. When nothing fits, the
    first attribute.
    """
    people = list(true_people(truth).values())
    most = max(1, len(people) // 2)

    def fits(names: Sequence[str]) -> bool:
        return 1 <= sum(all(p.get(n, 0.0) == 1.0 for n in names) for p in people) <= most

    pairs = [(a, b) for i, a in enumerate(attributes) for b in attributes[i + 1 :]]
    for group in (pairs, [(a,) for a in attributes]):
        candidates = [names for names in group if fits(names)]
        if not candidates:
            continue
        if reliability is not None:  # max keeps the first of equals
            candidates = [max(candidates, key=lambda names: min(reliability.get(n, 0.0) for n in names))]
        return " & ".join(quoted(n) for n in candidates[0])
    return quoted(attributes[0])


def check_search(
    query: str, tracks: Sequence[StoredTrack], truth: dict[str, Any], track_people: dict[int, int]
) -> SearchCheck:
    """Score `tracks`, the store's answer to `query` (`find_tracks`), against `truth`.

    `track_people` maps the pipeline's track ids to the true people they followed.
    """
    people = true_people(truth)
    names = sorted({name for attrs in people.values() for name in attrs})
    expr = resolve_names(parse_query(query), names)
    expected = sorted(p for p, probs in people.items() if matches(expr, _on(probs), probs))
    returned = []
    for t in tracks:
        person = track_people.get(t.track)
        hit = person is not None and person in expected
        returned.append(ReturnedTrack(t.id, t.track, t.first_frame, t.last_frame, t.attributes, person, hit))
    found = sorted({r.person for r in returned if r.person is not None and r.person_matches})
    return SearchCheck(
        query=query,
        people=len(people),
        expected=expected,
        returned=returned,
        found=found,
        missed=[p for p in expected if p not in found],
        precision=sum(r.person_matches for r in returned) / len(returned) if returned else None,
        recall=len(found) / len(expected) if expected else None,
    )


def _on(probs: dict[str, float]) -> set[str]:
    return {name for name, p in probs.items() if p == 1.0}
