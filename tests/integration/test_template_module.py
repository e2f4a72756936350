# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""shadownet.proxmox.template through ansible-playbook on localhost: the happy path with the lab template
rendered with Jinja2 variables, and malformed templates reported with their field paths."""
import json
import os
import sys

import jinja2
import yaml

from ansible_collections.shadownet.proxmox.plugins.module_utils.build import plan as plan_utils
from lab.playbook import ROOT, run_ansible

LAB = os.path.join(ROOT, 'inventories', 'lab', 'templates', 'shop.yml.j2')


def run_playbook(tmp_path, tasks, *extra):
    play = [{'hosts': 'localhost', 'gather_facts': False, 'tasks': tasks}]
    book = tmp_path / 'play.yml'
    book.write_text(yaml.safe_dump(play, sort_keys=False))
    return run_ansible('ansible-playbook', [book, '-e', 'ansible_python_interpreter=%s' % sys.executable] + list(extra),
                       cwd=str(tmp_path), env=dict(ANSIBLE_HOME=tmp_path / '.ansible'))


def save(var, path):
    return {'ansible.builtin.copy': {'content': '{{ %s | to_json }}' % var, 'dest': str(path)}}


def lab_plan(**variables):
    with open(LAB) as handle:
        data = yaml.safe_load(jinja2.Environment().from_string(handle.read()).render(**variables))
    return plan_utils.plan_from_template(data)


def test_lab_template_with_jinja2_variables(tmp_path):
    out = tmp_path / 'out.json'
    tasks = [
        {'name': 'plan', 'shadownet.proxmox.template': {'templates': [LAB], 'vars': {'shop_env': 'staging'}},
         'register': 'sn'},
        save('sn', out),
    ]
    proc = run_playbook(tmp_path, tasks, '-e', 'shop_web_instances=3')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result['changed'] is False
    assert result['names'] == ['shop-staging']
    plan = result['plans']['shop-staging']
    names = [vm['name'] for vm in plan['vms']]
    assert names[:4] == ['shop-staging-web-1', 'shop-staging-web-2', 'shop-staging-web-3',
                         'shop-staging-web-shadow']
    # the plugin returns exactly what the pure code computes for the same rendered template
    tpl, expected = lab_plan(shop_env='staging', shop_web_instances=3)
    assert plan == json.loads(json.dumps(expected))
    assert result['templates']['shop-staging'] == json.loads(json.dumps(tpl))


def test_check_mode_and_shadownet_templates_variable(tmp_path):
    out = tmp_path / 'out.json'
    inline = {'name': 'tiny', 'nodes': ['pve1', 'pve2'],
              'networks': [{'name': 'net', 'cidr': '10.50.0.0/24', 'gateway': '10.50.0.1'}],
              'services': [{'name': 'app', 'template': 9000, 'instances': 2, 'vip': '10.50.0.10',
                            'critical': True}],
              'shadow': {'replication': {'fidelity': 'full', 'interval': '1h'}}}
    extra = tmp_path / 'vars.json'
    extra.write_text(json.dumps({'shadownet_templates': [LAB, inline]}))
    tasks = [{'shadownet.proxmox.template': None, 'register': 'sn'},
             {'ansible.builtin.copy': {'content': '{{ sn | to_json }}', 'dest': str(out)}, 'check_mode': False}]
    proc = run_playbook(tmp_path, tasks, '--check', '-e', '@%s' % extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result['names'] == ['shop', 'tiny']
    assert result['plans']['shop'] == json.loads(json.dumps(lab_plan()[1]))
    tiny = result['plans']['tiny']
    # two nodes, two primaries: the shadow cannot avoid both, and the plan says so
    assert tiny['warnings'] and any('tiny-app-shadow' in w for w in result.get('warnings', []))


BAD_TEMPLATES = {
    # file name: (template text, expected (template, path) pairs)
    'a.yml': ("""
name: alpha
nodes: [pve1, pve1]
networks:
  - {name: front, cidr: 10.10.0.0/24, gateway: 10.11.0.1}
  - {name: back, cidr: 10.10.0.128/25}
services:
  - {name: web, template: 9000, instances: 0, vip: 10.99.0.5, networks: [front], critical: true, colour: red}
  - {name: db, template: 42, networks: [nowhere], memory: 128M}
shadow:
  size: 0
  mirror: {rate: 1.5}
  replication: {fidelity: differential, interval: 10s}
scaling:
  cpu: {high: 0.3, low: 0.6}
  instances: {min: 5, max: 2}
  mode: diagonal
  horizon: soon
""", [('alpha', 'nodes[1]'), ('alpha', 'networks[0].gateway'), ('alpha', 'networks[1].cidr'),
      ('alpha', 'services[0].instances'), ('alpha', 'services[0].vip'), ('alpha', 'services[0].colour'),
      ('alpha', 'services[1].template'), ('alpha', 'services[1].networks[0]'), ('alpha', 'services[1].memory'),
      ('alpha', 'shadow.size'), ('alpha', 'shadow.mirror.rate'), ('alpha', 'shadow.replication.interval'),
      ('alpha', 'shadow.replication.paths'), ('alpha', 'scaling.cpu.low'), ('alpha', 'scaling.instances.min'),
      ('alpha', 'scaling.mode'), ('alpha', 'scaling.horizon')]),
    'b.yml.j2': ("""
name: {{ bad_name | default('Beta_1') }}
networks:
  - {name: net, cidr: 10.20.0.1/24, zone: beta-zone-1}
services:
  - {name: shadow, template: 9000}
""", [('b.yml.j2', 'name'), ('b.yml.j2', 'networks[0].cidr'), ('b.yml.j2', 'networks[0].zone'),
      ('b.yml.j2', 'services[0].name')]),
}


def test_malformed_templates_are_reported_with_their_paths(tmp_path):
    paths = []
    for name, (text, dummy) in BAD_TEMPLATES.items():
        (tmp_path / name).write_text(text)
        paths.append(name)
    out = tmp_path / 'out.json'
    tasks = [
        {'shadownet.proxmox.template': {'templates': paths + ['missing.yml', 'undefined.yml.j2', [1, 2]]},
         'register': 'bad', 'ignore_errors': True},
        save('bad', out),
        {'name': 'the same templates without ignore_errors fail the play',
         'shadownet.proxmox.template': {'templates': paths}},
    ]
    (tmp_path / 'undefined.yml.j2').write_text('name: {{ no_such_variable }}\n')
    proc = run_playbook(tmp_path, tasks)
    assert proc.returncode != 0
    result = json.loads(out.read_text())
    assert result['failed'] is True and 'plans' not in result
    got = {(e['template'], e['path']) for e in result['errors']}
    for name, (dummy, expected) in BAD_TEMPLATES.items():
        for pair in expected:
            assert pair in got, '%s not reported; got %s' % (pair, sorted(got))
    assert len({p for t, p in got if t == 'alpha'}) >= 10
    # every error says what would be valid (except I/O problems) and msg lists all of them
    assert all(e['valid'] for e in result['errors'])
    for error in result['errors']:
        assert error['path'] in result['msg'] and error['template'] in result['msg']
    assert any(e['template'] == 'missing.yml' and 'not found' in e['message'] for e in result['errors'])
    assert any(e['template'] == 'undefined.yml.j2' and 'Jinja2' in e['message'] for e in result['errors'])
    assert any(e['template'] == 'templates[4]' for e in result['errors'])
    gateway = next(e for e in result['errors'] if e['path'] == 'networks[0].gateway')
    assert '10.10.0.0/24' in gateway['valid']
    assert 'services[0].vip' in proc.stdout and 'template alpha' in proc.stdout


def test_duplicate_template_names(tmp_path):
    out = tmp_path / 'out.json'
    tasks = [{'shadownet.proxmox.template': {'templates': [LAB, LAB]}, 'register': 'dup', 'ignore_errors': True},
             save('dup', out)]
    proc = run_playbook(tmp_path, tasks)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert [(e['template'], e['path']) for e in result['errors']] == [('shop', 'name')]
