"""The kernel every other package builds on; it imports nothing of ours.

- :mod:`core.config` - the typed, validated configuration (``load_config``, ``Config``).
- :mod:`core.clock` - injected time (``RealClock``, ``VirtualClock``).
- :mod:`core.events` - the event record (``Event``, ``Severity``).
- :mod:`core.messages` - the runtime's message vocabulary (``Message`` and the supervisor's commands/events).
- :mod:`core.ids` - identities written once: ``Side``, client order ids, actor names.
- :mod:`core.grid` - prices on the tick grid (``to_grid``, ``stop_on_grid``: stops rounded away from the market).
- :mod:`core.signal_protocol`, :mod:`core.control_protocol` - the two wire protocols.
- :mod:`core.logs` - per-actor log routing.

Layers point one way: ``core`` <- ``adapters`` <- ``supervision`` <- ``actors`` <- ``tradebot``.
"""
