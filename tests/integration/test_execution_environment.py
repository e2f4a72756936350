"""execution-environment.yml: `ansible-builder create` writes a build context with this collection, its Python
requirements and its system packages (no container engine is needed for that; `build` would need one)."""
import json
import os
import shutil
import subprocess
import tarfile

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(ROOT, '.venv', 'bin')


def read(path):
    with open(path) as stream:
        return stream.read()


@pytest.fixture(scope='module')
def context(tmp_path_factory):
    """The EE file with its neighbours as in the repository, the collection tarball built into dist/, and the
    context `ansible-builder create` made from them."""
    if not os.path.exists(os.path.join(VENV_BIN, 'ansible-builder')):
        pytest.skip('ansible-builder is not installed in .venv')
    work = tmp_path_factory.mktemp('ee')
    for name in ('execution-environment.yml', 'requirements.txt', 'bindep.txt'):
        shutil.copy(os.path.join(ROOT, name), str(work / name))
    dist = work / 'dist'
    proc = subprocess.run([os.path.join(VENV_BIN, 'ansible-galaxy'), 'collection', 'build', '--force',
                           '--output-path', str(dist), ROOT], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    built = [n for n in os.listdir(str(dist)) if n.startswith('shadownet-proxmox-') and n.endswith('.tar.gz')]
    assert len(built) == 1, built
    shutil.copy(str(dist / built[0]), str(dist / 'shadownet-proxmox.tar.gz'))
    proc = subprocess.run([os.path.join(VENV_BIN, 'ansible-builder'), 'create', '-f', 'execution-environment.yml',
                           '-c', 'context', '--output-filename', 'Containerfile'],
                          cwd=str(work), capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return work / 'context'


def test_ee_definition_is_v3_with_the_collection_and_its_dependencies():
    definition = yaml.safe_load(read(os.path.join(ROOT, 'execution-environment.yml')))
    assert definition['version'] == 3
    deps = definition['dependencies']
    assert (deps['python'], deps['system']) == ('requirements.txt', 'bindep.txt')
    assert 'ansible-core' in deps['ansible_core']['package_pip']
    assert 'ansible-runner' in deps['ansible_runner']['package_pip']
    # The collection's own EE metadata names the same files, for EEs that pull it from a Galaxy server.
    meta = yaml.safe_load(read(os.path.join(ROOT, 'meta', 'execution-environment.yml')))
    assert meta['dependencies'] == {'python': 'requirements.txt', 'system': 'bindep.txt'}


def test_builder_context_has_the_collection_requirements_and_bindep(context):
    build = context / '_build'
    assert read(str(build / 'requirements.txt')) == read(os.path.join(ROOT, 'requirements.txt'))
    assert read(str(build / 'bindep.txt')) == read(os.path.join(ROOT, 'bindep.txt'))
    galaxy = yaml.safe_load(read(str(build / 'requirements.yml')))
    assert galaxy == {'collections': [{'name': 'collections/shadownet-proxmox.tar.gz', 'type': 'file'}]}
    with tarfile.open(str(build / 'collections' / 'shadownet-proxmox.tar.gz')) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile('MANIFEST.json'))
        ee_meta = yaml.safe_load(tar.extractfile('meta/execution-environment.yml'))
    assert (manifest['collection_info']['namespace'], manifest['collection_info']['name']) == ('shadownet', 'proxmox')
    for member in ('plugins/inventory/pve.py', 'plugins/module_utils/core/inventory.py', 'plugins/module_utils/core/api.py',
                   'meta/runtime.yml', 'requirements.txt', 'bindep.txt'):
        assert member in names, member
    assert not any(n.startswith(('.venv/', '.build/', '.git/')) for n in names)
    assert ee_meta['dependencies']['python'] == 'requirements.txt'
    containerfile = read(str(context / 'Containerfile'))
    # The collection is installed from the copied tarball, the Python and system requirements are gathered
    # (user files plus every collection's introspected ones) and installed in the final image.
    assert 'ansible-galaxy collection install' in containerfile and '-r requirements.yml' in containerfile
    assert 'introspect.py introspect --user-pip=requirements.txt --user-bindep=bindep.txt' in containerfile
    assert 'install-from-bindep' in containerfile
    assert 'ansible-core>=2.19,<2.22' in containerfile and 'ansible-runner>=2.4' in containerfile
    assert 'ENV OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1' in containerfile
