"""How ``PipelinedPublisher`` maps the broker's acks and nacks (single or ``multiple``) to the
callbacks of the publishes they answer."""

from __future__ import annotations

import pika.frame
import pika.spec

from bridge.confirms import PipelinedPublisher


def _publisher_with_pending(count: int) -> tuple[PipelinedPublisher, list]:
    publisher = object.__new__(PipelinedPublisher)  # no channel: only the bookkeeping is tested
    answers: list[tuple[int, bool]] = []
    publisher._pending = {
        tag: (lambda ok, tag=tag: answers.append((tag, ok))) for tag in range(1, count + 1)
    }
    return publisher, answers


def _frame(method) -> pika.frame.Method:
    return pika.frame.Method(1, method)


def test_multiple_ack_answers_every_publish_up_to_its_tag_in_order():
    publisher, answers = _publisher_with_pending(5)
    publisher._on_confirm(_frame(pika.spec.Basic.Ack(delivery_tag=3, multiple=True)))
    assert answers == [(1, True), (2, True), (3, True)]
    assert publisher.unconfirmed == 2


def test_a_nack_answers_false_and_only_its_own_publish():
    publisher, answers = _publisher_with_pending(3)
    publisher._on_confirm(_frame(pika.spec.Basic.Nack(delivery_tag=2, multiple=False)))
    publisher._on_confirm(_frame(pika.spec.Basic.Nack(delivery_tag=3, multiple=True)))
    assert answers == [(2, False), (1, False), (3, False)]
    assert publisher.unconfirmed == 0


def test_an_answer_for_an_unknown_or_repeated_tag_calls_nothing():
    publisher, answers = _publisher_with_pending(1)
    publisher._on_confirm(_frame(pika.spec.Basic.Ack(delivery_tag=1)))
    publisher._on_confirm(_frame(pika.spec.Basic.Ack(delivery_tag=1)))
    publisher._on_confirm(_frame(pika.spec.Basic.Ack(delivery_tag=9)))
    assert answers == [(1, True)]
