"""The bridge: consumes resize jobs from RabbitMQ and invokes the stateless resize function.

``python -m bridge`` runs it (see ``bridge.main``). ``bridge.consumer`` holds the consumer,
``bridge.invokers`` the ways to run a job (a local process pool, or Lambda Invoke), and
``bridge.settle`` the rules for what a result does to its message.
"""
