"""The exit code of each canny error, in one table (the library's errors carry none).

::

    0 ok (a max_tokens stop is 0 with a warning)   5 refused by the model
    1 unexpected error, ledger error               6 interrupted after partial output
    2 bad usage or configuration                   7 transient failure outlasted retries
    3 authentication or permission                 8 request rejected by the API
    4 budget exceeded / org spend limit reached    9 ledger unavailable: nothing was sent;
                                                     ``canny reconcile``: drift over tolerance
    129 / 130 / 143 stopped by SIGHUP / SIGINT (Ctrl-C) / SIGTERM
    141 standard output closed (``canny ... | head``: :data:`EXIT_STDOUT_CLOSED`)

The most specific class wins: :func:`exit_code_for` walks the error's MRO and takes the
first class the table names, so a new subclass inherits its parent's code.
"""

from __future__ import annotations

from collections.abc import Mapping

from canny import errors

__all__ = ["EXIT_CODES", "EXIT_STDOUT_CLOSED", "exit_code_for"]

#: ``canny ... | head``: the reader closed standard output (128 + SIGPIPE, as a shell reports it).
EXIT_STDOUT_CLOSED = 141

EXIT_CODES: Mapping[type[BaseException], int] = {
    errors.CannyError: 1,
    errors.ConfigError: 2,
    errors.AuthenticationError: 3,
    errors.BudgetExceeded: 4,
    errors.SpendLimitReached: 4,
    errors.Refused: 5,
    errors.StreamInterrupted: 6,
    errors.TransientError: 7,
    errors.RequestRejected: 8,
    errors.LedgerError: 1,
    errors.LedgerUnavailable: 9,
    errors.DriftExceeded: 9,
}


def exit_code_for(error: BaseException) -> int:
    """The exit code of ``error``: that of the most specific class in :data:`EXIT_CODES`
    (1 for anything the table does not name)."""
    for cls in type(error).__mro__:
        code = EXIT_CODES.get(cls)
        if code is not None:
            return code
    return 1
