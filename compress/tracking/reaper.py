"""Runs whose process died (SIGKILL, an OOM kill, `scancel`, a lost node) marked KILLED.

A process killed outright cannot close its run, so every compress command that opens a
store looks, in one search, for RUNNING runs opened on this host (`compress.process` tags)
and ends those whose process is gone, with a tag saying why. Runs of other hosts, of
another pid namespace, or of older versions (no tags) are left alone: no pid of theirs can
be checked from here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from compress.tracking.process import HOST_TAG, Owner

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

REAPED_TAG = "compress.reaped"


def _pages(search: Any) -> Iterator[Any]:
    token = None
    while True:
        page = search(token)
        yield from page
        token = page.token
        if not token:
            return


def orphaned_runs(client: MlflowClient, me: Owner) -> Iterator[tuple[Any, Owner]]:
    """RUNNING runs of this host and pid namespace whose process is gone, with their owner."""
    experiments = [
        e.experiment_id for e in _pages(lambda token: client.search_experiments(page_token=token))
    ]
    if not experiments:
        return
    where = f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{me.host}'"
    for run in _pages(lambda token: client.search_runs(experiments, where, page_token=token)):
        owner = Owner.from_tags(run.data.tags)
        if owner is None or owner.namespace != me.namespace:
            continue
        if owner.is_gone():
            yield run, owner


def reap(client: MlflowClient) -> list[str]:
    """End as KILLED the runs of this host whose process died; their ids. Every step may
    be done twice (two commands reaping at once; a retry after a lock refusal): same end."""
    me = Owner.current()
    reaped = []
    for run, owner in orphaned_runs(client, me):
        run_id = run.info.run_id
        why = f"process {owner.pid} on {owner.host} died without ending the run"
        note = f"{why} (seen by pid {me.pid})"
        client.set_tag(run_id, REAPED_TAG, note)
        client.set_terminated(run_id, status="KILLED")
        log.info("mlflow: run %s marked KILLED: %s", run_id, why)
        reaped.append(run_id)
    return reaped
