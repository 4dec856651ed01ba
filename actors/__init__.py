"""The trading actors and their pure rules.

Actors: ``PositionActor`` (one per position, the only owner of its orders),
``PriceFeed``, ``SyncActor``, ``GuardActor``, ``SignalIntake``, ``DemoIntake``.
Rules (pure functions, no I/O): :mod:`actors.trailing` and the position planners.
Imports :mod:`core`, :mod:`adapters` and :mod:`supervision`.
"""
