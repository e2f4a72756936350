"""Run a module's main() in-process with real arguments and get its JSON result (for tests)."""
import contextlib
import io
import json

from ansible.module_utils import _internal as module_internal
from ansible.module_utils.common import warnings as module_warnings
from ansible.module_utils.testing import patch_module_args


class ModuleFailed(Exception):
    def __init__(self, result):
        super().__init__(result.get('msg'))
        self.result = result


def run_module(module, args, check_mode=False, diff=True):
    """Call module.main() with ``args``; return the result dict, or raise ModuleFailed with it."""
    args = dict(args)
    args['_ansible_check_mode'] = check_mode
    args['_ansible_diff'] = diff
    # Warnings and deprecations are process-global in ansible-core: start each in-process run clean, as a real
    # module process would.
    for name in ('_global_warnings', '_global_deprecations'):
        store = getattr(module_warnings, name, None)
        if hasattr(store, 'clear'):
            store.clear()
    out = io.StringIO()
    # Once controller code is imported in this process (another test used an action or inventory plugin),
    # ansible-core routes module warnings to the controller's display instead of the result. A module runs
    # in its own process in real life: make this run look like one.
    was_controller = getattr(module_internal, 'is_controller', False)
    module_internal.is_controller = False
    try:
        with patch_module_args(args), contextlib.redirect_stdout(out):
            try:
                module.main()
            except SystemExit:
                pass
    finally:
        module_internal.is_controller = was_controller
    text = out.getvalue()
    result = json.loads(text[text.index('{'):])
    if result.get('failed'):
        raise ModuleFailed(result)
    return result
