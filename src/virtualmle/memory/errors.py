"""Errors of the memory layer (all are `VirtualMLEError`s: the CLI prints one line, exit 2)."""

from __future__ import annotations

from virtualmle.errors import VirtualMLEError


class MemoryBankError(VirtualMLEError):
    """A memory bank directory or file that cannot be read or written, or a bad name."""


class SchemaVersionError(MemoryBankError):
    """A bank file written by a newer virtualmle (its schema_version is above ours)."""


class InsightOpError(MemoryBankError):
    """An insight operation that cannot be applied (e.g. it names an insight id that does not exist)."""


class MarkdownFormatError(MemoryBankError):
    """An edited Markdown export that does not parse; the message names the line."""
