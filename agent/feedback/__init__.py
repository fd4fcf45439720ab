"""feedback: LED and buzzer signals for the patient and staff (gpiozero), or the console."""

from agent.feedback.patterns import DESCRIPTIONS, PATTERNS, Signal, Step, duration
from agent.feedback.player import ConsoleOutput, Feedback, GpioOutput, NoOutput, make_output

__all__ = ["DESCRIPTIONS", "PATTERNS", "Signal", "Step", "duration", "ConsoleOutput", "Feedback",
           "GpioOutput", "NoOutput", "make_output"]
