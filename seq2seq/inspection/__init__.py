"""Inspection: what a trained model does with a sentence (context vector, attention, GRU gates) and its output."""

from .output import inspect_command, report_to_dict
from .report import SentenceInspection, SentenceReport, inspect_sentence

__all__ = ["SentenceInspection", "SentenceReport", "inspect_command", "inspect_sentence", "report_to_dict"]
