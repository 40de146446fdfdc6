"""Typed errors: every user mistake maps to one class and one actionable line.

The CLI turns any :class:`FastMTPError` into ``error: <message>`` on stderr and exit
code 1 (traceback only with ``FASTMTP_DEBUG=1``), so messages must name what was
found, what was expected and how to fix it.
"""

from __future__ import annotations


class FastMTPError(Exception):
    """Base class for every error the tool reports to users without a traceback."""


class SourceError(FastMTPError):
    """The source checkpoint is missing, unreadable or not an MTP checkpoint we support."""


class CorruptShardError(SourceError):
    """A safetensors shard is truncated or has an unreadable header."""


class ShapeMismatchError(SourceError):
    """A tensor's shape disagrees with what ``config.json`` implies."""


class ContractError(FastMTPError):
    """The draft's tensor set differs from what SGLang's MTP loader consumes.

    SGLang skips unknown weight names silently, so this is the only place such a
    mistake can surface before serving.
    """


class OutputError(FastMTPError):
    """The output location cannot be written (exists, not writable, disk full)."""


class ArtifactError(FastMTPError):
    """An exported artifact fails validation (missing file, hash or key mismatch)."""


class TokenMapError(FastMTPError):
    """A hot-token map is malformed (duplicates, out-of-vocab ids, missing EOS, size)."""


class CorpusError(FastMTPError):
    """A corpus file or record is unusable (bad JSON, no text, unknown language)."""


class TokenizerError(FastMTPError):
    """The ``--tokenizer`` path is not a usable Hugging Face fast tokenizer."""


class EvalError(FastMTPError):
    """``eval`` cannot run: mismatched base and artifact, bad prompts, unknown language."""


class HubError(FastMTPError):
    """The Hub refused or could not be reached; nothing was published."""


class TrainError(FastMTPError):
    """Bad training data or options, or a resume that does not match its run."""
