"""cards: a decoded QR text read as a BHYT or CCCD card, with a verdict and problems."""

from agent.cards.model import KINDS, VERDICTS, CardKind, CardRead, Problem
from agent.cards.reader import read_card
from agent.cards.sanitize import mask_name

__all__ = ["KINDS", "VERDICTS", "CardKind", "CardRead", "Problem", "read_card", "mask_name"]
