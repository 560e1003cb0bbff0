"""The one exception type for mistakes a user can fix (bad path, bad option, corrupt data)."""


class UserError(Exception):
    """Raised for input errors; the CLI prints its message on one line and exits non-zero."""
