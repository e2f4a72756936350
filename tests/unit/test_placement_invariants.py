# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""placement.place() on many random clusters and templates: what must hold whatever the cluster looks like.

test_placement.py pins worked answers; these pin the rules every answer obeys on clusters drawn at random with a
fixed seed (1 to 6 nodes, some offline or in HA maintenance, full or nearly empty, of other sizes; services with and without listed
nodes, shadows, VMs that exist, templates that reach only some nodes): a VM lands on an online node that can hold
it when one exists and otherwise gets an error that says so, a group is spread, a shadow keeps off its primaries'
nodes whenever it can, and the answer does not depend on anything but its inputs.
"""
import copy
import random

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import placement as placement_utils

GiB = 1024 ** 3
CLUSTERS = 300


def _cluster(rnd):
    nodes = []
    for i in range(rnd.randint(1, 6)):
        name = 'pve%d' % (i + 1)
        status = 'online' if rnd.random() < 0.85 else rnd.choice(('offline', 'unknown'))
        item = {'type': 'node', 'node': name, 'status': status}
        hastate = rnd.choice((None, None, 'online', 'online', 'maintenance', 'fence'))
        if hastate:                                              # the CRM's node_status (HA in use)
            item['hastate'] = hastate
        if status == 'online':
            maxmem = rnd.choice((0, 4, 16, 64, 256)) * GiB          # 0: memory not visible to this user
            item.update(maxmem=maxmem, mem=int(maxmem * rnd.uniform(0, 0.95)), maxcpu=rnd.choice((0, 2, 8, 64)),
                        cpu=round(rnd.uniform(0, 1), 2))
        nodes.append(item)
    return placement_utils.node_capacities(nodes, [], ())


def _requests(rnd, names):
    reqs = []
    for s in range(rnd.randint(1, 4)):
        group = 'svc%d' % s
        listed = rnd.sample(names + ['ghost'], rnd.randint(1, len(names))) if rnd.random() < 0.3 else []
        reach = set(rnd.sample(names, rnd.randint(1, len(names)))) if rnd.random() < 0.3 else None
        primaries = []
        for i in range(rnd.randint(1, 5)):
            name = '%s-%d' % (group, i + 1)
            req = dict(name=name, memory=rnd.choice((512, 2048, 8192, 65536)), vcpus=rnd.choice((1, 2, 4, 16)),
                       group=group, listed=list(listed), avoid_vms=[], reach=reach)
            if rnd.random() < 0.2:
                req['node'] = rnd.choice(names)                    # exists already: kept where it is
            reqs.append(req)
            primaries.append(name)
        if rnd.random() < 0.7:
            reqs.append(dict(name=group + '-shadow', memory=rnd.choice((512, 1024)), vcpus=1, group=group + '-shadow',
                             listed=rnd.sample(names, len(names)) if listed else [], avoid_vms=primaries, reach=reach))
    return reqs


def _fits(cap, memory, vcpus):
    free_ok = not (memory and cap['maxmem'] and cap['maxmem'] - cap['committed'] < memory)
    return free_ok and not (vcpus and cap['maxcpu'] and vcpus > cap['maxcpu'])


def test_every_placement_obeys_the_rules():
    placed = errors = shared = drained_seen = 0
    for seed in range(CLUSTERS):
        rnd = random.Random(seed)
        caps = _cluster(rnd)
        names = sorted(caps)
        reqs = _requests(rnd, names)
        inputs = copy.deepcopy((reqs, caps))
        out = placement_utils.place(reqs, caps)
        assert (reqs, caps) == inputs, 'place() changed its inputs'
        assert out == placement_utils.place(*copy.deepcopy(inputs)), 'not deterministic'
        assert set(out) == set(r['name'] for r in reqs)

        # replay the run: what each node had committed when each VM was placed, and the group members so far
        committed = dict((n, c['committed']) for n, c in caps.items())
        where, groups = {}, {}
        for req in reqs:
            res = out[req['name']]
            shown = (seed, req, res)
            assert (res['node'] is None) != (res['error'] is None), shown
            if req.get('node'):
                assert res['node'] == req['node'] and res['error'] is None, shown
                where[req['name']] = req['node']
                groups.setdefault(req['group'], []).append(req['node'])
                continue
            # online, and not in an HA state other than online (maintenance: the CRM is emptying it)
            online = [n for n in names if caps[n]['status'] == 'online' and caps[n]['hastate'] != 'maintenance']
            candidates = [n for n in req['listed'] if n in online] if req['listed'] else [
                n for n in online if req['reach'] is None or n in req['reach']]
            now = dict((n, dict(caps[n], committed=committed[n])) for n in candidates)
            fitting = [n for n in candidates if _fits(now[n], req['memory'], req['vcpus'])]
            avoid = set(where[v] for v in req['avoid_vms'] if v in where)
            if res['error']:
                errors += 1
                assert req['name'] in res['error'], shown
                # no node could hold it, or the listed node it would take is out of the template's reach
                assert not fitting or (req['listed'] and req['reach'] is not None), shown
                continue
            placed += 1
            node = res['node']
            drained_seen += any(caps[n]['status'] == 'online' and n not in online for n in names)
            assert node in fitting, shown                         # online, a candidate, and it can hold the VM
            assert req['reach'] is None or node in req['reach'], shown
            if [n for n in fitting if n not in avoid]:
                assert node not in avoid, shown                   # keeps off its primaries' nodes when it can
            elif node in avoid:
                shared += 1
                assert any('shares node' in w for w in res['warnings']), shown
            if not req['listed']:
                count = dict((n, groups.get(req['group'], []).count(n)) for n in fitting)
                assert count[node] == min(count[n] for n in fitting if (n in avoid) == (node in avoid)), shown
            else:
                order = [n for n in candidates if n not in avoid] + [n for n in candidates if n in avoid]
                assert node == next(n for n in order if n in fitting), shown
                drained = [n for n in req['listed'][:req['listed'].index(node)] if n in caps
                           and caps[n]['status'] == 'online' and n not in online]
                for n in drained:                                 # a listed node skipped for HA is named
                    assert any('listed node {0} is '.format(n) in w for w in res['warnings']), shown
            committed[node] += req['memory']
            where[req['name']] = node
            groups.setdefault(req['group'], []).append(node)
    # the draws reach every outcome: placed, refused, and a shadow that had to share
    assert placed > 300 and errors > 20 and shared > 5, (placed, errors, shared)
    assert drained_seen > 20, drained_seen
