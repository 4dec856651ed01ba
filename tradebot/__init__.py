"""The application: the command line (:mod:`tradebot.cli`), the control client
and the composition root (:mod:`tradebot.wiring`) that builds the actor tree.
The top layer: it may import every other package; none imports it.
"""
