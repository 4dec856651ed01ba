"""I/O at the edge: everything that talks to the outside world lives here.

The I/O loop (:mod:`adapters.io_loop`), the event store, the control socket,
markets, error translation (:mod:`adapters.errors`: venue and network errors
only), the executor with its request budget, the venue layer (:mod:`adapters.venue`)
over ccxt or the paper exchange (:mod:`adapters.paper`), streams, and the signal
client/server. Imports only :mod:`core`.
"""
