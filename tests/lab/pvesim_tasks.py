"""Task records the simulator writes itself where fakepve's task runner cannot end a task the way PVE does.

pve-common PVE/RESTEnvironment.pm fork_worker ends a worker's log with "TASK OK", "TASK WARNINGS: n" (when it counted
warnings: log_warn) or "TASK ERROR: <message>", and the task's exitstatus is OK, "WARNINGS: n" or the message.
"""
import asyncio
import time

__all__ = ['new_task', 'finish_task', 'launch']


def new_task(pve, node, ttype, tid, user, log=()):
    """(upid, record) of a running task, registered where fakepve keeps its own."""
    upid, pid, start = pve._upid(node, ttype, tid, user)
    record = {'upid': upid, 'node': node, 'pid': pid, 'pstart': pid * 7, 'starttime': start,
              'type': ttype, 'id': str(tid), 'user': user, 'status': 'running', 'log': list(log)}
    pve.tasks[upid] = record
    pve.tasklog.append(record)
    return upid, record


def finish_task(record, error=None, warned=0):
    """End the task: with ``error`` (its message) it failed, else it is OK or, with ``warned``, WARNINGS."""
    if error is not None:
        status, last = error, 'TASK ERROR: ' + error
    else:
        status = 'WARNINGS: {0}'.format(warned) if warned else 'OK'
        last = 'TASK ' + status
    record.update(status='stopped', exitstatus=status, endtime=int(time.time()))
    record['log'].append(last)


async def launch(pve, run):
    """Run the task's coroutine now (time scale 0) or in the background, as fakepve does."""
    if pve.time_scale:
        asyncio.ensure_future(run())
    else:
        await run()
