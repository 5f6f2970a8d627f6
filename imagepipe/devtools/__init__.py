"""Developer tooling: render configs, vendor the core, run the local stack and the demo.

Not part of the deployed functions (``make vendor`` leaves this package out).
"""
