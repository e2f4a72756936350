# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark helper: write the wall time of every task (and of every loop item) as JSON lines.

Enabled by the benchmark scripts with ANSIBLE_CALLBACK_PLUGINS=<this dir>, ANSIBLE_CALLBACKS_ENABLED=bench_task_times
and BENCH_TASK_TIMES=<output file>. Not part of the collection.
"""
from __future__ import annotations

DOCUMENTATION = '''
name: bench_task_times
type: aggregate
short_description: task wall times for the benchmarks
description: Appends one JSON line per finished task to the file named by BENCH_TASK_TIMES.
requirements: [enable in configuration]
'''

import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'bench_task_times'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._path = os.environ.get('BENCH_TASK_TIMES')
        self._task = None
        self._start = None
        self._items = 0
        self._t0 = time.perf_counter()

    def _flush(self):
        if self._task is not None and self._path:
            with open(self._path, 'a') as fh:
                fh.write(json.dumps({'task': self._task, 'seconds': round(time.perf_counter() - self._start, 3),
                                     'items': self._items}) + '\n')
        self._task = None

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._flush()
        self._task = task.get_name()
        self._start = time.perf_counter()
        self._items = 0

    def v2_runner_item_on_ok(self, result):
        self._items += 1

    v2_runner_item_on_skipped = v2_runner_item_on_ok

    def _failure(self, result, item=None):
        if not self._path:
            return
        res = result._result
        with open(self._path, 'a') as fh:
            fh.write(json.dumps({'failed': self._task, 'item': item,
                                 'msg': str(res.get('msg') or res.get('exception') or res)[:2000]}) + '\n')

    def v2_runner_item_on_failed(self, result):
        self._items += 1
        label = result._result.get('_ansible_item_label', result._result.get('item'))
        self._failure(result, item=str(label)[:200])

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if 'results' not in result._result:
            self._failure(result)

    def v2_playbook_on_stats(self, stats):
        self._flush()
        if self._path:
            with open(self._path, 'a') as fh:
                fh.write(json.dumps({'task': '(playbook total, from callback load)',
                                     'seconds': round(time.perf_counter() - self._t0, 3), 'items': 0}) + '\n')
