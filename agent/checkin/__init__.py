"""checkin: turn reads into check-ins, one per presentation."""

from agent.checkin.presentation import CHECKIN_VERDICTS, Action, Decision, Presenter, card_key
from agent.event import checkin_body

__all__ = ["CHECKIN_VERDICTS", "Action", "Decision", "Presenter", "card_key", "checkin_body"]
