"""One check-in per presentation: what a frame's reads mean for the patient in front of the station.

A presentation is a card seen in consecutive frames (gaps shorter than `gap_s`). The same card
again within `cooldown_s` of when it was last seen is "already read"; a different card is a new
check-in at once. Pure logic on frame timestamps: no clock, no I/O, easy to test.

Red needs a confirmed read. A text that would be rejected (not a card, or an invalid card) and
that only the decoder's second stage read (agent.decode.SECOND_STAGE: our own Reed-Solomon
reading of sampled, fused or finder-inferred grids) may be a miscorrection of the patient's card
in a glare-hit frame; red for a card tells the patient their card is wrong, and they walk away.
So such a read gives red only once the same text comes again in a later frame of the
presentation (any strategy), or at once when zxing-cpp itself read it (a bank QR held up reads
plainly: its red is not delayed). Until then the frame counts as one with a code located but not
read: nothing shown, and "try again" after `try_again_s` as for any unreadable code, which is
what the patient should do (a tilt moves the glare). A card is never held back (a check-in is
never lost or delayed by this); a miscorrection into a valid card is what the decoder's margins
are for (agent/decode/grid.py).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from datetime import date
from enum import Enum

import numpy as np

from agent.capture.view import View
from agent.cards import CardRead, read_card
from agent.cards.model import NUMBER_FIELD
from agent.decode import Code, DecodeResult

CHECKIN_VERDICTS = ("ok", "expired", "not_yet_valid")


class Action(str, Enum):
    """What a frame means for the patient in front of the station."""
    CHECKIN = "checkin"              # a valid card, new in this cooldown: store it, then green
    ALREADY_READ = "already_read"    # the same card again within the cooldown
    REJECTED = "rejected"            # not a card, or an invalid one: red
    TRY_AGAIN = "try_again"          # a code is visible but unreadable: tilt the phone


@dataclass(frozen=True)
class Decision:
    action: Action
    read: CardRead | None = None
    key: str | None = None
    #: the decoded QR text exactly (what a USB scanner would type)
    payload: str | None = None
    #: TRY_AGAIN: why the code was not read, the reason most frames of the attempt gave
    #: (agent.decode.guidance: closer, glare, dim, still, unknown)
    reason: str | None = None


def card_key(read: CardRead, payload: bytes | str) -> str:
    """The same card, however it was re-rendered: BHYT card number, CCCD id, else the payload hash."""
    field = NUMBER_FIELD.get(read.kind)
    if field and read.card.get(field):
        return f"{read.kind}:{read.card[field]}"
    data = payload.encode("utf-8", "replace") if isinstance(payload, str) else payload
    return "code:" + hashlib.sha256(data).hexdigest()[:16]


class Presenter:
    def __init__(self, cooldown_s: float = 10.0, try_again_s: float = 2.0, gap_s: float = 1.0,
                 try_again_every_s: float = 4.0):
        self.cooldown_s, self.try_again_s, self.gap_s = cooldown_s, try_again_s, gap_s
        self.try_again_every_s = try_again_every_s
        self._last_seen: dict[str, float] = {}
        self._recorded: set[str] = set()         # keys that became a check-in within the cooldown
        self._unreadable_since: float | None = None
        self._last_candidate_t = -1e9
        self._last_try_again = -1e9
        self._reasons: Counter[str] = Counter()   # guidance of the frames since the last TRY_AGAIN
        self._keys: dict[str, str] = {}          # the last frame's codes: text -> card key
        #: would-be reds read by the second stage alone, awaiting a second frame: key -> first seen
        self._unconfirmed: dict[str, float] = {}
        #: where codes given red were last read (sensor pixels): see _out_of_view
        self._places: dict[str, np.ndarray] = {}

    def handled(self, codes: list) -> list[str]:
        """The texts of a frame's codes (those on_frame just saw) that have had their decision
        (checked in, already read, rejected) and are remembered: the capture loop lets go of them
        (an unconfirmed would-be red is not handled yet: the loop may keep it in its crop)."""
        return [c.text for c in codes if self._keys.get(c.text) in self._last_seen]

    def forget(self, key: str) -> None:
        """The check-in could not be stored: the next presentation of this card must try again."""
        self._recorded.discard(key)
        self._last_seen.pop(key, None)

    def on_frame(self, t: float, result: DecodeResult, today: date | None = None,
                 view: View | None = None) -> list[Decision]:
        """What this frame's reads mean. A valid card not checked in yet is a check-in even when
        its key was seen within `gap_s`: that sighting was a red for an invalid read of the same
        card number (a misread date or field), and the presentation must not end without its
        check-in."""
        decisions: list[Decision] = []
        self._expire(t)
        self._keys = {}
        trusted = False                                  # a code of this frame counts as read
        for code in result.codes:
            payload = code.raw or code.text
            read = read_card(payload, today)
            key = card_key(read, payload)
            self._keys[code.text] = key
            if self._unconfirmed_red(t, code, read, key):
                continue                                 # as if located but not read
            trusted = True
            last = self._last_seen.get(key)
            self._last_seen[key] = t
            fresh_card = read.is_card and read.verdict in CHECKIN_VERDICTS and key not in self._recorded
            if last is not None and t - last <= self.gap_s and not fresh_card:
                continue                                 # the same presentation, still in view
            if key in self._recorded:
                decisions.append(Decision(Action.ALREADY_READ, read, key))
            elif read.is_card and read.verdict in CHECKIN_VERDICTS:
                self._recorded.add(key)
                decisions.append(Decision(Action.CHECKIN, read, key, code.text))
            else:
                decisions.append(Decision(Action.REJECTED, read, key))
            if view is not None and not (read.is_card and read.verdict in CHECKIN_VERDICTS):
                self._places[key] = view.to_array(np.asarray(code.corners, np.float64)).mean(0)
        self._out_of_view(t, view)
        if trusted:
            self._unreadable_since = None
            self._reasons.clear()
        elif result.candidates or result.codes:
            self._last_candidate_t = t
            if result.guidance:
                self._reasons[result.guidance] += 1
            if self._unreadable_since is None:
                self._unreadable_since = t
            elif (t - self._unreadable_since >= self.try_again_s
                  and t - self._last_try_again >= self.try_again_every_s):
                self._last_try_again = t
                decisions.append(Decision(Action.TRY_AGAIN, reason=self._reason()))
        elif t - self._last_candidate_t > self.gap_s:
            self._unreadable_since = None
            self._reasons.clear()
        return decisions

    def _unconfirmed_red(self, t: float, code: Code, read: CardRead, key: str) -> bool:
        """True while a red would rest on one second-stage read alone (see the module's docstring):
        not a card, read only by the second stage, not already shown within the cooldown, and not
        the same text as an unconfirmed read of an earlier frame within `gap_s` (that confirms it)."""
        if not code.second_stage or (read.is_card and read.verdict in CHECKIN_VERDICTS):
            return False                    # zxing-cpp read it, or a card to check in: as before
        if key in self._last_seen:
            return False                    # shown (confirmed) within the cooldown: as before
        first = self._unconfirmed.get(key)
        if first is not None and t > first:
            del self._unconfirmed[key]      # a second frame read the same text: confirmed
            return False
        self._unconfirmed[key] = t
        return True

    def _reason(self) -> str:
        """The reason most frames since the last TRY_AGAIN gave (a known one beats `unknown`)."""
        known = [(n, r) for r, n in self._reasons.items() if r != "unknown"]
        reason = max(known)[1] if known else "unknown"
        self._reasons.clear()
        return reason

    def _out_of_view(self, t: float, view: View | None) -> None:
        """A code given red and not read in this frame because the frame's crop leaves its place
        out (the capture loop zoomed onto a patient's phone elsewhere) is taken as still there: a
        sticker on the counter or a bystander's phone is not a new presentation, and not red again,
        each time the crop comes back to the whole field. A code gone from a frame that shows its
        place has left, as before (shown again later: told again)."""
        if view is None:
            return
        x, y, w, h = view.crop
        for key, (cx, cy) in list(self._places.items()):
            if key not in self._last_seen:
                del self._places[key]                    # forgotten after the cooldown
            elif self._last_seen[key] < t and not (x <= cx < x + w and y <= cy < y + h):
                self._last_seen[key] = t

    def _expire(self, t: float) -> None:
        for key, first in list(self._unconfirmed.items()):
            if t - first > self.gap_s:      # no second read within the presentation: forgotten
                del self._unconfirmed[key]
        for key, seen in list(self._last_seen.items()):
            if t - seen > self.cooldown_s:
                del self._last_seen[key]
                self._recorded.discard(key)
