# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for shadownet.proxmox.template: read and render template files on the controller, then
validate and plan them with the pure module_utils. No connection to the target, no PVE API call."""


import os

import yaml

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase
from ansible.template import trust_as_template  # ansible-core >= 2.19 (data tagging; meta/runtime.yml)

from ansible_collections.shadownet.proxmox.plugins.module_utils.build.plan import failure_result, plan_templates
from ansible_collections.shadownet.proxmox.plugins.module_utils.build.template import TemplateIssue

ARGUMENT_SPEC = dict(
    templates=dict(type='list', elements='raw'),
    vars=dict(type='dict', default={}),
    fail_on_warnings=dict(type='bool', default=False),
)


def _plain(value):
    """Builtin types only (YAML from safe_load already is; inline dicts may carry Ansible's tagged types)."""
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return value


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp

        validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        entries = args.get('templates')
        if entries is None:
            if 'shadownet_templates' not in task_vars:
                result.update(failed=True, msg='no templates: set the templates option or the variable '
                                               'shadownet_templates (a list of template files or dicts)')
                return result
            entries = self._templar.template(task_vars['shadownet_templates'])
        if not isinstance(entries, (list, tuple)):
            result.update(failed=True, msg='templates must be a list of template files or dicts, got %s'
                                           % type(entries).__name__)
            return result

        loaded, issues = [], []
        for index, entry in enumerate(entries):
            label = 'templates[%d]' % index
            if isinstance(entry, dict):
                loaded.append((_plain(entry), label))
            elif isinstance(entry, str):
                data, issue = self._load_file(entry, label, task_vars, args['vars'])
                if issue is not None:
                    issues.append(issue)
                else:
                    loaded.append((data, entry))
            else:
                issues.append(TemplateIssue(label, '', 'is a %s' % type(entry).__name__,
                                            'a path to a .yml / .yml.j2 template file, or a template dict'))

        planned, found = plan_templates(loaded, args['fail_on_warnings'])
        issues.extend(found)
        if issues:
            result.update(failure_result(planned, issues))
            return result
        result.update(planned)
        return result

    def _load_file(self, path, label, task_vars, extra_vars):
        """Find, render (Jinja2 with the play's variables) and parse one template file: (data, issue)."""
        try:
            source = self._find_needle('templates', path)
        except AnsibleError as exc:
            return None, TemplateIssue(path, '', 'template file not found: %s' % to_text(exc).split('\n')[0],
                                       'a path relative to the playbook, a role\'s templates/ or absolute')
        try:
            text = self._loader.get_text_file_contents(source)
        except (OSError, AnsibleError) as exc:
            return None, TemplateIssue(path, '', 'cannot read %s: %s' % (source, to_text(exc)), None)

        variables = dict(task_vars)
        variables.update(extra_vars or {})
        searchpath = [os.path.dirname(source)] + list(task_vars.get('ansible_search_path', []))
        templar = self._templar.copy_with_new_env(searchpath=searchpath, available_variables=variables)
        try:
            rendered = templar.template(trust_as_template(text), escape_backslashes=False)
        except AnsibleError as exc:
            return None, TemplateIssue(path, '', 'Jinja2 rendering failed: %s' % to_text(exc).split('\n')[0],
                                       'a template whose variables are defined (or have | default())')
        try:
            data = yaml.safe_load(to_text(rendered))
        except yaml.YAMLError as exc:
            return None, TemplateIssue(path, '', 'not valid YAML after rendering: %s'
                                       % to_text(exc).replace('\n', ' '), 'a YAML mapping')
        if not isinstance(data, dict):
            return None, TemplateIssue(path, '', 'is not a YAML mapping after rendering (got %s)'
                                       % type(data).__name__, 'a YAML mapping with name, networks, services ...')
        return data, None
