"""The bridge: consumes resize jobs from RabbitMQ and invokes the stateless resize function.

``python -m bridge`` runs it (see ``bridge.main``). ``bridge.loop`` is the reconnecting consumer
loop that all of its consumers use: ``bridge.consumer`` (resize jobs, from the work queue and
the rerender queue) and ``bridge.callbacks`` (completion callbacks). ``bridge.invokers`` holds
the ways to run a job (a local process pool, or Lambda Invoke), ``bridge.slots`` how the two
job consumers share its workers, and ``bridge.settle`` the rules for what a result does to its
message.
"""
