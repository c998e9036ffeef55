"""Errors with a message meant for the user; the CLI prints them without a traceback."""


class LangsegError(Exception):
    """Base class of every error whose message names the problem (file, label, key)."""


class LabelError(LangsegError, ValueError):
    """A label list that cannot be encoded (empty, blank, duplicate or too long for the tokenizer)."""
