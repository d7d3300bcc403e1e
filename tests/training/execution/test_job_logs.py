"""A job's log lines in the registry: written by the training process's handler, tagged with its
attempt, read back in pages by their id. On SQLite and on PostgreSQL."""

import logging

from tests.factories import tiny_spec
from training.execution import jobs
from training.execution.job_logs import JobLogHandler, read_logs
from training.store.db import SessionFactory, in_transaction
from training.store.models import MAX_INTEGER_ID


def test_lines_are_kept_with_their_attempt_and_read_in_pages(factory: SessionFactory) -> None:
    job_id = in_transaction(factory, lambda s: jobs.enqueue(s, tiny_spec("toy")).id)
    logger = logging.getLogger("tests.job_logs")
    logger.setLevel(logging.INFO)
    handler = JobLogHandler(factory, job_id, attempt=2)
    logger.addHandler(handler)
    try:
        for epoch in (1, 2, 3):
            logger.info("epoch %d", epoch)
        logger.debug("not a line: below INFO")
    finally:
        logger.removeHandler(handler)
        handler.close()  # the last lines are written on close

    with factory() as session:
        first = read_logs(session, job_id, 0, 2)
        rest = read_logs(session, job_id, first[-1].id, 10)
    assert [(row.message, row.attempt) for row in first + rest] == [("epoch 1", 2), ("epoch 2", 2), ("epoch 3", 2)]


def test_the_largest_cursor_the_api_takes_reads_nothing(factory: SessionFactory) -> None:
    """GET /jobs/{id}/logs accepts `since` up to MAX_INTEGER_ID; past the column's range, PostgreSQL
    refused the comparison (a 500 that schemathesis found with since=2**62-1)."""
    job_id = in_transaction(factory, lambda s: jobs.enqueue(s, tiny_spec("toy")).id)
    with factory() as session:
        assert read_logs(session, job_id, MAX_INTEGER_ID, 10) == []
