"""The actor runtime: ``ManagedActor`` (timers, I/O calls, events, logs), the
``Supervisor`` (one-for-one restarts, restart intensity, control commands) and
the ``Runtime`` that starts and stops the whole tree. Imports :mod:`core` and
:mod:`adapters`; knows nothing of trading.
"""
