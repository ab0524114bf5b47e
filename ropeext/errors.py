"""The one exception type the CLI turns into a clean message instead of a traceback."""


class RopeextError(Exception):
    """A problem with the user's input (file, key, value) that the user can fix.

    The message names what was wrong and what was expected. ``ropeext`` prints it as
    ``error: <message>`` and exits with status 2.
    """


class Terminated(BaseException):
    """The process was asked to stop (SIGTERM from Snakemake, SLURM's scancel, torch's launcher).

    ``python -m ropeext.cli`` raises it from its SIGTERM handler, so that open MLflow runs end as
    KILLED and ``finally`` blocks run; a BaseException, so that no ``except Exception`` swallows it.
    """
